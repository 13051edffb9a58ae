"""Losses computed in parts with a :class:`Normalizer` average to the loss of the whole batch
(and so do their gradients), whatever the split -- the property the update loop relies on."""

from __future__ import annotations

import pytest
import torch

from realjudge.methods import (
    Normalizer,
    grpo_loss,
    masked_aggregate,
    real_loss,
    regression_loss,
    sft_loss,
    tract_loss,
)
from realjudge.methods.losses import RealLossConfig

N, T, G = 8, 6, 2
SPLITS = [[8], [4, 4], [2, 2, 2, 2], [1] * 8, [2, 6]]  # rows per part ([2, 6]: uneven)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 6, 2, 5, 3, 6, 1, 4])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    logp = -torch.rand(N, T, generator=g) * 3
    probs = torch.softmax(torch.randn(N, 5, generator=g), -1)
    gold = torch.tensor([1.0, 1.0, 3.0, 3.0, 5.0, 5.0, 2.0, 2.0])
    return logp, mask, probs, gold


def parts_mean(fn, split, mask):
    """Mean over the parts of ``fn(rows, normalizer)``: what DDP and accumulation average."""
    norm = Normalizer.for_update(float(mask.sum()), float(mask.shape[0]), len(split))
    out, start = 0.0, 0
    for n in split:
        out = out + fn(slice(start, start + n), norm)
        start += n
    return out / len(split)


def check(fn, whole_fn, leaf: torch.Tensor, group: int = 1):
    """``group``: parts hold whole groups of that many rows (RL)."""
    _, mask, _, _ = batch()
    whole = whole_fn()
    (g_whole,) = torch.autograd.grad(whole, leaf)
    for split in [s for s in SPLITS if all(n % group == 0 for n in s)]:
        got = parts_mean(fn, split, mask)
        (g_got,) = torch.autograd.grad(got, leaf)
        assert float(got.detach()) == pytest.approx(float(whole.detach()), rel=1e-5, abs=1e-6)
        assert torch.allclose(g_got, g_whole, atol=1e-6)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_masked_aggregate_in_parts(agg):
    logp, mask, _, _ = batch()
    v = logp.clone().requires_grad_(True)
    check(
        lambda s, nrm: masked_aggregate(v[s], mask[s], agg, nrm),
        lambda: masked_aggregate(v, mask, agg),
        v,
    )


def test_per_part_means_are_not_the_whole_mean():
    """The old behaviour (each part's own token mean) differs on these uneven lengths."""
    logp, mask, _, _ = batch()
    halves = (sft_loss(logp[:1], mask[:1]) + sft_loss(logp[1:2], mask[1:2])) / 2
    assert float(halves) != pytest.approx(float(sft_loss(logp[:2], mask[:2])), rel=1e-3)


def test_sft_regression_tract_in_parts():
    logp, mask, probs, gold = batch()
    v = logp.clone().requires_grad_(True)
    check(lambda s, n: sft_loss(v[s], mask[s], n), lambda: sft_loss(v, mask), v)
    y = (probs @ torch.arange(1.0, 6.0)).clone().requires_grad_(True)
    check(lambda s, n: regression_loss(y[s], gold[s], n), lambda: regression_loss(y, gold), y)
    check(
        lambda s, n: tract_loss(v[s], mask[s], y[s], gold[s], 0.5, n)[0],
        lambda: tract_loss(v, mask, y, gold, 0.5)[0],
        v,
    )


@pytest.mark.parametrize("pg_agg", ["token-mean", "seq-mean-token-sum"])
def test_real_in_parts(pg_agg):
    """Whole groups per part (as the trainer's micro-batches hold), fixed advantages."""
    logp, mask, probs, gold = batch()
    scores = torch.arange(1.0, 6.0)
    cfg = RealLossConfig(beta=0.5, pg_agg=pg_agg, kl_coef=0.1)
    ref = logp.detach() - 0.1
    adv = torch.linspace(-1, 1, N)
    v = logp.clone().requires_grad_(True)
    p = probs.clone().requires_grad_(True)

    def loss(s, n=None):
        return real_loss(
            v[s],
            mask[s],
            p[s],
            scores,
            gold[s],
            G,
            cfg,
            advantages=adv[s],
            ref_logprobs=ref[s],
            normalizer=n,
        )[0]

    check(loss, lambda: loss(slice(None)), v, group=G)
    check(loss, lambda: loss(slice(None)), p, group=G)


def test_grpo_in_parts():
    logp, mask, _, gold = batch()
    decoded = torch.tensor([1, 2, 3, 3, 5, -1, 2, 2])
    ent = torch.rand(N, T)
    v = logp.clone().requires_grad_(True)

    def loss(s, n=None):
        return grpo_loss(
            v[s],
            mask[s],
            decoded[s],
            gold[s],
            G,
            entropy_coef=0.1,
            entropies=ent[s],
            normalizer=n,
        )[0]

    check(loss, lambda: loss(slice(None)), v, group=G)


def test_normalizer_for_update():
    assert Normalizer.for_update(12, 4, 4) == Normalizer(3.0, 1.0)
    assert Normalizer.for_update(0, 0, 2) == Normalizer(0.5, 0.5)  # empty: sums are 0
    for bad in [(-1, 1, 1), (1, float("nan"), 1), (1, 1, 0)]:
        with pytest.raises(ValueError):
            Normalizer.for_update(*bad)
