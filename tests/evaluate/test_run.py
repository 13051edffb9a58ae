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


@pytest.mark.parametrize("cot", [False, True])
def test_score_resume_keeps_the_written_lines_and_ends_as_an_uninterrupted_run(
    tmp_path, tiny_model, tokenizer, cot
):
    """A stopped `score` left 3 whole lines and a torn one: --resume keeps the 3, grades
    only the rows after them (the torn row again) and the file ends byte for byte as an
    uninterrupted run's -- sampled chains included, as they are seeded per record."""
    data = write_jsonl(tmp_path / "in.jsonl", n=6, bad_line_at=2, gold=False)
    lines = data.read_text().splitlines()
    for i in (0, 1):  # non-ASCII ids in the kept lines: offsets are bytes, not characters
        r = json.loads(lines[i])
        r["id"] += "-répondu—答え"
        lines[i] = json.dumps(r, ensure_ascii=False)
    data.write_text("\n".join(lines) + "\n")
    cfg = JudgeConfig(
        progress=False,
        backend="transformers",
        cot=cot,
        max_new_tokens=6,
        samples=2,
        temperature=1.0,
        seed=3,
        batch_size=2,
    )
    judge = Judge(tiny_model, tokenizer, cfg)
    whole = tmp_path / "whole.jsonl"
    score_file(judge, data, whole)
    lines = whole.read_bytes().splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(lines[:3]) + lines[3][:10])

    graded: list[str] = []
    predict = judge.predict

    def counting(records):
        graded.extend(r.id for r in records)
        return predict(records)

    judge.predict = counting
    summary = score_file(judge, data, out, resume=True)
    assert graded == ["x2", "x3", "x4", "x5"]  # rows 1, 2 (x0..., x1...) and bad row 3 kept
    assert out.read_bytes() == whole.read_bytes()
    assert summary["n_resumed"] == 3 and summary["n_rows"] == 7 and summary["n_bad_rows"] == 1

    graded.clear()  # a finished output: nothing left to grade
    assert score_file(judge, data, out, resume=True)["n_resumed"] == 7 and graded == []
    assert out.read_bytes() == whole.read_bytes()


def test_score_resume_refuses_another_inputs_output_before_loading_the_model(tmp_path, monkeypatch):
    import realjudge.evaluate.run as run

    data = write_jsonl(tmp_path / "in.jsonl", n=3)
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "other", "row": 1, "status": "ok"}) + "\n")
    monkeypatch.setattr(run, "load_judge", _no_model)
    with pytest.raises(ValueError, match="line 1 of .* is not this input's row 1"):
        score_file("tiny", data, out, resume=True)
    assert json.loads(out.read_text())["id"] == "other"  # left as it was
    # every row's line, then one more (with no row, or row null): not this input's output
    whole = [json.dumps({"id": f"x{i}", "row": i + 1, "status": "ok"}) for i in range(3)]
    for extra in ("{}", json.dumps({"id": None, "row": None})):
        out.write_text("\n".join([*whole, extra]) + "\n")
        with pytest.raises(ValueError, match="more lines than the input has rows \\(3\\)"):
            score_file("tiny", data, out, resume=True)


def test_score_resume_refuses_an_output_read_another_way(tmp_path, tiny_model, tokenizer):
    """score records the reading beside its output (OUT.settings.json); a resumed run with
    another reading (here a longer feedback limit) would mix two kinds of score, so it is
    refused and the output left as it was; the same reading resumes."""
    data = write_jsonl(tmp_path / "in.jsonl", n=3)
    out = tmp_path / "out.jsonl"

    def judge(**kw):
        cfg = JudgeConfig(progress=False, backend="transformers", cot=True, max_new_tokens=4)
        for k, v in kw.items():
            setattr(cfg, k, v)
        return Judge(tiny_model, tokenizer, cfg)

    score_file(judge(), data, out)
    saved = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    assert saved["cot"] is True and saved["max_new_tokens"] == 4 and saved["mode"] == "rail"
    out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:2]))
    before = out.read_bytes()
    with pytest.raises(ValueError, match="max_new_tokens 4 then, 8 now"):
        score_file(judge(max_new_tokens=8), data, out, resume=True)
    assert out.read_bytes() == before
    # batch size changes rounding, not the reading: it resumes
    assert score_file(judge(batch_size=1), data, out, resume=True)["n_resumed"] == 2


