"""The main job's pipeline, on the tiny model with a few steps: stages chain, table is written;
the model spec is checked and followed before any work."""

import json

import pytest

from realjudge.models import ModelNotFound
from realjudge.quickstart import (
    ModelFacts,
    QuickstartConfig,
    Stage,
    inspect_model,
    run_quickstart,
    stage_overrides,
)


@pytest.mark.integration
def test_quickstart_runs_every_stage_and_writes_the_table(tmp_path, capsys):
    cfg = QuickstartConfig(
        out=str(tmp_path / "qs"),
        model="tiny",
        stages=[
            Stage("tract", 2, {"batch_size": 2, "learning_rate": 1e-3}),
            Stage("real", 1, {"batch_size": 2, "num_generations": 2, "learning_rate": 1e-3}),
        ],
        eval_limit=5,
        max_new_tokens=6,
        eval_each_stage=True,
    )
    summary = run_quickstart(cfg)
    assert list(summary["results"]) == ["before", "after tract", "after real"]
    for row in summary["results"].values():
        assert set(row) == {"test", "ood"} and all(v["n"] == 5 for v in row.values())
    # REAL warm-started from the TRACT stage's exported model
    real_cfg = (tmp_path / "qs" / "stage2-real" / "train_config.yaml").read_text()
    assert "stage1-tract" in real_cfg
    saved = json.loads((tmp_path / "qs" / "summary.json").read_text())
    assert saved["final_model"].endswith("stage2-real")
    # the machine its timings belong to
    assert {"cpu", "cpu_bf16_features", "train_mixed_precision"} <= set(saved["environment"])
    assert "after real" in (tmp_path / "qs" / "summary.md").read_text()
    printed = capsys.readouterr().out
    assert "after real" in printed
    assert "change after training, test (5 items, paired bootstrap 95%)" in printed
    assert set(saved["change"]) == {"test", "ood"} and saved["change"]["test"]["n"] == 5


@pytest.mark.integration
def test_quickstart_evaluates_before_and_after_only_by_default(tmp_path, capsys):
    cfg = QuickstartConfig(
        out=str(tmp_path / "qs"),
        model="tiny",
        stages=[
            Stage("tract", 1, {"batch_size": 2, "learning_rate": 1e-3}),
            Stage("real", 1, {"batch_size": 2, "num_generations": 2, "learning_rate": 1e-3}),
        ],
        eval_limit=4,
        max_new_tokens=6,
    )
    saved = run_quickstart(cfg)
    out = tmp_path / "qs"
    assert list(saved["results"]) == ["before", "after real"]
    assert not (out / "eval-stage1-test").exists() and (out / "eval-stage2-test").is_dir()
    assert "change after training, ood (4 items" in capsys.readouterr().out


def test_quickstart_cli_builds_its_config(monkeypatch):
    from realjudge import quickstart
    from realjudge.cli import main

    seen = []
    monkeypatch.setattr(quickstart, "run_quickstart", seen.append)
    argv = ["quickstart", "--eval-limit", "7", "--steps", "3", "2", "--eval-each-stage"]
    assert main(argv + ["--out", "x"]) == 0
    (cfg,) = seen
    assert cfg.eval_limit == 7 and cfg.eval_each_stage and cfg.out == "x"
    assert [s.max_steps for s in cfg.stages] == [3, 2]
    assert all(s.freeze_fraction == 0.5 for s in cfg.stages)
    assert QuickstartConfig().eval_limit == 80 and not QuickstartConfig().eval_each_stage


def test_quickstart_warm_start_is_tract_or_raft(monkeypatch):
    """--start picks the supervised stage REAL starts from (RAFT by default); its budget
    follows unless --steps sets it, and an unknown start is refused by argparse and by
    default_stages."""
    from realjudge import quickstart
    from realjudge.cli import main

    seen = []
    monkeypatch.setattr(quickstart, "run_quickstart", seen.append)
    assert main(["quickstart", "--start", "tract", "--out", "x"]) == 0
    assert main(["quickstart", "--out", "x"]) == 0
    assert main(["quickstart", "--start", "raft", "--steps", "5", "1", "--out", "x"]) == 0
    tract, raft, short = ([(s.method, s.max_steps) for s in cfg.stages] for cfg in seen)
    assert tract == [("tract", 200), ("real", 6)]
    assert raft == [("raft", 250), ("real", 6)]
    assert short == [("raft", 5), ("real", 1)]
    optimiser = ("learning_rate", "batch_size", "warmup_steps")
    assert all(seen[1].stages[0].overrides[k] == seen[0].stages[0].overrides[k] for k in optimiser)
    # RAFT keeps its best weights on the validation split, never the test split; TRACT has
    # no selection
    raft_over = seen[1].stages[0].overrides
    assert raft_over["load_best_model_at_end"] and raft_over["eval_split"] == "validation"
    assert raft_over["eval_mode"] == "score" and raft_over["eval_steps"] > 0
    assert "load_best_model_at_end" not in seen[0].stages[0].overrides
    with pytest.raises(SystemExit):
        main(["quickstart", "--start", "sft", "--out", "x"])
    with pytest.raises(ValueError, match="start must be one of"):
        quickstart.default_stages("grpo")


