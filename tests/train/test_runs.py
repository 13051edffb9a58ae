"""Whole training runs on the tiny model: resume, LoRA, warm starts, export, robustness."""

from __future__ import annotations

import json

import pytest
import torch

from realjudge.models import build_tiny_model, load_model
from realjudge.train import train
from realjudge.train.modeling import load_init_from
from realjudge.train.supervised import SFTObjective
from realjudge.train.trainer import RunExistsError

from ._helpers import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quick_config,
    weights_digest,
)


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.parametrize(
    "steps,extra",
    [
        pytest.param(2, {}, id="real"),
        pytest.param(
            4,
            {
                "lora": True,
                "lora_r": 4,
                "ppo_epochs": 2,
                "clip_eps": 0.2,
                "lr_scheduler": "linear",
                "warmup_steps": 1,
            },
            id="real-lora-clip",
            marks=pytest.mark.integration,
        ),
    ],
)
def test_resumed_run_ends_like_an_uninterrupted_one(tmp_path, steps, extra):
    """REAL (sampling, data order, Adam state): stop after half the steps, resume to the end."""
    common = dict(
        max_steps=steps,
        save_steps=steps // 2,
        eval_data=str(tmp_path / "data.jsonl"),
        eval_mode="score",
        eval_limit=4,
        digest_params=True,
        **extra,
    )
    full = train(quick_config("real", tmp_path, name="full", **common))
    assert not full.interrupted and full.step == steps

    part = train(quick_config("real", tmp_path, name="part", **common), stop_after=steps // 2)
    out = part.out
    assert part.interrupted and part.step == steps // 2
    assert (out / "checkpoints" / f"step-{steps // 2:06d}" / "trainer_state.json").is_file()
    assert not (out / "model.safetensors").exists()  # no export from an interrupted run
    resumed = train(quick_config("real", tmp_path, name="part", resume=True, **common))
    assert resumed.step == steps

    assert weights_digest(full.out) == weights_digest(out)
    m_full = json.loads((full.out / "metrics.json").read_text())
    m_res = json.loads((out / "metrics.json").read_text())
    assert m_full["final_eval"] == m_res["final_eval"]
    assert m_full["param_digests"] == m_res["param_digests"]
    assert _without_time(_log(full.out)) == _without_time(_log(out))


def test_lora_trains_adapters_and_exports_a_merged_model(tmp_path, tokenizer):
    res = train(
        quick_config(
            "sft",
            tmp_path,
            lora=True,
            lora_r=4,
            lora_alpha=8,
            lora_target_modules=["q_proj", "v_proj"],
            max_steps=2,
            learning_rate=1e-2,
        )
    )
    lm = load_model(str(res.out), device="cpu", dtype="float32")
    state = lm.model.state_dict()
    assert not any("lora" in k for k in state)
    base = build_tiny_model(tokenizer, seed=0).state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(state[q], base[q])  # adapters merged in
    for k in ("model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"):
        assert torch.equal(state[k], base[k])  # frozen under LoRA
    meta = json.loads((res.out / "realjudge.json").read_text())
    assert meta["method"] == "sft" and meta["config"]["lora"] is True


def test_freeze_layers_trains_only_the_upper_layers(tmp_path, tokenizer):
    res = train(quick_config("tract", tmp_path, freeze_layers=1, max_steps=2, learning_rate=1e-2))
    state = load_model(str(res.out), device="cpu", dtype="float32").model.state_dict()
    base = build_tiny_model(tokenizer, seed=0).state_dict()
    frozen = [k for k in state if k.startswith(("model.embed_tokens.", "model.layers.0."))]
    trained = [k for k in state if k.startswith("model.layers.1.") and k.endswith("proj.weight")]
    assert frozen and trained
    assert all(torch.equal(state[k], base[k]) for k in frozen)
    assert all(not torch.equal(state[k], base[k]) for k in trained)


def test_freeze_layers_is_checked(tmp_path):
    from realjudge.train.config import ConfigError

    with pytest.raises(ConfigError, match="alternatives"):
        quick_config("sft", tmp_path, freeze_layers=1, lora=True)
    with pytest.raises(ValueError, match="has 2 layers"):
        train(quick_config("sft", tmp_path, freeze_layers=3))


def test_warm_start_from_another_methods_output(tmp_path):
    sft = train(quick_config("sft", tmp_path, max_steps=2, learning_rate=1e-2))
    warm = train(quick_config("raft", tmp_path, name="warm", init_from=str(sft.out), max_steps=1))
    direct = train(quick_config("raft", tmp_path, name="direct", model=str(sft.out), max_steps=1))
    cold = train(quick_config("raft", tmp_path, name="cold", max_steps=1))
    # step 1 is computed with the starting weights
    assert _log(warm.out)[0]["loss"] == pytest.approx(_log(direct.out)[0]["loss"], abs=1e-6)
    assert _log(warm.out)[0]["loss"] != pytest.approx(_log(cold.out)[0]["loss"], abs=1e-6)
    meta = json.loads((warm.out / "realjudge.json").read_text())
    assert meta["method"] == "raft" and meta["init_from"] == str(sft.out)


def test_warm_start_from_a_lora_checkpoint_dir_merges_it(tmp_path):
    lora = train(
        quick_config(
            "sft", tmp_path, lora=True, lora_r=4, max_steps=2, save_steps=1, learning_rate=1e-2
        )
    )
    ckpt = lora.out / "checkpoints" / "step-000002"
    model, tok = load_init_from(ckpt, "float32")
    exported = load_model(str(lora.out), device="cpu", dtype="float32").model.state_dict()
    got = model.state_dict()
    assert not any("lora" in k for k in got)
    for k, v in exported.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6)
    # an interrupted run dir (no export) resolves to its latest checkpoint
    interrupted = tmp_path / "interrupted"
    (interrupted / "checkpoints").mkdir(parents=True)
    ckpt.rename(interrupted / "checkpoints" / ckpt.name)
    model2, _ = load_init_from(interrupted, "float32")
    for k, v in got.items():
        assert torch.equal(model2.state_dict()[k], v)