def test_score_resume_without_an_output_grades_everything(tmp_path, tiny_model, tokenizer):
    data = write_jsonl(tmp_path / "in.jsonl", n=3)
    judge = Judge(tiny_model, tokenizer, JudgeConfig(progress=False, backend="transformers"))
    summary = score_file(judge, data, tmp_path / "new" / "out.jsonl", resume=True)
    assert summary["n_resumed"] == 0 and summary["n_scored"] == 3


def test_cli_score_resume_flag(tmp_path, monkeypatch, capsys):
    import realjudge.evaluate.run as run
    from realjudge.cli import main

    seen = {}

    def fake_score_file(model, input, output, config, **kw):
        seen.update(kw)
        return {
            "n_rows": 1,
            "output": str(output),
            "status_counts": {"ok": 1},
            "reading": "score-only RAIL",
            "n_resumed": 1,
        }

    monkeypatch.setattr(run, "score_file", fake_score_file)
    data = write_jsonl(tmp_path / "in.jsonl", n=1)
    assert (
        main(["score", "--input", str(data), "--output", str(tmp_path / "o.jsonl"), "--resume"])
        == 0
    )
    assert seen["resume"] is True and "1 kept from before" in capsys.readouterr().out


# --- input order ------------------------------------------------------------------------------


def test_in_input_order_interleaves_bad_rows_at_their_place():
    from realjudge.data.loaders import BadRow
    from realjudge.evaluate.run import in_input_order

    bad = [BadRow("f", 5, "id", "x"), BadRow("f", 1, "<row>", "y"), BadRow("f", 9, "gold", "z")]
    preds = ({"id": i, "status": "ok"} for i in ("a", "b", "c"))
    rows = list(in_input_order([2, 3, 7], preds, bad))
    assert [(r["row"], r["status"]) for r in rows] == [
        (1, "bad_row"),
        (2, "ok"),
        (3, "ok"),
        (5, "bad_row"),
        (7, "ok"),
        (9, "bad_row"),
    ]
    assert [r["id"] for r in rows if r["status"] == "ok"] == ["a", "b", "c"]


def test_eval_and_score_keep_input_order(tmp_path, tiny_model, tokenizer):
    data = write_jsonl(tmp_path / "data.jsonl", n=4, bad_line_at=2)
    out = tmp_path / "run"
    run_eval(
        EvalConfig(
            model="tiny", data=str(data), out=str(out), skip_bad=True, n_boot=10, progress=False
        )
    )
    rows = read_jsonl(out / "predictions.jsonl")
    assert [r["row"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["id"] for r in rows] == ["x0", "x1", None, "x2", "x3"]
    assert rows[2]["status"] == "bad_row"
    judge = Judge(tiny_model, tokenizer, JudgeConfig(progress=False, backend="transformers"))
    summary = score_file(judge, data, tmp_path / "out.jsonl")
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["status"] for r in rows] == ["ok", "ok", "bad_row", "ok", "ok"]
    assert summary["reading"].startswith("score-only + RAIL")


def test_score_file_bytes_and_a_1mb_row(tmp_path, tiny_model, tokenizer):
    from realjudge.data.loaders import DataError

    write_jsonl(tmp_path / "src.jsonl", n=4)
    lines = (tmp_path / "src.jsonl").read_bytes().splitlines()
    big = json.loads(lines[3])
    big["response"] = "long " * 210_000  # about 1 MB
    lines[1] = lines[1].replace(b"answer", b"answ\xe9r")  # invalid UTF-8
    lines[3] = json.dumps(big).encode()
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    judge = Judge(
        tiny_model,
        tokenizer,
        JudgeConfig(progress=False, backend="transformers", max_prompt_tokens=256),
    )
    summary = score_file(judge, data, tmp_path / "out.jsonl")
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["status"] for r in rows] == ["ok", "bad_row", "ok", "ok"]
    assert "byte offset" in rows[1]["error"] and rows[1]["field"] == "response"
    assert rows[3]["id"] == "x3" and rows[3]["truncated"] is True
    assert summary["n_bad_rows"] == 1 and summary["n_scored"] == 3
    # without skipping, the bad row stops the run before the output is written
    with pytest.raises(DataError, match=r"line 2 \(1-based\), field 'response'"):
        score_file(judge, data, tmp_path / "strict.jsonl", skip_bad=False)
    assert not (tmp_path / "strict.jsonl").exists()


# --- reading mode that follows the checkpoint ---------------------------------------------


