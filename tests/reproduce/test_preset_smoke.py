"""Smoke versions of the CPU presets, as CI runs them: one seed, a few steps, a few items.

``cpu-embedded`` runs with its own model (the embedded SmolLM2), so its sizes and layer
freezing are checked for real; ``cpu-vicuna`` runs with the tiny model (its ~900-token prompts
would make the embedded model slow here) on the shared Vicuna file, and skips without it.
"""

from __future__ import annotations

import json

import pytest

from realjudge.reproduce.runner import ReproduceConfig, run_reproduce

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.mark.embedded
def test_cpu_embedded_smoke(tmp_path):
    out = tmp_path / "cpu-embedded"
    res = run_reproduce(
        ReproduceConfig(preset="cpu-embedded", smoke=True, out=str(out), set=["max_steps=1"])
    )
    assert [r["name"] for r in res["runs"]] == [
        "base", "SFT", "RAFT", "TRACT", "TRACT-2", "GRPO", "REAL"
    ]  # fmt: skip
    cfg = json.loads((out / "seed0" / "REAL" / "realjudge.json").read_text())["config"]
    assert cfg["freeze_layers"] == 15 and cfg["model"] == "embedded"
    assert (out / "results.md").is_file() and (out / "results.json").is_file()


def test_cpu_vicuna_smoke(tmp_path, vicuna_path, monkeypatch):
    from realjudge.reproduce import presets

    monkeypatch.setitem(presets.PRESETS["cpu-vicuna"].vicuna_split, "path", str(vicuna_path))
    out = tmp_path / "cpu-vicuna"
    res = run_reproduce(
        ReproduceConfig(
            preset="cpu-vicuna",
            model="tiny",
            smoke=True,
            out=str(out),
            set=["freeze_layers=1", "max_steps=1"],
            eval_data=[str(vicuna_path)],
            eval_limit=3,
        )
    )
    train = [json.loads(x) for x in (out / "data" / "vicuna-train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (out / "data" / "vicuna-test.jsonl").read_text().splitlines()]
    # split by question: no question on both sides, every row on one side
    assert not {r["group_id"] for r in train} & {r["group_id"] for r in test}
    assert len(train) + len(test) == 320
    assert res["in_domain"] == ["vicuna-heldout"] and res["out_of_domain"] == ["vicuna_eval"]
