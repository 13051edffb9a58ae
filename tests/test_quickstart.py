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
