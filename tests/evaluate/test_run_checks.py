"""``realjudge eval`` reports the judge's item-by-item checks on the embedded task (CoT only)."""

from __future__ import annotations

import json

from realjudge.evaluate.run import EvalConfig, format_summary, run_eval


def _eval(tmp_path, name, cot):
    cfg = EvalConfig(
        model="tiny",
        data="embedded",
        split="test",
        limit=3,
        cot=cot,
        max_new_tokens=6,
        out=str(tmp_path / name),
        n_boot=20,
        progress=False,
    )
    return run_eval(cfg), tmp_path / name


def test_cot_eval_on_the_embedded_task_reports_check_accuracy(tmp_path):
    metrics, out = _eval(tmp_path, "cot", cot=True)
    checks = metrics["checks"]
    assert checks["n_feedbacks"] == 3 and checks["n_items"] == 12
    assert 0 <= checks["n_parsable"] <= 3 and 0.0 <= checks["accuracy"] <= 1.0
    saved = json.loads((out / "metrics.json").read_text())["metrics"]["checks"]
    assert saved["n_feedbacks"] == 3
    assert "## Item checks" in (out / "report.md").read_text()
    assert "item checks: accuracy" in format_summary(metrics)


def test_score_only_eval_has_no_check_accuracy(tmp_path):
    metrics, out = _eval(tmp_path, "score", cot=False)
    assert "checks" not in metrics
    assert "## Item checks" not in (out / "report.md").read_text()


def test_report_shows_the_check_numbers(tmp_path):
    from realjudge.evaluate.metrics import summarize_predictions
    from realjudge.evaluate.report import write_report

    rows = [{"id": "a", "gold": 2.0, "prediction": 2.5, "status": "ok", "feedback": "tent: named"}]
    metrics = summarize_predictions(rows, n_boot=0)
    metrics["checks"] = {
        "n_feedbacks": 10,
        "n_parsable": 7,
        "n_complete": 5,
        "n_items": 40,
        "n_read": 25,
        "accuracy": 0.475,
        "accuracy_ci": [0.31, 0.62],
        "accuracy_of_read": 0.76,
        "all_correct_rate": 0.2,
    }
    md = write_report(tmp_path, rows, metrics, {}, title="t")["report"].read_text()
    section = md.split("## Item checks", 1)[1].split("## Status", 1)[0]
    assert "7 of 10 feedbacks have a readable check, 5 check every item" in section
    assert "| accuracy (all items) | 0.475 [0.31, 0.62] |" in section
    assert "| accuracy of the checks read | 0.760 |" in section
    assert "| items / checks read | 40 / 25 |" in section