def test_eval_reads_a_tract_checkpoint_with_its_cot(tmp_path):
    from realjudge.train import build_config
    from realjudge.train.trainer import train

    data = write_jsonl(tmp_path / "train.jsonl", n=4)
    records = [json.loads(x) for x in data.read_text().splitlines()]
    for r in records:
        r["reference_feedback"] = "looks fine"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = build_config(
        "tract",
        overrides=dict(
            model="tiny",
            data=str(data),
            out=str(tmp_path / "tract"),
            device="cpu",
            report_to="none",
            batch_size=2,
            max_steps=1,
            max_new_tokens=5,
            max_prompt_tokens=128,
        ),
    )
    model = str(train(cfg).out)
    out = tmp_path / "eval"
    metrics = run_eval(
        EvalConfig(model=model, data=str(data), out=str(out), n_boot=10, progress=False)
    )
    saved = json.loads((out / "metrics.json").read_text())
    config = saved["config"]
    assert config["cot"] is True and config["samples"] == 1 and config["max_new_tokens"] == 5
    assert config["reading_sources"]["cot"] == "model"
    assert metrics["reading"] == config["reading"] and "CoT (1 sample, greedy" in config["reading"]
    assert "Reading: CoT" in (out / "report.md").read_text()
    assert "reading: CoT" in format_summary(metrics)
    rows = read_jsonl(out / "predictions.jsonl")
    assert all(r["feedback"].endswith("[RESULT] ") for r in rows)
    # an explicit setting wins
    out2 = tmp_path / "eval-score-only"
    run_eval(
        EvalConfig(model=model, data=str(data), out=str(out2), cot=False, n_boot=10, progress=False)
    )
    config = json.loads((out2 / "metrics.json").read_text())["config"]
    assert config["cot"] is False and config["reading_sources"]["cot"] == "given"
    assert all(r["feedback"] == "" for r in read_jsonl(out2 / "predictions.jsonl"))


def test_eval_config_holds_a_judge_config():
    cfg = EvalConfig(model="tiny", cot=True, samples=2, seed=3, progress=False)
    assert cfg.judge == JudgeConfig(cot=True, samples=2, seed=3, progress=False)
    assert cfg.seed == 3 and not hasattr(cfg, "cot")
    flat = cfg.to_dict()
    assert flat["cot"] is True and flat["model"] == "tiny" and "judge" not in flat
    base = JudgeConfig(mode="decode")
    assert EvalConfig(judge=base, top_p=0.5).judge == JudgeConfig(mode="decode", top_p=0.5)
    with pytest.raises(TypeError, match="unknown"):
        EvalConfig(cots=True)
    with pytest.raises(ValueError, match="samples"):
        EvalConfig(samples=0)


# --- the metrics' scale, the output path --------------------------------------------------------


def test_metrics_scale_comes_from_the_scored_rows_only(tmp_path):
    """A row whose scale the tokenizer cannot write fails (status error); its scale must not
    become the scale of the metrics, which would clamp every prediction into it."""
    data = write_jsonl(tmp_path / "data.jsonl", n=4)
    odd = {"id": "odd", "instruction": "q", "response": "r", "scale": [0, 100], "gold": 50}
    with data.open("a") as f:
        f.write(json.dumps(odd) + "\n")
    out = tmp_path / "run"
    metrics = run_eval(EvalConfig(model="tiny", data=str(data), out=str(out), n_boot=10))
    rows = read_jsonl(out / "predictions.jsonl")
    assert rows[4]["id"] == "odd" and rows[4]["status"].startswith("error")
    assert metrics["scale"] == [1, 5] and metrics["n"] == 4
    assert len(metrics["confusion"]["scores"]) == 5
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["scale"] == [1, 5] and saved["config"]["scale"] == [1, 5]


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the output path was checked")


def test_score_file_refuses_to_write_over_its_input(tmp_path, monkeypatch):
    import realjudge.evaluate.run as run

    monkeypatch.setattr(run, "load_judge", _no_model)
    data = write_jsonl(tmp_path / "data.jsonl", n=3)
    before = data.read_bytes()
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.jsonl"
    link.hardlink_to(data)
    for output in (data, tmp_path / "sub" / ".." / "data.jsonl", link):
        with pytest.raises(ValueError, match="is the input file"):
            score_file("tiny", data, output)
    assert data.read_bytes() == before


