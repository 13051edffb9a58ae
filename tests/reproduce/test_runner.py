"""``realjudge reproduce`` end to end on the tiny model (smoke sizes), and its resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realjudge.reproduce.presets import PRESETS
from realjudge.reproduce.runner import (
    DONE_FILE,
    ReproduceConfig,
    output_dir,
    portable,
    read_training_signal,
    recorded_sampling,
    resolve,
    reuse_dirs,
    run_reproduce,
    variant_run,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_preset_resolves_with_warm_starts_in_order():
    for name in PRESETS:
        exp = resolve(ReproduceConfig(preset=name))
        names = [r.name for r in exp.runs]
        assert names[:1] == ["base"] and {"RAFT", "GRPO", "REAL"} <= set(names)
        # REAL and GRPO start from the same supervised judge, trained before them
        start = exp.run("REAL").init_from
        assert start == exp.run("GRPO").init_from and start in ("TRACT", "RAFT")
        assert names.index(start) < min(names.index("REAL"), names.index("GRPO"))
        assert "TRACT" in names or name == "cpu-raft-start"
        assert start == "TRACT" or name == "cpu-raft-start"
        # REAL and GRPO share every rollout setting
        real, grpo = exp.run("REAL").overrides, exp.run("GRPO").overrides
        assert {k: v for k, v in real.items() if k != "beta"} == grpo


def test_only_variants_and_set():
    cfg = ReproduceConfig(
        only=["REAL"],
        variants=["REAL:beta=0.1,init_from=RAFT"],
        set=["learning_rate=3e-5", "REAL.max_steps=5"],
    )
    exp = resolve(cfg)
    # --only keeps REAL and what it starts from; the variant adds RAFT, its warm start
    names = [r.name for r in exp.runs]
    assert names == ["base", "RAFT", "TRACT", "REAL", "REAL[beta=0.1,init_from=RAFT]"]
    v = exp.run("REAL[beta=0.1,init_from=RAFT]")
    assert v.init_from == "RAFT" and v.overrides["beta"] == 0.1
    assert exp.run("REAL").max_steps == 5 and v.overrides["learning_rate"] == 3e-5
    with pytest.raises(KeyError):
        variant_run(exp, "NOPE:beta=1")
    with pytest.raises(ValueError, match="key=value"):
        resolve(ReproduceConfig(variants=["REAL:beta"]))


def test_smoke_run_writes_results_and_reuses_finished_work(tmp_path):
    cfg = ReproduceConfig(
        preset="cpu-embedded",
        model="tiny",
        smoke=True,
        set=["freeze_layers=1"],  # the tiny model has 2 layers
        out=str(tmp_path / "r"),
        command="x",
    )
    res = run_reproduce(cfg)
    out = tmp_path / "r"
    saved = json.loads((out / "results.json").read_text())
    runs = [r["name"] for r in saved["runs"]]
    assert runs == ["base", "SFT", "RAFT", "TRACT", "TRACT-2", "GRPO", "REAL"]
    for run in runs:
        for bench in ("embedded-test", "embedded-ood"):
            cell = saved["aggregate"][run][bench]["pearson"]
            assert cell["n"] in (0, 1)  # a constant prediction has no correlation
            preds = saved["predictions"][run][bench]
            assert sum(1 for _ in open(preds)) == 4  # every item has a row
    assert (out / "seed0" / "REAL" / "realjudge.json").is_file()
    meta = json.loads((out / "seed0" / "REAL" / "realjudge.json").read_text())
    assert meta["init_from"] == str(out / "seed0" / "TRACT")
    md = (out / "results.md").read_text()
    assert "| REAL |" in md and "### The paper's claims at this scale" in md
    assert (out / "scatter.png").is_file() and (out / "curves.png").is_file()
    assert len(saved["claims"]) == 5
    assert res["timings_s"]["REAL"]["seed0_train_s"] > 0
    signal = saved["training_signal"]
    for rl in ("GRPO", "REAL"):
        assert 0.0 <= signal[rl]["0"]["tied_groups"] <= 1.0
    assert signal["RAFT"]["0"]["tied_groups"] is None and signal["REAL"]["0"]["sq_err"] >= 0
    # each finished run records how it sampled (decode attention, top-p), and the seed's
    # environment says what its runs recorded
    from realjudge.models import runtime_environment

    here = runtime_environment("auto", "auto")["decode_attention"]
    done = json.loads((out / "seed0" / "REAL" / "reproduce_done.json").read_text())
    assert done["decode_attention"] == here
    # a run's recorded time is the trainer's, over every (re)start of the run
    trained = json.loads((out / "seed0" / "REAL" / "metrics.json").read_text())
    assert done["seconds"] == trained["train_seconds"] == res["timings_s"]["REAL"]["seed0_train_s"]
    assert saved["environment"]["0"]["decode_attention"] == here
    assert done["top_p"] == saved["environment"]["0"]["top_p"] == "topk"
    assert saved["environment"]["0"]["cue_scores"] == "generation"
    assert saved["environment"]["0"]["kv_cache"] == "static"  # a CPU
    # an evaluation's settings leave out how a written cue's score is read and the KV cache
    # its chains use, so evaluations recorded before those settings existed are still reused
    evaluation = json.loads((out / "seed0" / "REAL" / "eval-embedded-test" / DONE_FILE).read_text())
    fingerprint = evaluation["fingerprint"]
    assert "reread_cue" not in fingerprint and "kv_cache" not in fingerprint
    assert "cot" in fingerprint and evaluation["kv_cache"] == "static"

    # a second call reuses every trained model and evaluation (and reports their times)
    stamp = (out / "seed0" / "REAL" / "model.safetensors").stat().st_mtime_ns
    again = run_reproduce(cfg)
    assert (out / "seed0" / "REAL" / "model.safetensors").stat().st_mtime_ns == stamp
    assert again["aggregate"] == saved["aggregate"]
    assert again["timings_s"]["REAL"] == saved["timings_s"]["REAL"]
    assert again["timings_s"]["total"]["wall_s"] < saved["timings_s"]["total"]["wall_s"]


def test_training_signal_is_the_mean_over_logged_steps(tmp_path):
    rows = [
        {"step": 1, "frac_groups_zero_std": 1.0, "sq_err": 0.5},
        {"step": 2, "frac_groups_zero_std": 0.5, "sq_err": 0.1},
        {"step": 3, "sq_err": 0.3, "eval/pearson": 0.9},  # a step without the RL metric
    ]
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = read_training_signal(tmp_path)
    assert got["tied_groups"] == pytest.approx(0.75) and got["sq_err"] == pytest.approx(0.3)
    assert read_training_signal(tmp_path / "missing") == {"tied_groups": None, "sq_err": None}


def test_recorded_sampling_reads_the_runs_records(tmp_path):
    run = tmp_path / "REAL"
    (run / "eval-test").mkdir(parents=True)
    (run / "reproduce_done.json").write_text(json.dumps({"fingerprint": {}, "seconds": 1.0}))
    # a record older than the fields: the model's own attention, a sorted top-p
    assert recorded_sampling(run) == {
        "decode_attention": {"sdpa"},
        "top_p": {"sort"},
        "cue_scores": {"forward"},
        "kv_cache": {"dynamic"},
    }
    (run / "eval-test" / "reproduce_done.json").write_text(
        json.dumps(
            {
                "fingerprint": {},
                "seconds": 1.0,
                "decode_attention": "realjudge_cpu_decode",
                "top_p": "topk",
                "cue_scores": "generation",
                "kv_cache": "static",
            }
        )
    )
    assert recorded_sampling(run) == {
        "decode_attention": {"sdpa", "realjudge_cpu_decode"},
        "top_p": {"sort", "topk"},
        "cue_scores": {"forward", "generation"},
        "kv_cache": {"dynamic", "static"},
    }
    missing = recorded_sampling(tmp_path / "missing")
    assert missing == {k: set() for k in ("decode_attention", "top_p", "cue_scores", "kv_cache")}


def test_a_reuse_dir_may_appear_later_but_a_file_is_refused(tmp_path, caplog):
    """The two halves of a split seed name each other's output dirs; the one started first
    must not fail because the other has not created its dir yet."""
    later = tmp_path / "other-half"
    with caplog.at_level("WARNING"):
        assert reuse_dirs([str(later)]) == [later]
    assert "does not exist (yet)" in caplog.text
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        reuse_dirs([str(tmp_path / "file")])


def test_cli_reproduce_then_report(tmp_path, capsys, monkeypatch):
    import sys

    from realjudge.cli import main

    out = tmp_path / "r"
    argv = ["reproduce", "--model", "tiny", "--smoke", "--only", "RAFT", "--out", str(out)]
    argv += ["--launcher", sys.executable]  # training in a subprocess, as under accelerate
    assert main(argv + ["--set", "freeze_layers=1", "--eval-limit", "3"]) == 0
    assert json.loads((out / "seed0" / "RAFT.train.json").read_text())["method"] == "raft"
    printed = capsys.readouterr().out
    assert "| RAFT |" in printed and "| base |" in printed and "| REAL |" not in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["benchmarks"][0]["limit"] == 3
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"command": "realjudge bench x", "markdown": "| a |\n| --- |"}))
    notes = tmp_path / "notes.md"
    notes.write_text("What holds and what does not.")
    doc = tmp_path / "docs" / "results.md"
    args = ["report", "--results", str(out), "--bench", str(bench), "--discussion", str(notes)]
    assert main(args + ["--out", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Results\n\nGenerated by `realjudge report")
    assert "What holds and what does not." in text and "### `realjudge bench x`" in text
    assert "(img/r-scatter.png)" in text
    assert (doc.parent / "img" / "r-scatter.png").is_file()


def test_portable_fingerprints_name_the_output_dir_only_as_a_prefix(tmp_path):
    root = tmp_path / "r"
    fp = {"out": str(root / "seed0" / "REAL"), "init_from": str(root), "other": f"{root}x/a"}
    assert portable(fp, root) == {
        "out": "{out}/seed0/REAL",
        "init_from": "{out}",
        "other": f"{root}x/a",  # a sibling dir whose name starts the same is not inside
    }


def test_records_written_before_an_added_key_still_match_at_its_former_value(tmp_path):
    """A RAFT run recorded before raft_lambda_p existed is the run raft_lambda_p=0 asks for;
    not the one raft_lambda_p=0.5 asks for."""
    from realjudge.reproduce.runner import ADDED_KEYS, _finished, train_fingerprint
    from realjudge.train.config import build_config

    root = tmp_path / "r"
    out = str(root / "seed0" / "RAFT")
    old = build_config("raft", overrides={"out": out}).to_dict()
    del old["raft_lambda_p"]  # what the code before the key saved
    record = tmp_path / "done.json"
    record.write_text(json.dumps({"fingerprint": {"config": old}, "seconds": 12.0}))
    for value, done in ((0.0, 12.0), (0.5, None)):
        cfg = build_config("raft", overrides={"out": out, "raft_lambda_p": value}).to_dict()
        assert _finished(record, train_fingerprint(cfg, root), root) == done
    assert ADDED_KEYS["raft_lambda_p"] == build_config("raft").raft_lambda_p


def test_disable_dropout_is_left_out_at_true_only_for_a_run_without_lora(tmp_path):
    """A REAL run recorded before disable_dropout existed trained without dropout when it had
    no LoRA (no preset's model has dropout), so it is the run disable_dropout=True asks for;
    with LoRA it trained with lora_dropout active, so it is not."""
    from realjudge.reproduce.runner import _finished, train_fingerprint
    from realjudge.train.config import build_config

    root = tmp_path / "r"
    out = str(root / "seed0" / "REAL")
    record = tmp_path / "done.json"
    for lora, done in ((False, 12.0), (True, None)):
        new = build_config("real", overrides={"out": out, "lora": lora}).to_dict()
        assert new["disable_dropout"] is True
        old = {k: v for k, v in new.items() if k != "disable_dropout"}  # saved before the key
        record.write_text(json.dumps({"fingerprint": {"config": old}, "seconds": 12.0}))
        assert _finished(record, train_fingerprint(new, root), root) == done, lora
        # a run recorded with the key matches itself either way
        record.write_text(json.dumps({"fingerprint": {"config": new}, "seconds": 3.0}))
        assert _finished(record, train_fingerprint(new, root), root) == 3.0


def test_a_run_recorded_before_share_prefix_forward_is_not_the_run_its_default_asks_for(
    tmp_path,
):
    """share_prefix_forward=True (the default) computes the same up to rounding, which over a
    run is other weights: a run recorded before the key existed is the run it asks for only
    at False."""
    from realjudge.reproduce.runner import _finished, train_fingerprint
    from realjudge.train.config import build_config

    root = tmp_path / "r"
    out = str(root / "seed0" / "SFT")
    new = build_config("sft", overrides={"out": out}).to_dict()
    assert new["share_prefix_forward"] is True
    old = {k: v for k, v in new.items() if k != "share_prefix_forward"}
    record = tmp_path / "done.json"
    record.write_text(json.dumps({"fingerprint": {"config": old}, "seconds": 12.0}))
    assert _finished(record, train_fingerprint(new, root), root) is None
    off = {**new, "share_prefix_forward": False}
    assert _finished(record, train_fingerprint(off, root), root) == 12.0


def _record(path, fingerprint, seconds, at):
    """Write a finished-work record dated ``at`` (seconds since the epoch)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fingerprint": fingerprint, "seconds": seconds}))
    os.utime(path, (at, at))


def test_a_warm_started_run_is_named_by_the_run_it_started_from(tmp_path):
    """REAL starts from {out}/seed0/TRACT: its record stands for the TRACT run recorded when it
    was trained. Records written before the starting run's fingerprint was kept stand for the
    TRACT recorded in their dir when that record is not newer than theirs."""
    import os

    from realjudge.reproduce.runner import (
        _adopt,
        _finished,
        _same_model,
        _unfinished_checkpoint,
        run_fingerprint,
        train_fingerprint,
    )
    from realjudge.train.config import build_config
    from realjudge.train.modeling import STATE_FILE

    root = tmp_path / "r"
    tract, real = root / "seed0" / "TRACT", root / "seed0" / "REAL"
    data = root / "data"

    def tract_fp(lr):
        cfg = build_config("tract", overrides={"out": str(tract), "learning_rate": lr})
        return run_fingerprint(cfg.to_dict(), root, None, data)

    child = build_config("real", overrides={"out": str(real), "init_from": str(tract)}).to_dict()
    _record(tract / DONE_FILE, tract_fp(1e-5), 5.0, at=1000)
    wanted_a = run_fingerprint(child, root, tract, data)
    assert wanted_a["init_fingerprint"] == tract_fp(1e-5)
    _record(real / DONE_FILE, wanted_a, 7.0, at=2000)
    assert _finished(real / DONE_FILE, wanted_a, root) == 7.0

    # TRACT trained again with another learning rate: REAL started from the old one
    _record(tract / DONE_FILE, tract_fp(1e-3), 5.0, at=3000)
    wanted_b = run_fingerprint(child, root, tract, data)
    assert wanted_b != wanted_a and _finished(real / DONE_FILE, wanted_b, root) is None

    # a record from before init_fingerprint: the TRACT recorded before it, if unchanged
    legacy = train_fingerprint(child, root)
    assert "init_fingerprint" not in legacy
    _record(tract / DONE_FILE, tract_fp(1e-5), 5.0, at=1000)
    _record(real / DONE_FILE, legacy, 7.0, at=2000)
    assert _finished(real / DONE_FILE, wanted_a, root) == 7.0
    assert _finished(real / DONE_FILE, wanted_b, root) is None
    # ... not once TRACT is recorded after it (retrained with the same settings or others)
    for lr in (1e-3, 1e-5):
        _record(tract / DONE_FILE, tract_fp(lr), 5.0, at=3000)
        wanted = run_fingerprint(child, root, tract, data)
        assert _finished(real / DONE_FILE, wanted, root) is None

    # a checkpoint of a killed REAL resumes only if TRACT was recorded before it was written
    (real / DONE_FILE).unlink()
    ckpt = real / "checkpoints" / "step-000001"
    build_config("real", overrides={"out": str(real), "init_from": str(tract)}).save(ckpt)
    (ckpt / STATE_FILE).write_text("{}")
    os.utime(ckpt, (2000, 2000))
    _record(tract / DONE_FILE, tract_fp(1e-5), 5.0, at=1000)
    assert _unfinished_checkpoint(real, run_fingerprint(child, root, tract, data), root) == ckpt
    _record(tract / DONE_FILE, tract_fp(1e-5), 5.0, at=3000)
    assert _unfinished_checkpoint(real, run_fingerprint(child, root, tract, data), root) is None

    # --reuse: a dir whose REAL started from another TRACT is not copied from
    other = tmp_path / "other"
    o_tract, o_real = other / "seed0" / "TRACT", other / "seed0" / "REAL"
    o_child = build_config(
        "real", overrides={"out": str(o_real), "init_from": str(o_tract)}
    ).to_dict()
    _record(o_tract / DONE_FILE, tract_fp(1e-5), 5.0, at=1000)
    _record(o_real / DONE_FILE, train_fingerprint(o_child, other), 7.0, at=2000)
    _record(tract / DONE_FILE, tract_fp(1e-3), 5.0, at=3000)  # here: the other TRACT
    assert _adopt(real, root, [other], run_fingerprint(child, root, tract, data)) is None
    # (an evaluation of REAL is adopted only from a dir whose REAL is this one)
    _record(real / DONE_FILE, run_fingerprint(child, root, tract, data), 7.0, at=4000)
    assert not _same_model(real, root, other)
    _record(tract / DONE_FILE, tract_fp(1e-5), 5.0, at=3000)  # here: the same TRACT
    _record(real / DONE_FILE, run_fingerprint(child, root, tract, data), 7.0, at=4000)
    assert _same_model(real, root, other)
    assert _adopt(real, root, [other], run_fingerprint(child, root, tract, data)) == 7.0
    assert _finished(real / DONE_FILE, run_fingerprint(child, root, tract, data), root) == 7.0


def test_runs_started_from_a_retrained_run_are_redone_not_reused(tmp_path):
    """TRACT retrained with another learning rate: GRPO (started from it) is trained again,
    in place and instead of being copied from a --reuse dir that holds the old one."""
    import hashlib

    common = dict(
        preset="cpu-embedded", model="tiny", smoke=True, set=["freeze_layers=1"], only=["GRPO"]
    )
    a, b = tmp_path / "a", tmp_path / "b"
    first = run_reproduce(ReproduceConfig(**common, out=str(a)))
    assert [r["name"] for r in first["runs"]] == ["base", "TRACT", "GRPO"]

    def weights(out, run):
        path = out / "seed0" / run / "model.safetensors"
        return hashlib.sha256(path.read_bytes()).hexdigest()

    old = weights(a, "GRPO")
    changed = {**common, "set": [*common["set"], "TRACT.learning_rate=3e-2"]}
    run_reproduce(ReproduceConfig(**changed, out=str(b), reuse=[str(a)]))
    assert weights(b, "TRACT") != weights(a, "TRACT")
    assert weights(b, "GRPO") != old  # trained from b's TRACT, not a's GRPO copied
    # in place: the same settings, so the same weights as b's
    run_reproduce(ReproduceConfig(**changed, out=str(a)))
    assert weights(a, "GRPO") == weights(b, "GRPO") != old
    for bench in ("embedded-test", "embedded-ood"):
        rel = f"seed0/GRPO/eval-{bench}/predictions.jsonl"
        assert (a / rel).read_text() == (b / rel).read_text()


def _vicuna_like(path):
    """A small Prometheus-like file: 8 questions, 2 graded responses each."""
    from realjudge.data.loaders import write_jsonl
    from realjudge.data.records import JudgeRecord

    records = [
        JudgeRecord(
            id=f"{q}-{k}",
            instruction=f"question {q}",
            response=f"answer {k}",
            gold=float(1 + 3 * k),
            group_id=f"q{q}",
        )
        for q in range(8)
        for k in range(2)
    ]
    write_jsonl(records, path)
    return path


def test_a_vicuna_split_is_recorded_and_never_remade_under_finished_work(tmp_path):
    """The split's settings and digest are recorded next to it; a split the preset's settings
    no longer make is refused (the dir's finished work used it); the fingerprints hold the
    split's digest, and a record older than that key stands for its own dir's split."""
    import os

    from realjudge.reproduce.runner import (
        SPLIT_FILES,
        SPLIT_RECORD,
        SplitMismatchError,
        _finished,
        prepare_data,
        run_fingerprint,
        split_digest,
        train_fingerprint,
    )
    from realjudge.train.config import build_config

    src = _vicuna_like(tmp_path / "vicuna.jsonl")
    exp = resolve(ReproduceConfig(preset="cpu-vicuna"))
    exp.vicuna_split = {"path": str(src), "test_fraction": 0.25}
    root = tmp_path / "r"
    data = root / "data"
    prepare_data(exp, data)
    record = json.loads((data / SPLIT_RECORD).read_text())
    assert record["settings"]["test_fraction"] == 0.25
    assert record["sha256"] == split_digest(data) is not None
    assert sum(1 for _ in open(data / SPLIT_FILES[1])) == 4  # 2 of 8 questions held out

    def stamps():
        return [os.stat(data / name).st_mtime_ns for name in SPLIT_FILES]

    before = stamps()
    prepare_data(exp, data)  # the same settings: kept
    (data / SPLIT_RECORD).unlink()  # a split written before the record: kept, now recorded
    prepare_data(exp, data)
    assert stamps() == before and json.loads((data / SPLIT_RECORD).read_text()) == record

    other = resolve(ReproduceConfig(preset="cpu-vicuna"))
    other.vicuna_split = {"path": str(src), "test_fraction": 0.5}
    for with_record in (True, False):
        if not with_record:
            (data / SPLIT_RECORD).unlink()
        with pytest.raises(SplitMismatchError, match="use another --out"):
            prepare_data(other, data)
        assert stamps() == before

    # the fingerprints hold the split's digest
    def raft(home):
        overrides = {"out": str(home / "seed0" / "RAFT"), "data": str(home / "data" / "x")}
        return build_config("raft", overrides=overrides).to_dict()

    wanted = run_fingerprint(raft(root), root, None, data)
    assert wanted["data_split"] == split_digest(data)
    done = root / "seed0" / "RAFT" / DONE_FILE
    _record(done, train_fingerprint(raft(root), root), 4.0, at=1000)  # older than the key
    assert _finished(done, wanted, root) == 4.0
    # a dir with another split: its record of the same config is not this work
    home = tmp_path / "other"
    prepare_data(other, home / "data")
    assert split_digest(home / "data") != split_digest(data)
    theirs = home / "seed0" / "RAFT" / DONE_FILE
    _record(theirs, train_fingerprint(raft(home), home), 4.0, at=1000)
    assert _finished(theirs, wanted, home) is None
    _record(theirs, run_fingerprint(raft(home), home, None, home / "data"), 4.0, at=1000)
    assert _finished(theirs, wanted, home) is None


def test_same_seed_reruns_agree_and_reuse_copies_finished_runs(tmp_path):
    """Two fresh runs with the same seed give the same numbers (CPU); a sweep that names the
    first as --reuse takes its RAFT run (weights hard-linked) and trains only the variant."""
    common = dict(
        preset="cpu-embedded", model="tiny", smoke=True, set=["freeze_layers=1"], only=["RAFT"]
    )
    first = run_reproduce(ReproduceConfig(**common, out=str(tmp_path / "a")))
    second = run_reproduce(ReproduceConfig(**common, out=str(tmp_path / "b")))
    assert second["per_seed"] == first["per_seed"]

    sweep = ReproduceConfig(
        **common,
        out=str(tmp_path / "sweep"),
        variants=["RAFT:learning_rate=1e-3"],
        reuse=[str(tmp_path / "a")],
    )
    res = run_reproduce(sweep)
    src = tmp_path / "a" / "seed0" / "RAFT" / "model.safetensors"
    dst = tmp_path / "sweep" / "seed0" / "RAFT" / "model.safetensors"
    assert dst.stat().st_ino == src.stat().st_ino  # reused, not retrained
    assert res["timings_s"]["RAFT"] == first["timings_s"]["RAFT"]
    assert res["per_seed"]["RAFT"] == first["per_seed"]["RAFT"]
    assert (
        tmp_path / "sweep" / "seed0" / "RAFT_learning_rate=1e-3_" / "model.safetensors"
    ).is_file()
    md = (tmp_path / "sweep" / "results.md").read_text()
    assert "### Sweep: each variant against the run it varies" in md
    assert "| RAFT[learning_rate=1e-3] | RAFT |" in md

    # the copy's records now belong to the sweep dir: a rerun there reuses it in place
    again = run_reproduce(ReproduceConfig(**{**sweep.__dict__, "reuse": []}))
    assert dst.stat().st_ino == src.stat().st_ino
    assert again["per_seed"] == res["per_seed"]


def test_an_evaluation_is_reused_only_with_its_own_model(tmp_path):
    """A run retrained with other settings next to a --reuse dir that holds the old run and its
    evaluations: the new model is evaluated, not given the old model's numbers (the
    evaluation's settings name the model by its path only)."""
    common = dict(
        preset="cpu-embedded", model="tiny", smoke=True, set=["freeze_layers=1"], only=["RAFT"]
    )
    old = run_reproduce(ReproduceConfig(**common, out=str(tmp_path / "a")))
    changed = {**common, "set": [*common["set"], "RAFT.learning_rate=3e-2"]}
    new = run_reproduce(
        ReproduceConfig(**changed, out=str(tmp_path / "b"), reuse=[str(tmp_path / "a")])
    )
    for bench in ("embedded-test", "embedded-ood"):
        rel = f"seed0/RAFT/eval-{bench}/predictions.jsonl"
        assert (tmp_path / "b" / rel).read_text() != (tmp_path / "a" / rel).read_text()
    assert new["per_seed"]["RAFT"] != old["per_seed"]["RAFT"]
    # the base model's evaluations (a model outside the run dirs) are still adopted
    base = "base/eval-embedded-test/predictions.jsonl"
    assert (tmp_path / "b" / base).read_text() == (tmp_path / "a" / base).read_text()


@pytest.mark.integration
def test_a_killed_reproduce_resumes_its_training_run_mid_run(tmp_path, run_until_killed):
    """``realjudge reproduce`` SIGKILLed in the middle of a training run (step 2's update done,
    step 1 checkpointed): run again, it continues that run from its checkpoint and ends with
    the numbers of an uninterrupted reproduce."""
    import hashlib

    import yaml

    from realjudge.train.modeling import latest_checkpoint

    common = dict(
        preset="cpu-embedded",
        model="tiny",
        smoke=True,  # 2 steps per run
        set=["freeze_layers=1", "save_steps=1"],
        only=["RAFT"],
    )
    first = run_reproduce(ReproduceConfig(**common, out=str(tmp_path / "a")))

    out = tmp_path / "b"
    args = ["reproduce", "--model", "tiny", "--smoke", "--only", "RAFT", "--out", str(out)]
    run_until_killed(args + ["--set", "freeze_layers=1", "--set", "save_steps=1"], "step-2/updated")
    run_dir = out / "seed0" / "RAFT"
    assert latest_checkpoint(run_dir).name == "step-000001"
    assert not (out / "results.json").exists()

    second = run_reproduce(ReproduceConfig(**common, out=str(out)))
    saved = yaml.safe_load((run_dir / "train_config.yaml").read_text())
    assert saved["resume"] is True  # continued from step 1, not started over
    assert not (run_dir / "checkpoints").exists()  # removed once the run was exported
    for key in ("per_seed", "aggregate", "curves", "claims"):
        assert second[key] == first[key], key
    assert second["curves"]["RAFT"]["0"]  # the periodic evaluation before the kill is kept

    def digest(d):
        return hashlib.sha256((d / "seed0" / "RAFT" / "model.safetensors").read_bytes()).digest()

    assert digest(out) == digest(tmp_path / "a")


def test_powered_preset_has_the_designed_power():
    exp = resolve(ReproduceConfig(preset="cpu-powered"))
    assert exp.seeds >= 3
    assert all((b.limit or 0) >= 200 for b in exp.benchmarks)
    real, grpo = exp.run("REAL"), exp.run("GRPO")
    assert real.max_steps == grpo.max_steps >= 100
    assert real.overrides["num_generations"] >= 8
    # the "more training" control sees as many prompts as an RL run
    more = exp.run("TRACT+")
    assert more.init_from == "TRACT" == real.init_from
    rl_prompts = real.max_steps * real.overrides["batch_size"]
    assert more.max_steps * more.overrides["batch_size"] == rl_prompts
    # curves (what budgets are read from) come from the validation split, not a test split
    assert exp.validation is not None and exp.validation.split == "validation"
    assert exp.validation.name not in {b.name for b in exp.benchmarks}


def test_raft_start_preset_pairs_rl_runs_from_one_raft_judge():
    """REAL and GRPO start from the same RAFT judge with identical rollout budgets; RAFT+ (the
    "more training" control) sees as many prompts as an RL run; RAFT is tuned on the
    validation split; RAFT+ is one of the baselines the claims check."""
    from realjudge.reproduce.report import claims_of

    exp = resolve(ReproduceConfig(preset="cpu-raft-start"))
    assert exp.seeds >= 3 and all((b.limit or 0) >= 200 for b in exp.benchmarks)
    real, grpo, more = exp.run("REAL"), exp.run("GRPO"), exp.run("RAFT+")
    assert real.init_from == grpo.init_from == more.init_from == "RAFT"
    assert real.max_steps == grpo.max_steps
    for key in ("batch_size", "num_generations", "temperature", "top_p", "learning_rate"):
        assert real.overrides[key] == grpo.overrides[key], key
    rl_prompts = real.max_steps * real.overrides["batch_size"]
    assert more.max_steps * more.overrides["batch_size"] == rl_prompts
    assert not exp.run("RAFT").cot and not more.cot and real.cot and grpo.cot
    assert exp.run("RAFT").overrides["load_best_model_at_end"]
    assert exp.validation is not None and exp.validation.split == "validation"
    names = [r.name for r in exp.runs]
    per_seed = {n: {"0": {"embedded-test": {"pearson": 0.5}}} for n in names}
    claims = claims_of(
        {
            "runs": [{"name": n} for n in names],
            "per_seed": per_seed,
            "in_domain": ["embedded-test"],
            "out_of_domain": [],
        }
    )
    assert [c.text.split(" (")[0] for c in claims[:3]] == [
        "REAL above RAFT",
        "REAL above RAFT+",
        "REAL above GRPO",
    ]


def test_raft_tract_preset_starts_rl_from_tract_on_cpu_raft_starts_raft():
    """cpu-raft-tract: TRACT trains from RAFT, then REAL, GRPO and TRACT+ start from that
    TRACT with equal prompt budgets; its RAFT and base runs are cpu-raft-start's, run for run
    (so --reuse adopts them); RAFT, TRACT and TRACT+ are the baselines the claims check."""
    from realjudge.reproduce.report import claims_of

    exp = resolve(ReproduceConfig(preset="cpu-raft-tract"))
    other = resolve(ReproduceConfig(preset="cpu-raft-start"))
    assert exp.run("RAFT") == other.run("RAFT") and exp.run("base") == other.run("base")
    assert exp.common == other.common and exp.benchmarks == other.benchmarks
    assert exp.run("TRACT").init_from == "RAFT"
    real, grpo, more = exp.run("REAL"), exp.run("GRPO"), exp.run("TRACT+")
    assert real.init_from == grpo.init_from == more.init_from == "TRACT"
    assert real.max_steps * real.overrides["batch_size"] == (
        more.max_steps * more.overrides["batch_size"]
    )
    assert exp.seeds >= 3 and exp.validation is not None
    names = [r.name for r in exp.runs]
    per_seed = {n: {"0": {"embedded-test": {"pearson": 0.5}}} for n in names}
    results = {
        "runs": [{"name": n} for n in names],
        "per_seed": per_seed,
        "in_domain": ["embedded-test"],
        "out_of_domain": [],
    }
    texts = [c.text.split(" (")[0] for c in claims_of(results)]
    assert texts[:4] == [
        "REAL above RAFT",
        "REAL above TRACT",
        "REAL above TRACT+",
        "REAL above GRPO",
    ]


def test_validation_curves_and_check_curves_are_recorded(tmp_path):
    cfg = ReproduceConfig(
        preset="cpu-powered",
        model="tiny",
        smoke=True,
        only=["TRACT+", "RAFT"],
        set=["freeze_layers=1"],
        out=str(tmp_path / "p"),
        command="x",
    )
    res = run_reproduce(cfg)
    assert [r["name"] for r in res["runs"]] == ["base", "RAFT", "TRACT", "TRACT+"]
    raft = json.loads((tmp_path / "p" / "seed0" / "RAFT" / "metrics.json").read_text())
    assert raft["best_step"] in (1, 2)  # tuned on the validation split
    cfg_used = json.loads((tmp_path / "p" / "seed0" / "TRACT+" / "realjudge.json").read_text())
    assert cfg_used["config"]["eval_split"] == "validation"
    assert res["curve"]["benchmark"] == "embedded-validation"
    assert res["curves"]["TRACT+"]["0"]  # periodic evaluation points
    assert res["check_curves"]["TRACT"]["0"]  # CoT evaluation of the embedded task
    assert "TRACT+" in {c["claim"].split(" above ")[-1].split(" (")[0] for c in res["claims"]}


def test_explicit_flags_win_over_smoke():
    """--smoke shrinks the preset; --set, --eval-limit and --seeds given with it still hold."""
    from realjudge.reproduce.runner import ReproduceConfig, resolve

    over = dict(seeds=3, eval_limit=10, set=["REAL.max_steps=5", "batch_size=4"])
    exp = resolve(ReproduceConfig(preset="cpu-embedded", smoke=True, **over))
    real = exp.run("REAL")
    assert exp.seeds == 3 and {b.limit for b in exp.benchmarks} == {10}
    assert real.max_steps == 5 and real.overrides["batch_size"] == 4
    smoke = resolve(ReproduceConfig(preset="cpu-embedded", smoke=True))
    assert smoke.run("REAL").max_steps == 2 and {b.limit for b in smoke.benchmarks} == {4}


def test_output_dir_defaults_to_the_preset_name(tmp_path):
    cfg = ReproduceConfig(preset="cpu-embedded")
    assert output_dir(cfg, resolve(cfg)) == (Path("runs") / "reproduce-cpu-embedded").resolve()
    cfg = ReproduceConfig(preset="cpu-embedded", out=str(tmp_path / "x"))
    assert output_dir(cfg, resolve(cfg)) == tmp_path / "x"