def test_freeze_layers_format_and_device_follow_the_model():
    cfg = QuickstartConfig(out="o", device="cpu")
    embedded = stage_overrides(cfg, ModelFacts(layers=30), 0, None)
    assert embedded["freeze_layers"] == 15 and embedded["fmt"] == "result"
    assert embedded["device"] == "cpu" and "init_from" not in embedded
    trained = ModelFacts(layers=2, fmt="overall", normalize=False)
    tiny = stage_overrides(cfg, trained, 1, "o/stage1-tract")
    assert tiny["freeze_layers"] == 1 and tiny["init_from"] == "o/stage1-tract"
    assert tiny["fmt"] == "overall" and tiny["rail_normalize"] is False
    # an explicit freeze_layers wins, but must fit the model
    cfg.stages[0].overrides["freeze_layers"] = 3
    assert stage_overrides(cfg, ModelFacts(layers=30), 0, None)["freeze_layers"] == 3
    with pytest.raises(ValueError, match="freeze_layers=3 but --model 'embedded' has 2 layers"):
        stage_overrides(cfg, ModelFacts(layers=2), 0, None)
    # a LoRA stage freezes nothing (the two are alternatives)
    cfg.stages[1].overrides["lora"] = True
    assert "freeze_layers" not in stage_overrides(cfg, ModelFacts(layers=30), 1, None)


def test_inspect_model_reads_layers_and_format_without_weights(tmp_path):
    from transformers import LlamaConfig

    assert inspect_model("tiny") == ModelFacts(layers=2)
    ckpt = tmp_path / "judge"
    LlamaConfig(num_hidden_layers=5).save_pretrained(ckpt)  # a config, no weights
    assert inspect_model(str(ckpt)) == ModelFacts(layers=5)
    (ckpt / "realjudge.json").write_text(json.dumps({"format": "overall", "rail_normalize": False}))
    assert inspect_model(str(ckpt)) == ModelFacts(layers=5, fmt="overall", normalize=False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{tmp}/missing", "no such directory; --model takes 'embedded', 'tiny', a checkpoint"),
        ("./no/such/run", "no such directory"),
        ("tiny-model", "no such directory"),
        ("{tmp}", "is a directory without config.json: not a transformers checkpoint"),
        ("{tmp}/file.txt", "is a file; it takes 'embedded'"),
        ("owner/bad name!", "is not a valid hub id"),
    ],
)
def test_a_bad_model_spec_is_refused_before_any_work(tmp_path, capsys, spec, message):
    from realjudge.cli import main

    (tmp_path / "file.txt").write_text("x")
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(ModelNotFound, match="--model"):
        inspect_model(spec)
    out = tmp_path / "qs"
    assert main(["quickstart", "--model", spec, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("realjudge quickstart: error: --model") and message in err
    assert not out.exists()  # refused before the run directory was made


def test_a_bad_stage_config_is_refused_before_any_work(tmp_path):
    cfg = QuickstartConfig(out=str(tmp_path / "qs"), model="tiny")
    cfg.stages[1].overrides["num_generatons"] = 4
    with pytest.raises(ValueError, match="did you mean 'num_generations'"):
        run_quickstart(cfg)
    assert not (tmp_path / "qs").exists()


@pytest.mark.integration
def test_quickstart_cli_runs_the_default_stages_on_tiny(tmp_path, capsys):
    """The main job as a user types it, on `--model tiny` with the smallest budget: the
    default stages (half the layers frozen, sized for the 30-layer embedded model) adapt."""
    from realjudge.cli import main

    out = tmp_path / "qs"
    argv = ["quickstart", "--model", "tiny", "--steps", "1", "1", "--eval-limit", "2"]
    assert main(argv + ["--max-new-tokens", "4", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["results"]) == ["before", "after real"]
    assert summary["final_model"].endswith("stage2-real")
    for stage in ("stage1-raft", "stage2-real"):
        saved = (out / stage / "train_config.yaml").read_text()
        assert "freeze_layers: 1\n" in saved and "max_steps: 1\n" in saved
    raft = json.loads((out / "stage1-raft" / "metrics.json").read_text())
    assert raft["best_step"] == 1 and raft["final_eval"]["n"] == 60  # validation selection
    assert "change after training, test (2 items" in capsys.readouterr().out
