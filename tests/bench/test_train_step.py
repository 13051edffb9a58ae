"""`bench_train_step` / `realjudge bench train-step` on the tiny model: it runs real REAL and
GRPO updates and reports both ratios. No timing assertions (the machines are shared)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch

import realjudge.train.rl as rl
from realjudge.bench import bench_train_step
from realjudge.cli import main

SIZES = dict(prompts=2, group_size=4, max_new_tokens=6, repeats=2, max_prompt_tokens=96)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def written_scores(monkeypatch):
    """The tiny random model never writes a score, so every GRPO reward would be 0 and its
    gradient exactly zero. Give each rollout a sampled score (cycling 1..5) so that the groups'
    binary rewards differ and GRPO has something to learn from."""
    counter = itertools.count()
    original = rl.finish_rollout

    def with_score(*args, **kwargs):
        r = original(*args, **kwargs)
        return dataclasses.replace(r, sampled_score=1 + next(counter) % 5)

    monkeypatch.setattr(rl, "finish_rollout", with_score)


def _check(out: dict) -> None:
    for key in ("time", "cpu_time", "memory", "full_step_time"):
        v = out["ratios"][key]
        assert isinstance(v, float) and math.isfinite(v) and v > 0, (key, v)
    for m in ("real", "grpo"):
        r = out["results"][m]
        assert r["update_s"] > 0 and r["generation_s"] > 0
        assert r["footprint_mib"] is not None and r["footprint_mib"] >= 0
        # each measured step starts from the same weights and moves them by its own gradient
        assert r["grad_norm"] > 0, m
        assert r["weight_change_min"] > 0, m
    assert out["rollouts"]["identical_when_resampled"] is True
    assert out["config"]["rows"] == SIZES["prompts"] * SIZES["group_size"]


def test_bench_train_step_runs_real_updates(written_scores):
    out = bench_train_step(model="tiny", show=False, **SIZES)
    _check(out)
    # the two methods' losses differ: different objectives on the same rollouts
    assert out["results"]["real"]["loss"] != out["results"]["grpo"]["loss"]


def test_bench_train_step_cli_prints_ratios_and_writes_json(written_scores, tmp_path, capsys):
    dest = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "train-step",
            "--model",
            "tiny",
            "--prompts",
            "2",
            "--group-size",
            "4",
            "--max-new-tokens",
            "6",
            "--repeats",
            "2",
            "--max-prompt-tokens",
            "96",
            "--lora",
            "--json",
            str(dest),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert any(ln.startswith("real/grpo step time ratio: ") for ln in lines), text
    assert any(ln.startswith("real/grpo peak memory ratio: ") for ln in lines), text
    out = json.loads(dest.read_text())
    assert out["config"]["lora"] is True
    _check(out)


def test_a_train_step_bench_needs_an_untimed_step():
    """The untimed step builds the optimiser state every measured step is restored to."""
    from realjudge.bench.train_step import bench_train_step

    with pytest.raises(ValueError, match="warmup"):
        bench_train_step(model="tiny", warmup=0)
