"""scripts/judge_curves.py: curve points against examples seen, final evals, a plot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "judge_curves.py"


def _module():
    spec = importlib.util.spec_from_file_location("judge_curves", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_curves_against_examples_seen(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.yaml").write_text(
        yaml.safe_dump({"method": "tract", "batch_size": 8, "eval_split": "validation"})
    )
    rows = [
        {"step": 1, "loss": 1.0},
        {"step": 5, "eval/pearson": 0.25, "eval/check_accuracy": 0.5},
        {"step": 10, "eval/pearson": 0.75},
    ]
    (run / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ev = tmp_path / "ev"
    ev.mkdir()
    metrics = {"n": 3, "pearson": 0.5, "pearson_ci": [0.1, 0.9], "checks": {"accuracy": 0.7}}
    (ev / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    argv = [f"T={run}", "--eval", f"T:test={ev}", "--json", str(out), "--png", str(png)]
    assert _module().main(argv) == 0
    data = json.loads(out.read_text())
    assert data["curves"] == {"T": {"0": [[40, 0.25], [80, 0.75]]}}
    assert data["check_curves"] == {"T": {"0": [[40, 0.5]]}}
    assert data["final_evals"]["T"]["test"]["check_accuracy"] == 0.7
    assert data["runs"]["T"]["eval_split"] == "validation"
    assert png.is_file() and png.stat().st_size > 0


def test_runs_evaluated_alike_share_one_title(tmp_path):
    """Runs that differ in a knob (here the seed) but were evaluated on the same items get one
    title naming those items once; each run records its seed."""
    argv = []
    for seed in (0, 1):
        run = tmp_path / f"s{seed}"
        run.mkdir()
        cfg = {"method": "raft", "seed": seed, "batch_size": 8, "eval_split": "validation"}
        (run / "train_config.yaml").write_text(yaml.safe_dump({**cfg, "eval_limit": 60}))
        row = {"step": 25, "eval/pearson": 0.3 + seed / 10}
        (run / "train_log.jsonl").write_text(json.dumps(row) + "\n")
        argv.append(f"s{seed}={run}")
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    assert _module().main([*argv, "--json", str(out), "--png", str(png)]) == 0
    data = json.loads(out.read_text())
    assert data["curve"]["title"] == "periodic evaluation (60 validation items, every run)"
    assert [data["runs"][n]["seed"] for n in ("s0", "s1")] == [0, 1]
    assert data["curves"]["s1"] == {"0": [[200, 0.4]]}
