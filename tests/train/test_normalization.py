"""The update is the gradient of the mean over the whole mini-batch: micro-batching does not
change it (micro-batch 1 x grad_accum 4 == micro-batch 4 x grad_accum 1, one process).

The records' reference feedbacks differ in length, so a per-micro-batch token mean (the old
behaviour) weighs tokens differently from the mini-batch's token mean; AdamW runs with
``adam_eps=1`` so that its update is close to linear in the gradient (with the default eps,
the first update is ``lr * sign(g)`` and would hide a rescaled gradient).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realjudge.data.loaders import write_jsonl
from realjudge.data.records import JudgeRecord
from realjudge.train import build_config, train

from ._helpers import one_thread  # noqa: F401  (autouse: one torch thread)

#: Weights of the two runs agree within this (float32 sums in another order); the old
#: per-micro-batch normalisation differs by > 1e-3 on these runs.
ATOL = 2e-5

FEEDBACKS = ("ok", "looks fine to me, the answer is mostly right", "fine", "wrong in two places")

METHOD_SETTINGS = {
    "sft": {},
    "raft": {},
    "tract": {"tract_lambda": 0.5},
    # a random model writes no score: GRPO's rewards are all 0, the entropy bonus gives the
    # token-level gradient
    "grpo": {
        "num_generations": 2,
        "advantage": "rloo",
        "entropy_coef": 1.0,
        "learning_rate": 5.0,
    },
    "real": {"num_generations": 2, "beta": 0.05},
}


def write_varied_data(path: Path, n: int = 4) -> Path:
    """``n`` records whose reference feedbacks (SFT/TRACT targets) differ in length."""
    records = [
        JudgeRecord(
            id=f"r{i}",
            instruction="Rate the answer.",
            response=f"answer number {i}",
            gold=float(1 + (2 * i) % 5),
            reference_feedback=FEEDBACKS[i % len(FEEDBACKS)],
        )
        for i in range(n)
    ]
    return write_jsonl(records, path)


def run_config(method: str, tmp_path: Path, name: str, **over):
    data = tmp_path / "varied.jsonl"
    if not data.is_file():
        write_varied_data(data)
    values = dict(
        model="tiny",
        data=str(data),
        out=str(tmp_path / name),
        device="cpu",
        # fp32 whatever the CPU: the equalities below are float32 sums in another order;
        # bf16 autocast (auto on a CPU with fast bf16) rounds them apart
        mixed_precision="no",
        report_to="none",
        batch_size=4,
        max_steps=2,
        max_new_tokens=24,  # SFT / TRACT targets of different lengths; RL rollouts of 24
        max_prompt_tokens=96,
        learning_rate=0.05,
        adam_eps=1.0,
        max_grad_norm=0.0,
        save_final=False,
    )
    values.update(METHOD_SETTINGS[method])
    values.update(over)
    return build_config(method, overrides=values)


def exported(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("method", ["sft", "raft", "tract", "grpo", "real"])
def test_micro_batching_does_not_change_the_update(tmp_path, method):
    # RL methods: one update. The second step samples its rollouts from the first's weights,
    # which the two runs reach up to float rounding (~4e-9 here), and a sampled token sits on
    # a knife edge: on an AMD EPYC one flipped in REAL's second step and the runs parted by
    # 4e-3 (the same rollouts when the first step moves nothing, so not a different draw).
    steps = 1 if method in ("grpo", "real") else 2
    whole = train(run_config(method, tmp_path, "whole", grad_accum=1, max_steps=steps))
    split = train(run_config(method, tmp_path, "split", grad_accum=4, max_steps=steps))
    start = train(run_config(method, tmp_path, "start", max_steps=1, learning_rate=1e-12))
    a, b = exported(whole.out), exported(split.out)
    moved = max_difference(a, exported(start.out))
    assert moved > 100 * ATOL  # the runs train: the check below is not vacuous
    assert max_difference(a, b) < ATOL
    # the logged loss is the mini-batch's mean, whatever the micro-batching
    assert whole.last_metrics["loss"] == pytest.approx(split.last_metrics["loss"], rel=1e-4)
