"""The update loop (:func:`run_updates`) without a language model: a linear model and a fake
objective whose per-token losses run through :func:`realjudge.methods.masked_aggregate`.

* the update does not depend on micro-batching (global token count of the mini-batch);
* a non-finite loss or gradient skips that update, later updates still apply -- also with an
  fp16 GradScaler (accelerate builds none on CPU, so the tests hand it one: torch's CPU
  GradScaler, the same object accelerate drives on GPUs);
* the decision table for DeepSpeed, the learning-rate freeze, and the metric reductions.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from realjudge.methods import masked_aggregate
from realjudge.train.trainer import (
    SKIP,
    SKIP_UPDATE_SCALER,
    SKIPPED_FROZEN_LR,
    STEP,
    _release,
    decide_update,
    engine_steps_in_backward,
    frozen_learning_rate,
    reduce_metrics,
    reduction_of,
    run_updates,
)

from ._helpers import one_thread  # noqa: F401  (autouse: one torch thread)

D = 3


class FakeObjective:
    """Items: ``(features [T, D], poison)``; loss: token-mean of ``model(features)``;
    ``poison`` makes the loss NaN."""

    passes = 1

    def units(self, ctx, items):
        return sum(x.shape[0] for x, _ in items), len(items)

    def loss(self, ctx, model, items, norm=None):
        width = max(x.shape[0] for x, _ in items)
        values = torch.zeros(len(items), width)
        mask = torch.zeros(len(items), width)
        for i, (x, _) in enumerate(items):
            values[i, : x.shape[0]] = model(x).squeeze(-1) ** 2
            mask[i, : x.shape[0]] = 1.0
        loss = masked_aggregate(values, mask, "token-mean", norm)
        if any(p for _, p in items):
            loss = loss * float("nan")
        return loss, {"loss": loss.item()}


def make_items(n: int, poison_at: int | None = None) -> list[tuple[torch.Tensor, bool]]:
    g = torch.Generator().manual_seed(0)
    lengths = [1, 5, 2, 7, 3, 1, 6, 2][:n]
    return [(torch.randn(t, D, generator=g), i == poison_at) for i, t in enumerate(lengths)]


class _NoSchedule:
    def step(self):
        pass


def run(items, grad_accum, micro, *, scaler=False, max_grad_norm=0.0, hook=None):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True, gradient_accumulation_steps=grad_accum)
    if scaler:  # what Accelerator(mixed_precision="fp16") sets up on a GPU
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    torch.manual_seed(0)
    model = torch.nn.Linear(D, 1)
    if hook is not None:
        model.weight.register_hook(hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    if scaler:  # and drives it as under fp16 (unscale_gradients is a no-op otherwise)
        acc.native_amp = True
        acc.state._mixed_precision = "fp16"
    ctx = SimpleNamespace(cfg=SimpleNamespace(grad_accum=grad_accum, max_grad_norm=max_grad_norm))
    metrics = run_updates(acc, ctx, model, opt, _NoSchedule(), FakeObjective(), items, micro)
    weights = [p.detach().clone() for p in acc.unwrap_model(model).parameters()]
    scale = acc.scaler.get_scale() if scaler else None
    _release(acc)
    return weights, metrics, scale


def start_weights():
    torch.manual_seed(0)
    return [p.detach().clone() for p in torch.nn.Linear(D, 1).parameters()]


def close(a, b, atol=1e-6):
    return all(torch.allclose(x, y, atol=atol) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("scaler", [False, True])
def test_micro_batching_does_not_change_the_update(scaler):
    items = make_items(8)  # two updates of 4 items, tokens 15 and 12
    whole, m_whole, _ = run(items, grad_accum=1, micro=4, scaler=scaler)
    split, m_split, _ = run(items, grad_accum=4, micro=1, scaler=scaler)
    half, _, _ = run(items, grad_accum=2, micro=2, scaler=scaler)
    assert close(whole, split) and close(whole, half)
    assert not close(whole, start_weights(), atol=1e-3)
    assert m_whole["loss"] == pytest.approx(m_split["loss"], rel=1e-5)  # the global mean
    # by hand: the first update is the gradient of the token mean over its 4 items
    model = torch.nn.Linear(D, 1)
    with torch.no_grad():
        for p, w in zip(model.parameters(), start_weights(), strict=True):
            p.copy_(w)
    x = torch.cat([t for t, _ in items[:4]])
    (model(x).squeeze(-1) ** 2).mean().backward()
    one, _, _ = run(items[:4], grad_accum=4, micro=1, scaler=scaler)
    expected = [w - 0.1 * p.grad for w, p in zip(start_weights(), model.parameters(), strict=True)]
    assert close(one, expected)


@pytest.mark.parametrize("scaler", [False, True])
@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0])
def test_nonfinite_loss_skips_that_update_only(scaler, max_grad_norm):
    items = make_items(8, poison_at=1)  # a NaN loss in the first update
    w, metrics, scale = run(items, 2, 2, scaler=scaler, max_grad_norm=max_grad_norm)
    expected, _, _ = run(items[4:], 2, 2, scaler=scaler, max_grad_norm=max_grad_norm)
    assert metrics["updates/skipped_nonfinite"] == 1.0
    assert all(torch.isfinite(t).all() for t in w)
    assert close(w, expected)  # only the second update applied, as if alone
    assert not close(w, start_weights(), atol=1e-4)


@pytest.mark.parametrize("scaler", [False, True])
@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0])
def test_nonfinite_gradient_skips_that_update_only(scaler, max_grad_norm):
    calls = []

    def poison_first(grad):  # one parameter's gradient goes NaN in the first backward
        calls.append(1)
        return grad * float("nan") if len(calls) == 1 else grad

    items = make_items(8)
    w, metrics, scale = run(
        items, 2, 2, scaler=scaler, max_grad_norm=max_grad_norm, hook=poison_first
    )
    expected, _, _ = run(items[4:], 2, 2, scaler=scaler, max_grad_norm=max_grad_norm)
    assert metrics["updates/skipped_nonfinite"] == 1.0
    assert all(torch.isfinite(t).all() for t in w)
    assert close(w, expected)
    if scaler:  # the scaler saw the inf and backed off (and the next unscale_ did not raise)
        assert scale < 2.0**10


def test_decide_update():
    nan = float("nan")
    kw = dict(engine_steps_in_backward=False, has_scaler=False)
    assert decide_update(poisoned=False, norm=1.0, **kw) == STEP
    assert decide_update(poisoned=False, norm=None, **kw) == STEP
    assert decide_update(poisoned=True, norm=1.0, **kw) == SKIP
    assert decide_update(poisoned=False, norm=nan, **kw) == SKIP
    assert decide_update(poisoned=False, norm=math.inf, **kw) == SKIP
    fp16 = dict(engine_steps_in_backward=False, has_scaler=True)
    assert decide_update(poisoned=False, norm=nan, **fp16) == SKIP_UPDATE_SCALER
    assert decide_update(poisoned=True, norm=0.0, **fp16) == SKIP_UPDATE_SCALER
    assert decide_update(poisoned=False, norm=1.0, **fp16) == STEP
    # DeepSpeed: the engine has stepped already; a bad loss froze its learning rate, a bad
    # gradient is the engine's own overflow check's (read from step_was_skipped after STEP)
    ds = dict(engine_steps_in_backward=True, has_scaler=False)
    assert decide_update(poisoned=True, norm=0.0, **ds) == SKIPPED_FROZEN_LR
    assert decide_update(poisoned=False, norm=nan, **ds) == STEP
    assert decide_update(poisoned=False, norm=1.0, **ds) == STEP


def test_engine_steps_in_backward_only_under_deepspeed():
    from accelerate.utils import DistributedType

    assert engine_steps_in_backward(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED))
    for kind in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.FSDP):
        assert not engine_steps_in_backward(SimpleNamespace(distributed_type=kind))


def test_frozen_learning_rate_leaves_adamw_weights_and_restores_the_rate():
    model = torch.nn.Linear(D, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.ones(2, D)).sum().backward()
    with frozen_learning_rate(opt):
        opt.step()  # what the DeepSpeed engine does inside backward
    assert close([p.detach() for p in model.parameters()], before, atol=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1]


def test_metric_reductions():
    per_process = [
        {
            "loss": 1.0,
            "updates/skipped_nonfinite": 1.0,
            "rollout/len_max": 7.0,
            "adv/min": -1.0,
            "adv/max": 2.0,
            "rollout/forced_cue_count": 2.0,
            "rollout/tokens": 10.0,
            "time/update_s": 3.0,
        },
        {
            "loss": 3.0,
            "updates/skipped_nonfinite": 1.0,
            "rollout/len_max": 5.0,
            "adv/min": -2.0,
            "adv/max": 1.0,
            "rollout/forced_cue_count": 1.0,
            "rollout/tokens": 6.0,
            "time/update_s": 4.0,
        },
    ]
    out = reduce_metrics(per_process)
    assert out == {
        "loss": 2.0,
        "updates/skipped_nonfinite": 1.0,  # both skipped the same update
        "rollout/len_max": 7.0,
        "adv/min": -2.0,
        "adv/max": 2.0,
        "rollout/forced_cue_count": 3.0,
        "rollout/tokens": 16.0,
        "time/update_s": 4.0,
    }
    assert reduction_of("reward/mean") == "mean"
    assert reduce_metrics([{"a": 1.0}, {}]) == {"a": 1.0}