def test_non_finite_loss_skips_the_update_and_goes_on(tmp_path, monkeypatch):
    real_loss = SFTObjective.loss
    calls = {"n": 0}

    def flaky(self, ctx, model, rows, norm=None):
        loss, m = real_loss(self, ctx, model, rows, norm)
        calls["n"] += 1
        if calls["n"] == 2:
            loss = loss * float("nan")
        return loss, m

    monkeypatch.setattr(SFTObjective, "loss", flaky)
    res = train(quick_config("sft", tmp_path, max_steps=3))
    skipped = [r["updates/skipped_nonfinite"] for r in _log(res.out) if "loss" in r]
    assert skipped == [0.0, 1.0, 0.0]
    lm = load_model(str(res.out), device="cpu", dtype="float32")
    assert all(torch.isfinite(p).all() for p in lm.model.parameters())


def test_an_existing_run_is_not_overwritten_by_accident(tmp_path):
    train(quick_config("raft", tmp_path, max_steps=1))
    with pytest.raises(RunExistsError, match="resume=true"):
        train(quick_config("raft", tmp_path, max_steps=1))
    res = train(quick_config("raft", tmp_path, max_steps=1, overwrite=True))
    assert res.step == 1


@pytest.mark.parametrize("lora", [False, True], ids=["frozen-copy", "adapters-off"])
def test_kl_penalty_against_the_starting_policy(tmp_path, lora):
    res = train(
        quick_config(
            "real", tmp_path, max_steps=2, kl_coef=0.1, lora=lora, lora_r=4, learning_rate=1e-2
        )
    )
    kl = [r["kl"] for r in _log(res.out) if "kl" in r]
    assert len(kl) == 2 and kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] > 0


def test_warmup_then_constant_learning_rate(tmp_path):
    res = train(quick_config("raft", tmp_path, max_steps=3, warmup_steps=2, learning_rate=1e-3))
    lrs = [r["lr"] for r in _log(res.out) if "lr" in r]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3])


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    train(quick_config("raft", tmp_path, max_steps=1, save_steps=0, save_final=False))
    assert not (tmp_path / "raft" / "checkpoints").exists()
    with pytest.raises(RunExistsError, match="no complete checkpoint"):
        train(quick_config("raft", tmp_path, max_steps=2, resume=True))