def test_score_and_eval_check_the_output_path_before_loading_the_model(tmp_path, monkeypatch):
    import realjudge.evaluate.run as run

    monkeypatch.setattr(run, "load_judge", _no_model)
    data = write_jsonl(tmp_path / "data.jsonl", n=3)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        score_file("tiny", data, folder)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        score_file("tiny", data, a_file / "out.jsonl")
    with pytest.raises(ValueError, match="is a file"):
        run_eval(EvalConfig(model="tiny", data=str(data), out=str(a_file)))
    (folder / "predictions.jsonl").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        run_eval(EvalConfig(model="tiny", data=str(data), out=str(folder)))
    (tmp_path / "old").mkdir()
    preds = write_jsonl(tmp_path / "old" / "predictions.jsonl", n=3)  # eval reading its own
    with pytest.raises(ValueError, match="is the input file"):
        run_eval(EvalConfig(model="tiny", data=str(preds), out=str(preds.parent)))
    assert a_file.read_text() == "x"


def test_leaked_mass_below_zero_is_written_as_zero(tmp_path, tiny_model, tokenizer):
    data = write_jsonl(tmp_path / "data.jsonl", n=2)
    judge = Judge(tiny_model, tokenizer, JudgeConfig(progress=False, backend="transformers"))
    real_predict = judge.predict

    def predict(records):
        for row in real_predict(records):
            yield {**row, "leaked_mass": -1e-7}

    judge.predict = predict  # type: ignore[method-assign]
    score_file(judge, data, tmp_path / "out.jsonl")
    assert [r["leaked_mass"] for r in read_jsonl(tmp_path / "out.jsonl")] == [0.0, 0.0]


def test_reading_settings_name_a_local_checkpoint_by_its_absolute_path(
    tmp_path, monkeypatch, tiny_model, tokenizer
):
    from realjudge.evaluate.run import reading_settings

    judge = Judge(tiny_model, tokenizer, JudgeConfig(progress=False, backend="transformers"))
    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    names = {reading_settings(judge, m)["model"] for m in ("ckpt", "./ckpt", tmp_path / "ckpt")}
    assert names == {str((tmp_path / "ckpt").resolve())}
    assert reading_settings(judge, "embedded")["model"] == "embedded"  # a spec, not a path
    assert reading_settings(judge, judge)["model"] is None


def test_weights_fingerprint_changes_with_retrained_weights_not_with_a_copy(tmp_path, tiny_model):
    """A checkpoint trained again into the same directory has another fingerprint; a copy of
    it elsewhere the same one; a path without weight files has none."""
    import shutil

    import torch

    from realjudge.models import weights_fingerprint

    tiny_model.save_pretrained(tmp_path / "ckpt")
    first = weights_fingerprint(tmp_path / "ckpt")
    assert first is not None
    shutil.copytree(tmp_path / "ckpt", tmp_path / "copy")
    assert weights_fingerprint(tmp_path / "copy") == first
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    try:
        with torch.no_grad():
            for p in tiny_model.parameters():
                p.add_(1e-3)
        tiny_model.save_pretrained(tmp_path / "ckpt")  # same directory, new weights
    finally:
        tiny_model.load_state_dict(state)
    assert weights_fingerprint(tmp_path / "ckpt") != first
    (tmp_path / "empty").mkdir()
    assert weights_fingerprint(tmp_path / "empty") is None
    assert weights_fingerprint(tmp_path / "missing") is None


def test_score_resume_refuses_weights_trained_again_into_the_same_directory(
    tmp_path, tiny_model, tokenizer, caplog
):
    """The reading records the checkpoint's weights: resuming after the checkpoint was
    retrained in place would mix two judges' scores, so it is refused; a record written
    before the key existed is not compared on it (warned)."""
    import torch

    from realjudge.evaluate.run import _check_same_reading, reading_settings, settings_path

    judge = Judge(tiny_model, tokenizer, JudgeConfig(progress=False, backend="transformers"))
    ckpt = tmp_path / "ckpt"
    tiny_model.save_pretrained(ckpt)
    out = tmp_path / "out.jsonl"
    settings_path(out).write_text(json.dumps(reading_settings(judge, ckpt)))
    _check_same_reading(out, reading_settings(judge, ckpt))  # unchanged: resumes
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    try:
        with torch.no_grad():
            tiny_model.lm_head.weight.mul_(2.0)
        tiny_model.save_pretrained(ckpt)
    finally:
        tiny_model.load_state_dict(state)
    with pytest.raises(ValueError, match="weights '[0-9a-f]{16}' then"):
        _check_same_reading(out, reading_settings(judge, ckpt))
    old = {k: v for k, v in reading_settings(judge, ckpt).items() if k != "weights"}
    settings_path(out).write_text(json.dumps(old))
    with caplog.at_level("WARNING"):
        _check_same_reading(out, reading_settings(judge, ckpt))
    assert "records no weights" in caplog.text
