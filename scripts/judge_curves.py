"""Learning curves of training runs, from their periodic evaluations: a JSON of the points and
a plot (Pearson, and the check accuracy of CoT runs), x = training examples seen.

    python scripts/judge_curves.py NAME=RUN_DIR [NAME=RUN_DIR ...] \
        [--eval NAME:BENCH=EVAL_DIR ...] --json OUT.json --png OUT.png

Each RUN_DIR is a ``realjudge train`` output dir (its ``train_log.jsonl`` and
``train_config.yaml``); the JSON records the command, each run's config keys that decide the
curve, and the points.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import yaml

from realjudge.reproduce.report import plot_curves
from realjudge.reproduce.runner import read_curve

KEYS = (
    "method",
    "seed",
    "learning_rate",
    "raft_lambda_p",
    "batch_size",
    "freeze_layers",
    "warmup_steps",
    "eval_split",
    "eval_limit",
    "eval_mode",
)


def curves(runs: dict[str, Path]) -> dict:
    out: dict = {"runs": {}, "curves": {}, "check_curves": {}}
    for name, run_dir in runs.items():
        cfg = yaml.safe_load((run_dir / "train_config.yaml").read_text())
        per_step = int(cfg["batch_size"])  # examples (prompts) per step, all processes
        out["runs"][name] = {k: cfg.get(k) for k in KEYS}
        for key, metric in (("curves", "pearson"), ("check_curves", "check_accuracy")):
            pts = [(step * per_step, v) for step, v in read_curve(run_dir, metric)]
            if pts:
                out[key][name] = {"0": pts}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    ap.add_argument(
        "--eval",
        action="append",
        default=[],
        help="NAME:BENCH=EVAL_DIR: a 'realjudge eval' output of run NAME on BENCH, recorded "
        "(Pearson with its interval, n, check accuracy) beside the curves (repeatable)",
    )
    ap.add_argument("--json", required=True, help="points, written here")
    ap.add_argument("--png", required=True, help="plot, written here")
    args = ap.parse_args(argv)
    runs = {}
    for spec in args.runs:
        name, _, path = spec.partition("=")
        runs[name] = Path(path)
    data = curves(runs)
    data["final_evals"] = {}
    for spec in args.eval:
        key, _, path = spec.partition("=")
        name, _, bench = key.partition(":")
        m = json.loads((Path(path) / "metrics.json").read_text())["metrics"]
        data["final_evals"].setdefault(name, {})[bench] = {
            "n": m["n"],
            "pearson": m["pearson"],
            "pearson_ci": m["pearson_ci"],
            "check_accuracy": (m.get("checks") or {}).get("accuracy"),
        }
    data["command"] = "python scripts/judge_curves.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    sets = {n: f"{r['eval_limit']} {r['eval_split']} items" for n, r in data["runs"].items()}
    if len(data["runs"]) > 1 and len(set(sets.values())) == 1:
        evals = f"{next(iter(sets.values()))}, every run"
    else:
        evals = ", ".join(f"{n}: {e}" for n, e in sets.items())
    data["curve"] = {"title": f"periodic evaluation ({evals})"}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    plot_curves(data, Path(args.png), xlabel="training examples seen")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
