"""The command line, end to end on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from realjudge.cli import build_parser, main
from realjudge.data.records import JudgeRecord, Rubric

METRIC_KEYS = ("n", "n_failed", "pearson", "spearman", "kendall", "rmse", "mae", "accuracy")


def _records_file(path, n=3, bad_line_at=None):
    rubric = Rubric("Correct?", {k: f"level {k}" for k in range(1, 6)})
    lines = [
        json.dumps(
            JudgeRecord(
                id=f"c{i}", instruction=f"Q{i}?", response="yes " * (i + 1), rubric=rubric
            ).to_dict()
        )
        for i in range(n)
    ]
    if bad_line_at is not None:
        lines.insert(bad_line_at, "not json at all")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.integration
def test_eval_on_vicuna_rows(vicuna_path, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(
        [
            "eval",
            "--model",
            "tiny",
            "--data",
            str(vicuna_path),
            "--limit",
            "16",
            "--out",
            str(out),
            "--n-boot",
            "100",
            "--quiet",
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and len({r["id"] for r in rows}) == 16
    assert all(r["status"] == "ok" and r["gold"] is not None for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for key in METRIC_KEYS:
        assert key in metrics
    assert metrics["n"] == 16 and metrics["n_failed"] == 0
    for key in ("pearson", "spearman", "kendall", "rmse", "mae", "accuracy"):
        assert f"{key}_ci" in metrics
    assert metrics["pearson"] is not None and len(metrics["pearson_ci"]) == 2
    assert str(out) in capsys.readouterr().out


def test_score_with_a_bad_row(tmp_path, capsys):
    data = _records_file(tmp_path / "in.jsonl", n=3, bad_line_at=1)
    out = tmp_path / "scored.jsonl"
    rc = main(["score", "--model", "tiny", "--input", str(data), "--output", str(out), "--quiet"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    statuses = sorted(r["status"] for r in rows)
    assert statuses == ["bad_row", "ok", "ok", "ok"]
    bad = next(r for r in rows if r["status"] == "bad_row")
    assert bad["row"] == 2 and "JSON" in bad["error"]
    assert "4 rows" in capsys.readouterr().out


def test_bench_inference_runs(tmp_path, capsys):
    data = _records_file(tmp_path / "d.jsonl", n=2)
    rc = main(
        [
            "bench",
            "inference",
            "--model",
            "tiny",
            "--data",
            str(data),
            "--n",
            "2",
            "--max-new-tokens",
            "3",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("score_only_rail", "cot_rail", "cot_decode", "cot_rail/score_only_rail"):
        assert name in text


def test_user_errors_exit_2(tmp_path, capsys):
    rc = main(["eval", "--model", "tiny", "--data", str(tmp_path / "missing.json"), "--quiet"])
    assert rc == 2
    assert "error" in capsys.readouterr().err


def test_parser_defaults():
    args = build_parser().parse_args(["eval"])
    assert args.cot is False and args.mode == "rail" and args.model == "embedded"
    assert args.data == "embedded" and args.samples == 1 and not args.raw_probs
    args = build_parser().parse_args(["score", "--input", "a", "--output", "b", "--cot"])
    assert args.cot is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--mode", "argmax"])


def test_python_dash_m():
    done = subprocess.run(
        [sys.executable, "-m", "realjudge", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "realjudge" in done.stdout
