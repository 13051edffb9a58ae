"""Each loss on tiny hand-computed cases, plus mask/padding invariance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from realjudge.methods import (
    RealLossConfig,
    entropy_bonus,
    entropy_from_logits,
    grpo_loss,
    kl_penalty,
    masked_aggregate,
    masked_ce,
    policy_gradient_loss,
    raft_loss,
    real_advantages,
    real_loss,
    regression_loss,
    sft_loss,
    token_logprobs_from_logits,
    token_mean,
    tract_loss,
)
from realjudge.scoring import rail

SCORES = torch.arange(1.0, 6.0)
VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


# ---------------------------------------------------------------- reductions


def test_token_mean_and_aggregations_hand_computed() -> None:
    assert token_mean(VALUES, MASK).item() == pytest.approx(7 / 3)
    assert masked_aggregate(VALUES, MASK, "token-mean").item() == pytest.approx(7 / 3)
    assert masked_aggregate(VALUES, MASK, "seq-mean-token-mean").item() == pytest.approx(2.75)
    assert masked_aggregate(VALUES, MASK, "seq-mean-token-sum").item() == pytest.approx(3.5)
    assert token_mean(VALUES, torch.zeros_like(MASK)).item() == 0.0
    with pytest.raises(ValueError):
        masked_aggregate(VALUES, MASK, "sum")  # type: ignore[arg-type]


def test_token_mean_ignores_nan_in_padding() -> None:
    v = VALUES.clone().requires_grad_()
    junk = torch.where(MASK.bool(), v, torch.full_like(v, float("nan")))
    out = token_mean(junk, MASK)
    out.backward()
    assert out.item() == pytest.approx(7 / 3)
    torch.testing.assert_close(v.grad, MASK.float() / 3)


# ---------------------------------------------------------------- supervised


def test_sft_loss_token_mean_with_mask() -> None:
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.125, 0.3, 0.3]]))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    expected = (math.log(2) + math.log(4) + math.log(8)) / 3  # = 2 log 2
    assert sft_loss(lp, mask).item() == pytest.approx(expected)
    assert masked_ce(lp, None, mask).item() == pytest.approx(expected)


def test_masked_ce_from_logits_matches_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=g)
    labels = torch.randint(0, 7, (2, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0]])
    ref_labels = labels.masked_fill(mask == 0, -100)
    ref = F.cross_entropy(logits.view(-1, 7), ref_labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(masked_ce(logits, labels, mask), ref)
    lp = token_logprobs_from_logits(logits, labels)
    assert lp.shape == (2, 4)
    torch.testing.assert_close(
        lp, -F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    )


def test_regression_loss_hand_computed() -> None:
    y_hat = torch.tensor([3.5, 2.0])
    gold = torch.tensor([4.0, 4.33])
    assert regression_loss(y_hat, gold).item() == pytest.approx((0.25 + 2.33**2) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        regression_loss(y_hat, gold[:1])


def test_regression_loss_gradient_through_probs() -> None:
    probs = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.0]], requires_grad=True)
    y_hat = (probs * SCORES).sum(-1)  # 3.5
    regression_loss(y_hat, torch.tensor([4.0])).backward()
    torch.testing.assert_close(probs.grad, (2 * (3.5 - 4.0) * SCORES).unsqueeze(0))


def test_tract_loss_is_ce_plus_lambda_regression() -> None:
    lp = torch.log(torch.tensor([[0.5, 0.25]]))
    loss, parts = tract_loss(
        lp, torch.ones(1, 2), torch.tensor([3.0]), torch.tensor([5.0]), lam=0.5
    )
    ce = 1.5 * math.log(2)
    assert parts["ce"] == pytest.approx(ce)
    assert parts["regression"] == pytest.approx(4.0)
    assert loss.item() == pytest.approx(ce + 2.0)


# ---------------------------------------------------------------- policy gradient pieces


def test_policy_gradient_loss_reinforce_value_and_grad() -> None:
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    loss = policy_gradient_loss(lp, adv, MASK)
    # token-mean over 3 tokens: (-(2)(-1) - (2)(-2) - (-1)(-0.5)) / 3
    assert loss.item() == pytest.approx((2 + 4 - 0.5) / 3)
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[-2 / 3, -2 / 3, 0.0], [1 / 3, 0.0, 0.0]]))
    seq = policy_gradient_loss(lp, adv, MASK, agg="seq-mean-token-sum")
    assert seq.item() == pytest.approx((6 - 0.5) / 2)
    with pytest.raises(ValueError):
        policy_gradient_loss(lp, adv, MASK, clip_eps=0.2)
    with pytest.raises(ValueError):
        policy_gradient_loss(lp, adv[:1], MASK)


def test_policy_gradient_ratio_form_same_gradient_on_policy() -> None:
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    (g1,) = torch.autograd.grad(policy_gradient_loss(lp, adv, MASK), lp)
    (g2,) = torch.autograd.grad(policy_gradient_loss(lp, adv, MASK, old_logprobs=lp.detach()), lp)
    (g3,) = torch.autograd.grad(
        policy_gradient_loss(lp, adv, MASK, old_logprobs=lp.detach(), clip_eps=0.2), lp
    )
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(g1, g3)


def test_ppo_clip_hand_computed() -> None:
    lp = torch.full((2, 1), math.log(1.5), requires_grad=True)
    old = torch.zeros(2, 1)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 1)
    loss = policy_gradient_loss(
        lp, adv, mask, old_logprobs=old, clip_eps=0.2, agg="seq-mean-token-sum"
    )
    # A>0, ratio 1.5 > 1.2: clipped -> -1.2, no grad; A<0: max(1.5, 1.2) = 1.5, grad 1.5
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[0.0], [0.75]]))


def test_kl_penalty_estimators() -> None:
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -2.0]])
    mask = torch.ones(1, 2)
    d = -0.5
    assert kl_penalty(lp, ref, mask, "k1").item() == pytest.approx(0.25)
    assert kl_penalty(lp, ref, mask, "k2").item() == pytest.approx(0.5 * d**2 / 2)
    assert kl_penalty(lp, ref, mask, "k3").item() == pytest.approx((math.exp(d) - d - 1) / 2)
    assert kl_penalty(lp, lp, mask).item() == 0.0
    with pytest.raises(ValueError):
        kl_penalty(lp, ref, mask, "k9")  # type: ignore[arg-type]


def test_entropy_from_logits_and_bonus() -> None:
    logits = torch.zeros(1, 2, 4)
    logits[0, 1] = torch.tensor([100.0, 0.0, 0.0, 0.0])
    ent = entropy_from_logits(logits)
    torch.testing.assert_close(ent, torch.tensor([[math.log(4), 0.0]]), atol=1e-5, rtol=0)
    assert entropy_bonus(ent, torch.tensor([[1, 0]])).item() == pytest.approx(math.log(4))


# ---------------------------------------------------------------- GRPO / RLOO


def test_grpo_binary_reward_and_advantages() -> None:
    decoded = torch.tensor([3, 4, -1, 3])
    gold = torch.full((4,), 3.2)  # rounds to 3: rewards [1, 0, 0, 1]
    lp = torch.tensor([[-1.0], [-2.0], [-3.0], [-5.0]], requires_grad=True)
    mask = torch.ones(4, 1)
    loss, m = grpo_loss(lp, mask, decoded, gold, group_size=4, scores=SCORES, std_eps=0.0)
    a = 0.5 / math.sqrt(1 / 3)  # (r - 0.5) / unbiased std
    assert m["reward/mean"] == pytest.approx(0.5)
    assert m["parse_fail_frac"] == pytest.approx(0.25)
    assert m["adv/max"] == pytest.approx(a) and m["adv/min"] == pytest.approx(-a)
    expected = (a * 1 - a * 2 - a * 3 + a * 5) / 4  # sum(-A * lp) / 4 tokens
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    loss_r, m_r = grpo_loss(lp, mask, decoded, gold, group_size=4, advantage="rloo")
    adv_r = [1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3]
    expected_r = sum(-a_ * lp_ for a_, lp_ in zip(adv_r, [-1.0, -2.0, -3.0, -5.0], strict=True)) / 4
    assert expected_r == pytest.approx(1 / 6)
    assert loss_r.item() == pytest.approx(expected_r, rel=1e-6)
    assert m_r["adv/max"] == pytest.approx(2 / 3)


def test_grpo_all_equal_group_gives_zero_gradient() -> None:
    lp = torch.randn(4, 3, requires_grad=True)
    loss, m = grpo_loss(
        lp, torch.ones(4, 3), torch.tensor([5, 5, 1, 1]), torch.tensor([2.0] * 4), 2
    )
    loss.backward()
    assert lp.grad.abs().max() == 0
    assert m["frac_groups_zero_std"] == 1.0


# ---------------------------------------------------------------- REAL


def _real_case() -> tuple[torch.Tensor, ...]:
    probs = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.5, 0.0],  # y_hat 3.5; gold 4 -> r -0.25, p(4)=0.5
            [0.0, 0.0, 0.0, 1.0, 0.0],  # y_hat 4.0; gold 4 -> r 0,     p(4)=1
            [0.5, 0.5, 0.0, 0.0, 0.0],  # y_hat 1.5; gold 2 -> r -0.25, p(2)=0.5
            [0.0, 0.0, 0.0, 0.0, 1.0],  # y_hat 5.0; gold 2 -> r -9,    p(2)=0
        ]
    )
    gold = torch.tensor([4.0, 4.0, 2.0, 2.0])
    lp = torch.tensor(
        [[-1.0, -2.0, -7.0], [-0.5, -7.0, -7.0], [-1.0, -1.0, -1.0], [-3.0, -7.0, -7.0]]
    )
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
    return probs, gold, lp, mask


def test_real_loss_authors_defaults_hand_computed() -> None:
    probs, gold, lp, mask = _real_case()
    # G=2, std-normalised LOO advantages are +-sqrt(2), clipped to +-1, for both rewards:
    # reg: [-1, 1, 1, -1]; prob: [-1, 1, 1, -1]  -> A = [-2, 2, 2, -2]
    loss, m = real_loss(lp, mask, probs, SCORES, gold, group_size=2)
    seq_lp = [-3.0, -0.5, -3.0, -3.0]  # summed log-probs of the masked CoT tokens (7 tokens)
    pg = sum(-adv * lp_ for adv, lp_ in zip([-2.0, 2.0, 2.0, -2.0], seq_lp, strict=True)) / 7
    assert m["pg_loss"] == pytest.approx(pg)
    assert loss.item() == pytest.approx(pg)  # beta = 0
    assert m["adv/min"] == pytest.approx(-2.0) and m["adv/max"] == pytest.approx(2.0)
    assert m["reward/mean"] == pytest.approx(-9.5 / 4)
    assert m["y_hat/mean"] == pytest.approx(14 / 4)

    cfg = RealLossConfig(beta=0.01)  # refine "both": sq + lambda_p * nll
    refine = (0.25 + math.log(2) + 0 + 0 + 0.25 + math.log(2) + 9 - math.log(1e-12)) / 4
    loss2, m2 = real_loss(lp, mask, probs, SCORES, gold, 2, cfg)
    assert m2["refine_loss"] == pytest.approx(refine, rel=1e-5)
    assert loss2.item() == pytest.approx(pg + 0.01 * refine, rel=1e-5)


def test_real_loss_nll_refinement_keeps_its_gradient_where_p_gold_underflows() -> None:
    # the gold score's logit is 40 below the others: p(gold) ~ 4e-18 is under the 1e-12 floor
    logits = torch.tensor([[-40.0, 0.0, 0.0, 0.0, 0.0]] * 2, requires_grad=True)
    gold = torch.tensor([1.0, 1.0])
    lp, mask = torch.zeros(2, 1), torch.ones(2, 1)
    cfg = RealLossConfig(beta=1.0, refine_terms="nll")
    probs = torch.softmax(logits, -1)
    floored, _ = real_loss(lp, mask, probs, SCORES, gold, 2, cfg)
    (g_floor,) = torch.autograd.grad(floored, logits)
    assert g_floor.abs().max() == 0  # the floored log has no gradient: the row cannot learn
    probs = torch.softmax(logits, -1)
    loss, m = real_loss(
        lp, mask, probs, SCORES, gold, 2, cfg, score_log_probs=torch.log_softmax(logits, -1)
    )
    (grad,) = torch.autograd.grad(loss, logits)
    # d(-log softmax_0)/d logit_0 = p_0 - 1 ~ -1 (mean over the 2 rows: -1/2)
    assert grad[:, 0].tolist() == pytest.approx([-0.5, -0.5])
    assert m["nll_gold"] == pytest.approx(40 + math.log(4), rel=1e-6)
    # rounding of the gold: 4.33 -> 4, 4.5 -> 5 (ties up), 0.0 -> 1 (clamped)
    logp = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4, 1e-30]])).expand(3, 5)
    cfg = RealLossConfig(beta=1.0, refine_terms="nll", normalize_std=False)
    _, m = real_loss(
        torch.zeros(3, 1),
        torch.ones(3, 1),
        logp.exp(),
        SCORES,
        torch.tensor([4.33, 4.5, 0.0]),
        1,
        cfg,
        score_log_probs=logp,
    )
    assert m["nll_gold"] == pytest.approx(-(math.log(0.4) + math.log(1e-30) + math.log(0.1)) / 3)
    with pytest.raises(ValueError, match="score_log_probs"):
        real_loss(lp, mask, probs, SCORES, gold, 2, cfg, score_log_probs=logp[:2, :3])


def test_real_loss_unclipped_loo_hand_computed() -> None:
    probs, gold, lp, mask = _real_case()
    cfg = RealLossConfig(
        normalize_std=False, adv_clip=None, lambda_p=0.0, pg_agg="seq-mean-token-sum"
    )
    # LOO with G=2: A_i = r_i - r_j -> [-0.25, 0.25, 8.75, -8.75]
    _, m = real_loss(lp, mask, probs, SCORES, gold, 2, cfg)
    seq_lp = [-3.0, -0.5, -3.0, -3.0]
    pg = sum(-adv * lp_ for adv, lp_ in zip([-0.25, 0.25, 8.75, -8.75], seq_lp, strict=True)) / 4
    assert m["pg_loss"] == pytest.approx(pg)
    mean_cfg = RealLossConfig(
        baseline="mean",
        normalize_std=False,
        adv_clip=None,
        lambda_p=0.0,
        pg_agg="seq-mean-token-sum",
    )
    _, m_mean = real_loss(lp, mask, probs, SCORES, gold, 2, mean_cfg)
    assert m_mean["pg_loss"] == pytest.approx(pg / 2)  # (G-1)/G of LOO


def test_real_advantages_hand_computed_and_detached() -> None:
    probs, gold, lp, mask = _real_case()
    probs.requires_grad_()
    # authors' defaults (G=2): each part +-sqrt(2) clipped to +-1, reg + 1.0 * prob
    adv, m = real_advantages(probs, SCORES, gold, 2)
    torch.testing.assert_close(adv, torch.tensor([-2.0, 2.0, 2.0, -2.0]))
    assert not adv.requires_grad and adv.dtype == torch.float32
    assert m["reward/mean"] == pytest.approx(-9.5 / 4)
    assert m["prob_reward/mean"] == pytest.approx(2.0 / 4)
    assert m["adv/min"] == -2.0 and m["adv/max"] == 2.0 and m["frac_groups_zero_std"] == 0.0
    # unclipped, unnormalised LOO of the regression reward only: A_i = r_i - r_j
    cfg = RealLossConfig(normalize_std=False, adv_clip=None, lambda_p=0.0)
    adv, _ = real_advantages(probs, SCORES, gold, 2, cfg)
    torch.testing.assert_close(adv, torch.tensor([-0.25, 0.25, 8.75, -8.75]))
    assert real_advantages(probs, SCORES, gold, 1)[0].abs().max() == 0  # G = 1
    with pytest.raises(ValueError):
        real_advantages(probs, SCORES, gold, 3)


def test_real_loss_uses_given_advantages_and_current_probs_for_refinement() -> None:
    probs, gold, lp, mask = _real_case()
    cfg = RealLossConfig(beta=0.5, refine_terms="sq", lambda_p=0.0)
    adv, _ = real_advantages(probs, SCORES, gold, 2, cfg)
    loss_a, m_a = real_loss(lp, mask, probs, SCORES, gold, 2, cfg)
    loss_b, m_b = real_loss(lp, mask, probs, SCORES, gold, 2, cfg, advantages=adv)
    assert loss_a.item() == pytest.approx(loss_b.item())  # single pass: same as computing them
    assert m_b["adv/min"] == m_a["adv/min"] and "reward/mean" not in m_b

    # later pass: the distribution moved, the advantages stay those of the sampling policy
    moved = torch.tensor([[0.2] * 5] * 4, requires_grad=True)
    fixed = torch.tensor([1.0, -1.0, 0.5, -0.5])
    loss, m = real_loss(lp, mask, moved, SCORES, gold, 2, cfg, advantages=fixed)
    seq_lp = [-3.0, -0.5, -3.0, -3.0]
    pg = sum(-a * s for a, s in zip(fixed.tolist(), seq_lp, strict=True)) / 7
    refine = ((3.0 - gold) ** 2).mean().item()  # y_hat = 3 from the current distribution
    assert m["pg_loss"] == pytest.approx(pg) and m["refine_loss"] == pytest.approx(refine)
    assert loss.item() == pytest.approx(pg + 0.5 * refine)
    loss.backward()
    expected = 0.5 * 2 * (3.0 - gold).unsqueeze(-1) * SCORES / 4  # only the refinement
    torch.testing.assert_close(moved.grad, expected)
    with pytest.raises(ValueError):
        real_loss(lp, mask, probs, SCORES, gold, 2, cfg, advantages=fixed[:2])


def test_real_loss_gradients_go_where_they_should() -> None:
    probs, gold, lp, mask = _real_case()
    probs.requires_grad_()
    lp.requires_grad_()
    loss, _ = real_loss(lp, mask, probs, SCORES, gold, 2, RealLossConfig(beta=0.0))
    loss.backward()
    assert probs.grad is None or probs.grad.abs().max() == 0  # rewards are detached
    assert lp.grad.abs().max() > 0
    assert lp.grad[~mask.bool()].abs().max() == 0

    probs.grad = None
    cfg = RealLossConfig(beta=0.5, refine_terms="sq", lambda_p=0.0)
    loss, _ = real_loss(lp, mask, probs, SCORES, gold, 2, cfg)
    loss.backward()
    y_hat = (probs.detach() * SCORES).sum(-1)
    expected = 0.5 * 2 * (y_hat - gold).unsqueeze(-1) * SCORES / 4
    torch.testing.assert_close(probs.grad, expected)


def test_real_loss_group_size_one_only_refines() -> None:
    probs, gold, lp, mask = _real_case()
    lp.requires_grad_()
    loss, m = real_loss(lp, mask, probs, SCORES, gold, 1, RealLossConfig(beta=0.0))
    loss.backward()
    assert lp.grad.abs().max() == 0
    assert m["adv/min"] == 0.0 and m["adv/max"] == 0.0


def test_real_loss_validation() -> None:
    probs, gold, lp, mask = _real_case()
    with pytest.raises(ValueError):
        real_loss(lp, mask, probs, SCORES, gold, 3)
    with pytest.raises(ValueError):
        real_loss(lp[:, :2], mask, probs, SCORES, gold, 2)
    with pytest.raises(ValueError):
        real_loss(lp, mask, probs, SCORES, gold, 2, RealLossConfig(kl_coef=0.1))
    with pytest.raises(ValueError):
        RealLossConfig(baseline="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RealLossConfig(adv_clip=0.0)
    with pytest.raises(ValueError):
        RealLossConfig(refine_terms="l1")  # type: ignore[arg-type]


# ---------------------------------------------------------------- padding invariance


def _pad(x: torch.Tensor, n_pad: int, value: float, left: bool) -> torch.Tensor:
    pad = torch.full((x.shape[0], n_pad), value, dtype=x.dtype)
    return torch.cat([pad, x], 1) if left else torch.cat([x, pad], 1)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("left", [False, True])
def test_padding_does_not_change_real_or_grpo_loss(agg: str, left: bool) -> None:
    g = torch.Generator().manual_seed(1)
    n, t, k = 6, 4, 5
    lp = -torch.rand(n, t, generator=g) * 3
    old = lp + 0.1 * torch.randn(n, t, generator=g)
    ref = lp + 0.1 * torch.randn(n, t, generator=g)
    ent = torch.rand(n, t, generator=g)
    lengths = torch.tensor([4, 1, 3, 2, 4, 3])
    mask = (torch.arange(t) < lengths[:, None]).long()
    probs = torch.softmax(torch.randn(n, k, generator=g), -1)
    gold = torch.tensor([4.33, 4.33, 2.0, 2.0, 1.5, 1.5])
    decoded = torch.tensor([4, 3, 2, -1, 1, 2])
    cfg = RealLossConfig(
        beta=0.01,
        pg_agg=agg,
        clip_eps=0.2,
        kl_coef=0.05,
        entropy_coef=0.01,  # type: ignore[arg-type]
    )

    def run(lp_, old_, ref_, ent_, mask_):
        lp_ = lp_.clone().requires_grad_()
        loss, _ = real_loss(
            lp_,
            mask_,
            probs,
            SCORES,
            gold,
            2,
            cfg,
            old_logprobs=old_,
            ref_logprobs=ref_,
            entropies=ent_,
        )
        loss_g, _ = grpo_loss(
            lp_, mask_, decoded, gold, 2, SCORES, agg=agg, kl_coef=0.1, ref_logprobs=ref_
        )  # type: ignore[arg-type]
        (gr,) = torch.autograd.grad(loss + loss_g, lp_)
        return loss.detach(), loss_g.detach(), gr

    base = run(lp, old, ref, ent, mask)
    # junk inside the masked part of the original tensors, plus extra padding columns
    m = mask.bool()
    junk_lp = _pad(torch.where(m, lp, torch.full_like(lp, -float("inf"))), 3, -float("inf"), left)
    junk_old = _pad(torch.where(m, old, torch.full_like(old, 50.0)), 3, -50.0, left)
    junk_ref = _pad(torch.where(m, ref, torch.full_like(ref, -50.0)), 3, 50.0, left)
    junk_ent = _pad(torch.where(m, ent, torch.full_like(ent, float("nan"))), 3, float("nan"), left)
    padded_mask = _pad(mask, 3, 0, left)
    padded = run(junk_lp, junk_old, junk_ref, junk_ent, padded_mask)

    torch.testing.assert_close(padded[0], base[0])
    torch.testing.assert_close(padded[1], base[1])
    grad_real = padded[2][:, 3:] if left else padded[2][:, :t]
    torch.testing.assert_close(grad_real, base[2])
    pad_cols = padded[2][:, :3] if left else padded[2][:, t:]
    assert torch.isfinite(padded[2]).all()
    assert pad_cols.abs().max() == 0
    assert padded[2][padded_mask == 0].abs().max() == 0


def test_raft_loss_is_the_squared_error_plus_the_weighted_gold_nll():
    y_hat = torch.tensor([3.0, 4.5])
    gold = torch.tensor([2.0, 5.0])
    logp = torch.log(torch.tensor([0.2, 0.5]))
    plain, parts = raft_loss(y_hat, gold)
    assert torch.equal(plain, regression_loss(y_hat, gold)) and "nll" not in parts
    assert plain.item() == pytest.approx((1.0 + 0.25) / 2)
    assert torch.equal(raft_loss(y_hat, gold, logp, lambda_p=0.0)[0], plain)  # unused at 0
    mixed, parts = raft_loss(y_hat, gold, logp, lambda_p=0.5)
    nll = -(math.log(0.2) + math.log(0.5)) / 2
    assert mixed.item() == pytest.approx(plain.item() + 0.5 * nll)
    assert parts["nll"] == pytest.approx(nll) and parts["loss"] == pytest.approx(mixed.item())
    with pytest.raises(ValueError, match="needs gold_logprob"):
        raft_loss(y_hat, gold, lambda_p=0.5)


def test_raft_nll_keeps_a_gradient_where_the_squared_error_has_none():
    """Every input's distribution on score 3 (the flat region where RAFT stalls; the other
    scores' probabilities ~1e-13): the squared error's gradient on the logits is ~0, the log
    term's, read by a log-softmax, is p - onehot(y)."""
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    ids = torch.arange(5)
    logits = torch.tensor([[0.0, 0.0, 30.0, 0.0, 0.0]] * 2, requires_grad=True)
    gold = torch.tensor([1.0, 5.0])

    def loss(lam):
        probs, _ = rail.score_distribution(logits, ids)
        logp = rail.score_log_probs(logits, ids).gather(-1, torch.tensor([[0], [4]])).squeeze(-1)
        return raft_loss(rail.expected_score(probs, scores), gold, logp, lambda_p=lam)[0]

    (g_plain,) = torch.autograd.grad(loss(0.0), logits)
    (g_mixed,) = torch.autograd.grad(loss(1.0), logits)
    assert g_plain.abs().max() < 1e-10
    want = (torch.softmax(logits, -1) - torch.eye(5)[[0, 4]]) / 2  # d mean(-log p_y) / d logits
    assert torch.allclose(g_mixed, want.detach(), atol=1e-6)
    assert g_mixed[0, 0] < -0.4 and g_mixed[1, 4] < -0.4  # pushes up the gold score


def test_score_log_probs_are_the_log_of_the_score_distribution():
    torch.manual_seed(0)
    logits = torch.randn(3, 11) * 3
    ids = torch.tensor([2, 5, 7])
    for normalize in (True, False):
        probs, _ = rail.score_distribution(logits, ids, normalize=normalize)
        logp = rail.score_log_probs(logits, ids, normalize=normalize)
        assert torch.allclose(logp.exp(), probs, atol=1e-6)
    far = torch.tensor([[0.0, 200.0, 0.0]])  # probabilities that underflow stay finite
    assert torch.isfinite(rail.score_log_probs(far, torch.arange(3))).all()
