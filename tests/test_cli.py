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


# --- reading mode that follows the checkpoint; bad bytes in score ------------------------------


@pytest.fixture()
def grpo_checkpoint(tmp_path, tiny_model, tokenizer):
    """The tiny model saved with a hand-written realjudge.json of a GRPO run."""
    path = tmp_path / "grpo"
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {"method": "grpo", "format": "result", "config": {"max_new_tokens": 4}}
    (path / "realjudge.json").write_text(json.dumps(meta))
    return path


def _eval(model, data, out, *flags):
    argv = ["eval", "--model", str(model), "--data", str(data), "--out", str(out)]
    return main([*argv, "--device", "cpu", "--n-boot", "10", *flags])


def test_eval_follows_the_checkpoint_unless_a_flag_is_given(grpo_checkpoint, tmp_path, capsys):
    data = _records_file(tmp_path / "d.jsonl", n=2)
    assert _eval(grpo_checkpoint, data, tmp_path / "a") == 0
    assert "reading: CoT (1 sample, greedy, up to 4 new tokens)" in capsys.readouterr().out
    config = json.loads((tmp_path / "a" / "metrics.json").read_text())["config"]
    assert (config["cot"], config["samples"], config["max_new_tokens"]) == (True, 1, 4)
    flags = ["--samples", "2", "--max-new-tokens", "3", "--quiet"]
    assert _eval(grpo_checkpoint, data, tmp_path / "b", *flags) == 0
    config = json.loads((tmp_path / "b" / "metrics.json").read_text())["config"]
    assert (config["cot"], config["samples"], config["max_new_tokens"]) == (True, 2, 3)
    assert config["reading_sources"]["samples"] == "given"
    assert _eval(grpo_checkpoint, data, tmp_path / "c", "--no-cot", "--quiet") == 0
    config = json.loads((tmp_path / "c" / "metrics.json").read_text())["config"]
    assert config["cot"] is False and config["reading"].startswith("score-only")
    # a plain model is read score-only, as before
    assert _eval("tiny", data, tmp_path / "d", "--quiet") == 0
    config = json.loads((tmp_path / "d" / "metrics.json").read_text())["config"]
    assert config["cot"] is False and config["max_new_tokens"] == 256


def test_flags_given_are_told_apart_from_defaults():
    args = build_parser().parse_args(["eval"])
    assert args.given == frozenset() and args.max_new_tokens == 256
    args = build_parser().parse_args(["score", "--input", "a", "--output", "b", "--no-cot"])
    assert args.cot is False and args.given == {"cot"} and args.skip_bad is True
    args = build_parser().parse_args(["eval", "--samples", "1", "--max-new-tokens", "9"])
    assert args.given == {"samples", "max_new_tokens"}


def test_score_keeps_good_rows_around_bad_bytes(tmp_path, capsys):
    src = _records_file(tmp_path / "src.jsonl", n=4)
    lines = src.read_bytes().splitlines()
    lines[2] = lines[2].replace(b"yes", b"y\xe9s", 1)
    big = json.loads(lines[3])
    big["response"] = "x " * 520_000  # about 1 MB
    lines[3] = json.dumps(big).encode()
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    out = tmp_path / "scored.jsonl"
    base = ["score", "--model", "tiny", "--input", str(data), "--max-prompt-tokens", "256"]
    assert main([*base, "--output", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["row"], r["status"]) for r in rows] == [
        (1, "ok"),
        (2, "ok"),
        (3, "bad_row"),
        (4, "ok"),
    ]
    offset = data.read_bytes().index(bytes([0xE9]))
    assert f"byte offset {offset}" in rows[2]["error"]
    assert rows[3]["id"] == "c3" and rows[3]["truncated"] is True
    assert "4 rows" in capsys.readouterr().out
    strict = tmp_path / "strict.jsonl"
    assert main([*base, "--output", str(strict), "--no-skip-bad", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(data) in err and "line 3" in err and "'response'" in err and "0xe9" in err
    assert not strict.exists()


def test_score_refuses_an_empty_file_and_a_directory(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    for path, words in ((empty, "empty"), (folder, "is a directory")):
        argv = ["score", "--model", "tiny", "--input", str(path), "--output", str(tmp_path / "o")]
        assert main([*argv, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and words in err
    assert not (tmp_path / "o").exists()


def test_score_refuses_its_input_or_a_directory_as_output_before_the_model(
    tmp_path, capsys, monkeypatch
):
    import realjudge.evaluate.run as run

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(run, "load_judge", no_model)
    data = _records_file(tmp_path / "in.jsonl", n=2)
    before = data.read_bytes()
    folder = tmp_path / "outdir"
    folder.mkdir()
    for output, words in ((str(data), "is the input file"), (str(folder), "is a directory")):
        argv = ["score", "--model", "tiny", "--input", str(data), "--output", output, "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("realjudge score: error:") and words in err and output in err
    assert data.read_bytes() == before and not any(folder.iterdir())