def test_a_finished_run_keeps_a_final_checkpoint_and_extends_like_a_longer_run(tmp_path):
    """By default a run ends with a checkpoint: resumed with a larger ``max_steps`` it ends
    where a run of that length does (constant learning rate, so the schedule agrees)."""
    short = train(quick_config("sft", tmp_path, name="ext", max_steps=2))
    ckpts = sorted(p.name for p in (short.out / "checkpoints").iterdir())
    assert ckpts == ["step-000002"]
    extended = train(quick_config("sft", tmp_path, name="ext", max_steps=3, resume=True))
    full = train(quick_config("sft", tmp_path, name="full", max_steps=3))
    assert extended.step == 3 and weights_digest(extended.out) == weights_digest(full.out)


def test_save_total_limit_keeps_the_newest_complete_checkpoints(tmp_path):
    from realjudge.train.modeling import latest_checkpoint

    res = train(quick_config("raft", tmp_path, max_steps=4, save_steps=1, save_total_limit=2))
    names = sorted(p.name for p in (res.out / "checkpoints").iterdir())
    assert names == ["step-000003", "step-000004"]  # no partial dirs left either
    assert latest_checkpoint(res.out).name == "step-000004"


def test_exported_model_is_a_judge(tmp_path):
    from realjudge.data.loaders import load_records
    from realjudge.inference.judge import Judge, JudgeConfig

    res = train(quick_config("raft", tmp_path, max_steps=1))
    lm = load_model(str(res.out), device="cpu", dtype="float32")
    records = load_records(str(tmp_path / "data.jsonl")).records
    rows = Judge(lm.model, lm.tokenizer, JudgeConfig(progress=False)).predict_all(records)
    assert len(rows) == 4 and all(1.0 <= r["prediction"] <= 5.0 for r in rows)
    saved = (res.out / "train_config.yaml").read_text()
    assert "method: raft" in saved


def test_tracker_logs_tensorboard_events(tmp_path):
    res = train(quick_config("sft", tmp_path, max_steps=1, report_to="tensorboard"))
    assert list((res.out / "logs").rglob("events.out.tfevents.*"))


def test_only_complete_checkpoints_count_and_leftovers_are_removed(tmp_path):
    from realjudge.train.modeling import (
        discard_incomplete_checkpoints,
        latest_checkpoint,
    )

    root = tmp_path / "checkpoints"
    for name, complete in [
        ("step-000001", True),
        ("step-000002", True),
        (".partial-step-000003", True),  # state file written, the rename never happened
        ("step-000004", False),  # a directory of the old, non-atomic writes, cut short
        ("step-000005.bak", True),  # not a checkpoint name
    ]:
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path).name == "step-000002"
    gone = discard_incomplete_checkpoints(tmp_path)
    assert sorted(p.name for p in gone) == [".partial-step-000003", "step-000004"]
    assert sorted(p.name for p in root.iterdir()) == [
        "step-000001",
        "step-000002",
        "step-000005.bak",
    ]


def test_resume_drops_redone_and_torn_log_lines(tmp_path):
    from types import SimpleNamespace

    from realjudge.train.trainer import _trim_log

    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    _trim_log(SimpleNamespace(is_main_process=True), log, 2)
    assert log.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n'
    _trim_log(SimpleNamespace(is_main_process=True), log, 1)
    assert log.read_text() == '{"step": 1, "loss": 1.0}\n'


def test_a_resumed_run_counts_the_training_seconds_of_its_earlier_starts(tmp_path):
    """The checkpoint records the seconds trained so far; a resumed run adds its own to them
    (metrics.json's ``train_seconds``, what ``reproduce`` records as the run's time)."""
    common = dict(max_steps=4, save_steps=2)
    part = train(quick_config("sft", tmp_path, name="part", **common), stop_after=2)
    state_file = part.out / "checkpoints" / "step-000002" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert 0 < state["train_seconds"] <= part.train_seconds
    state["train_seconds"] = 1000.0  # as if the first start had taken that long
    state_file.write_text(json.dumps(state))

    resumed = train(quick_config("sft", tmp_path, name="part", resume=True, **common))
    recorded = json.loads((resumed.out / "metrics.json").read_text())["train_seconds"]
    assert recorded == resumed.train_seconds
    assert 1000.0 < recorded < 1000.0 + 600

    fresh = train(quick_config("sft", tmp_path, name="fresh", **common))
    assert 0 < json.loads((fresh.out / "metrics.json").read_text())["train_seconds"] < 600
