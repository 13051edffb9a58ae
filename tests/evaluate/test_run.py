"""run_eval and score_file on the tiny model: every input row is in the output, with a status."""

from __future__ import annotations

import json

import pytest

from realjudge.data.records import JudgeRecord, Rubric
from realjudge.evaluate.run import EvalConfig, format_summary, run_eval, score_file
from realjudge.inference.judge import Judge, JudgeConfig

RUBRIC = Rubric("Is it correct?", {k: f"level {k}" for k in range(1, 6)})


def write_jsonl(path, n=5, bad_line_at=None, gold=True):
    lines = []
    for i in range(n):
        rec = JudgeRecord(
            id=f"x{i}",
            instruction=f"Question {i}?",
            response="answer " * (i + 1),
            gold=float(1 + i % 5) if gold else None,
            rubric=RUBRIC,
        )
        lines.append(json.dumps(rec.to_dict()))
    if bad_line_at is not None:
        lines.insert(bad_line_at, '{"id": "broken", "instruction": 3')
    path.write_text("\n".join(lines) + "\n")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_eval_writes_every_row_and_the_report(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", n=6, bad_line_at=2)
    out = tmp_path / "run"
    cfg = EvalConfig(
        model="tiny", data=str(data), out=str(out), skip_bad=True, n_boot=50, progress=False
    )
    metrics = run_eval(cfg)
    rows = read_jsonl(out / "predictions.jsonl")
    assert len(rows) == 7
    bad = [r for r in rows if r["status"] == "bad_row"]
    assert len(bad) == 1 and bad[0]["row"] == 3 and bad[0]["row_kind"] == "line"
    assert sorted(r["id"] for r in rows if r["status"] == "ok") == [f"x{i}" for i in range(6)]
    for name in ("metrics.json", "report.md", "scatter.png", "confusion.png"):
        assert (out / name).is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["n"] == 6 and saved["metrics"]["n_failed"] == 1
    assert saved["config"]["n_bad_rows"] == 1 and saved["config"]["model"] == "tiny"
    assert metrics["n"] == 6 and metrics["runtime"]["backend"] == "transformers"
    assert "pearson" in format_summary(metrics)


def test_run_eval_stops_on_a_bad_row_without_skip_bad(tmp_path):
    from realjudge.data.loaders import DataError

    data = write_jsonl(tmp_path / "data.jsonl", n=3, bad_line_at=1)
    with pytest.raises(DataError, match="line 2"):
        run_eval(EvalConfig(model="tiny", data=str(data), out=str(tmp_path / "o"), progress=False))


def test_score_file_keeps_every_row(tmp_path, tiny_model, tokenizer):
    data = write_jsonl(tmp_path / "in.jsonl", n=4, bad_line_at=0, gold=False)
    judge = Judge(tiny_model, tokenizer, JudgeConfig(progress=False, backend="transformers"))
    summary = score_file(judge, data, tmp_path / "out.jsonl")
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert summary["n_rows"] == len(rows) == 5
    assert summary["n_bad_rows"] == 1 and summary["n_scored"] == 4
    assert rows[0]["status"] == "bad_row" and rows[0]["row"] == 1
    assert [r["id"] for r in rows[1:]] == ["x0", "x1", "x2", "x3"]
    assert all(r["gold"] is None and r["prediction"] is not None for r in rows[1:])
