"""write_report files and the comparison tables."""

from __future__ import annotations

import json
import math

import pytest
from rich.console import Console

from realjudge.evaluate.metrics import summarize_predictions
from realjudge.evaluate.report import (
    comparison_table,
    format_value,
    json_safe,
    rich_table,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _strict_load(text: str):
    def bad(c):
        raise ValueError(f"non-JSON constant {c}")

    return json.loads(text, parse_constant=bad)


def _rows():
    rows = []
    for i, (g, p) in enumerate([(1, 1.4), (2, 2.2), (3, 2.6), (4, 4.1), (5, 4.7), (4.33, 3.9)]):
        rows.append(
            {
                "id": f"ex-{i}",
                "gold": float(g),
                "prediction": p,
                "expected_score": p,
                "decoded_score": round(p),
                "distribution": [0.1, 0.2, 0.4, 0.2, 0.1],
                "leaked_mass": 0.01 * i,
                "feedback": f"Feedback {i}: the response | is fine.\nSecond line." if i else None,
                "status": "forced_cue" if i == 2 else "ok",
                "samples": 1,
            }
        )
    rows.append(
        {"id": "bad", "gold": 3.0, "prediction": None, "status": "error: boom", "feedback": None}
    )
    rows.append(
        {"id": "multi", "gold": 2.0, "prediction": 2.0, "status": "ok", "feedback": ["a", "b"]}
    )
    return rows


def test_write_report_files(tmp_path):
    rows = _rows()
    metrics = summarize_predictions(rows, n_boot=50)
    metrics["nan_here"] = float("nan")  # must come out as null
    config = {
        "model": "embedded",
        "mode": "rail",
        "scale": (1, 5),
        "sampling": {"n": 1},
        "note": "a|b",
        "out": tmp_path,
    }
    paths = write_report(tmp_path / "out", rows, metrics, config, title="Test run")

    assert set(paths) == {"metrics", "report", "scatter", "confusion"}
    assert not (tmp_path / "out" / "predictions.jsonl").exists()
    data = _strict_load(paths["metrics"].read_text())
    assert data["title"] == "Test run"
    assert data["metrics"]["nan_here"] is None
    assert data["metrics"]["n"] == 7 and data["metrics"]["n_failed"] == 1
    assert data["config"]["scale"] == [1, 5] and data["config"]["sampling"] == {"n": 1}
    for key in ("scatter", "confusion"):
        blob = paths[key].read_bytes()
        assert len(blob) > 1000 and blob.startswith(PNG_MAGIC)

    md = paths["report"].read_text()
    assert md.startswith("# Test run")
    p = metrics["pearson"]
    lo, hi = metrics["pearson_ci"]
    assert f"{p:.3f} [{lo:.2f}, {hi:.2f}]" in md
    for needle in ("## Configuration", "sampling.n", "expected_score", "decoded_score", "error"):
        assert needle in md
    assert "(scatter.png)" in md and "(confusion.png)" in md
    assert "> Feedback 1: the response | is fine.\n> Second line." in md
    assert "| note | a\\|b |" in md  # pipes escaped inside tables


def test_write_report_with_nothing_scored(tmp_path):
    rows = [{"id": "x", "gold": None, "prediction": None, "status": "bad_row"}]
    metrics = summarize_predictions(rows, n_boot=10)
    paths = write_report(tmp_path, rows, metrics, {}, title="empty")
    data = _strict_load(paths["metrics"].read_text())
    assert data["metrics"]["pearson"] is None
    assert paths["scatter"].stat().st_size > 0 and paths["confusion"].stat().st_size > 0
    assert "n/a" in paths["report"].read_text()


def test_json_safe_and_format_value():
    assert json_safe({"a": (1, float("inf")), 2: {float("nan")}}) == {"a": [1, None], "2": [None]}
    assert format_value(0.61234) == "0.612"
    assert format_value(None) == "n/a"
    assert format_value(math.nan) == "n/a"
    assert format_value(12) == "12"


RESULTS = {
    "before": {"test": {"pearson": 0.41234, "spearman": 0.4}, "ood": {"pearson": None}},
    "after": {
        "test": {"pearson": 0.6, "spearman": 0.58765},
        "ood": {"pearson": 0.5, "spearman": 0.49},
    },
}


def test_comparison_table_markdown():
    table = comparison_table(RESULTS)
    lines = table.splitlines()
    assert lines[0] == ("| method | test pearson | test spearman | ood pearson | ood spearman |")
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == "| before | 0.412 | 0.400 | n/a | n/a |"
    assert lines[3] == "| after | 0.600 | 0.588 | 0.500 | 0.490 |"

    single = comparison_table(RESULTS, metrics=("pearson",)).splitlines()
    assert single[0] == "| method | test | ood |"
    assert single[2] == "| before | 0.412 | n/a |"
    nested = {"m": {"test": {"by_field": {"decoded_score": {"pearson": 0.25}}}}}
    assert "0.250" in comparison_table(nested, metrics=("by_field.decoded_score.pearson",))


def test_rich_table_renders():
    console = Console(record=True, width=120)
    console.print(rich_table(RESULTS, title="before/after"))
    text = console.export_text()
    for needle in ("before/after", "test pearson", "0.412", "n/a", "0.588"):
        assert needle in text


@pytest.mark.parametrize("metrics", [("pearson",), "pearson"])
def test_comparison_table_accepts_str_metric(metrics):
    assert comparison_table(RESULTS, metrics=metrics).splitlines()[0] == "| method | test | ood |"
