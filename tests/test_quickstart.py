"""The main job's pipeline, on the tiny model with a few steps: stages chain, table is written."""

import json

import pytest

from realjudge.quickstart import QuickstartConfig, Stage, run_quickstart


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
    assert all(s.overrides["freeze_layers"] == 15 for s in cfg.stages)
    assert QuickstartConfig().eval_limit == 80 and not QuickstartConfig().eval_each_stage
