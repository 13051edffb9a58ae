"""The losses of every training method, as pure functions of tensors.

Nothing here loads a model or knows about tokenizers: callers run the forward pass, gather the
per-token log-probabilities of the sampled / reference tokens and the score distribution at the
score position, and pass those tensors in. Shapes: ``B`` prompts, ``G`` rollouts per prompt,
``N = B * G`` flat rollouts (group-major, see :mod:`realjudge.methods.advantages`), ``T`` tokens,
``V`` vocabulary, ``K`` scores.

Methods:

* SFT (Prometheus style): :func:`sft_loss` -- token-mean cross-entropy.
* RAFT: :func:`regression_loss` -- ``mean (y_hat - y)^2`` with ``y_hat = sum_k k p_k``.
* TRACT: :func:`tract_loss` -- CE on the CoT + ``lam * (y_hat(x, c*) - y)^2``.
* GRPO / RLOO with the binary exact-match reward: :func:`grpo_loss`.
* REAL: :func:`real_advantages` (once per rollout batch) and :func:`real_loss`.

Every loss takes an optional :class:`Normalizer`. Without it, means are over the tensors
passed in. With it, a micro-batch's loss is its sum over units (tokens, or sequences for
sequence-level terms) divided by the normaliser's share of the **global** count of the
optimiser update -- over all micro-batches and processes -- so that accelerate's division by
``grad_accum`` and DDP's averaging over processes give exactly the gradient of the global
mean, whatever the micro-batching and world size (as TRL's ``num_items_in_batch`` and verl's
global token counts do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from realjudge.methods.advantages import (
    at_gold_score,
    binary_reward,
    clip_advantages,
    group_mean_advantages,
    group_rewards_view,
    loo_advantages,
    normalize_by_group_std,
    probability_reward,
    regression_reward,
    tied_groups,
)
from realjudge.scoring.rail import expected_score

Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


# --------------------------------------------------------------------------------------------
# Normalisation by the global count of an optimiser update
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalizer:
    """Denominators of a loss computed in ``parts`` pieces whose gradients are averaged.

    ``tokens`` / ``sequences``: the global count of loss tokens / sequences of one optimiser
    update divided by ``parts`` = processes x micro-batches per process. A piece's loss is
    ``sum over its units / share``; the mean of the pieces' losses (what accelerate's
    ``1 / grad_accum`` and DDP's average over processes take) is then the global mean, and
    so is the mean of the logged piece values. Build it with :meth:`for_update`.
    """

    tokens: float
    sequences: float

    @classmethod
    def for_update(cls, tokens: float, sequences: float, parts: int) -> Normalizer:
        """From the global counts of one update (all micro-batches, all processes) and the
        number of pieces ``parts`` it is computed in. A zero count becomes 1 (its sums are 0)."""
        if parts < 1:
            raise ValueError(f"parts must be >= 1, got {parts}")
        for name, v in (("tokens", tokens), ("sequences", sequences)):
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite count >= 0, got {v}")
        return cls(max(float(tokens), 1.0) / parts, max(float(sequences), 1.0) / parts)


def _seq_mean(values: torch.Tensor, normalizer: Normalizer | None) -> torch.Tensor:
    """Mean of per-sequence ``values [N]``, or their sum over ``normalizer.sequences``."""
    if normalizer is None:
        return values.mean()
    return values.sum() / normalizer.sequences


# --------------------------------------------------------------------------------------------
# Masked reductions and per-token quantities
# --------------------------------------------------------------------------------------------


def token_mean(
    values: torch.Tensor, mask: torch.Tensor, normalizer: Normalizer | None = None
) -> torch.Tensor:
    """Mean of ``values [B, T]`` over the positions where ``mask [B, T]`` is 1 (scalar).

    Every unmasked token weighs the same, whatever its sequence's length. Returns 0 when the
    mask is empty. Masked positions may hold anything finite-or-not: they are selected away,
    not multiplied, so a NaN/inf in padding does not leak in. With ``normalizer``, the sum is
    divided by ``normalizer.tokens`` (the global token count's share) instead of the count here.
    """
    m = mask.to(torch.bool)
    zeros = torch.zeros((), dtype=values.dtype, device=values.device)
    total = torch.where(m, values, zeros).sum()
    if normalizer is not None:
        return total / normalizer.tokens
    return total / m.sum().clamp_min(1)


def masked_aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    agg: Aggregation = "token-mean",
    normalizer: Normalizer | None = None,
) -> torch.Tensor:
    """Reduce per-token ``values [N, T]`` under ``mask [N, T]`` to a scalar.

    * ``"token-mean"``: ``sum_{n,t} m v / sum_{n,t} m`` (verl's default; REAL authors' choice).
    * ``"seq-mean-token-mean"``: mean over sequences of each sequence's token-mean (sequences
      with no unmasked token contribute 0 but still count in the mean over ``N``).
    * ``"seq-mean-token-sum"``: mean over sequences of each sequence's token-sum. Applied to
      ``-A * log pi`` this is ``-(1/N) sum_n A_n log pi(c_n)``, the textbook REINFORCE surrogate.

    With every sequence of the same length ``L`` (no padding), ``token-mean`` and
    ``seq-mean-token-mean`` both equal ``seq-mean-token-sum / L``.

    ``normalizer``: divide by the global count's share instead of the local count -- its
    ``tokens`` for ``token-mean``, its ``sequences`` for the ``seq-mean-*`` forms.
    """
    if agg not in _AGGREGATIONS:
        raise ValueError(f"unknown aggregation {agg!r}; expected one of {_AGGREGATIONS}")
    if agg == "token-mean":
        return token_mean(values, mask, normalizer)
    m = mask.to(torch.bool)
    zeros = torch.zeros((), dtype=values.dtype, device=values.device)
    seq_sum = torch.where(m, values, zeros).sum(dim=-1)  # [N]
    if agg == "seq-mean-token-sum":
        return _seq_mean(seq_sum, normalizer)
    return _seq_mean(seq_sum / m.sum(dim=-1).clamp_min(1), normalizer)


def token_logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[labels]``: ``[B, T, V], LongTensor [B, T] -> [B, T]`` (float32).

    Labels at masked positions may be any value in range (e.g. the pad id); use ``-100``-style
    ignore ids only after replacing them with a valid id.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy ``-sum_v p_v log p_v``: ``[B, T, V] -> [B, T]`` (float32)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def masked_ce(
    logits_or_logprobs: torch.Tensor,
    labels: torch.Tensor | None,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Token-mean cross-entropy.

    Args:
        logits_or_logprobs: either ``[B, T, V]`` logits (then ``labels [B, T]`` is required and
            the labels' log-probabilities are gathered), or ``[B, T]`` log-probabilities of the
            target tokens already gathered (then ``labels`` must be ``None``).
        labels: ``LongTensor [B, T]`` or ``None``.
        mask: ``[B, T]``, 1 on tokens that are trained on.

    Returns:
        scalar ``-token_mean(log p(label))``.
    """
    if labels is None:
        if logits_or_logprobs.dim() != 2:
            raise ValueError("without labels, pass gathered [B, T] token log-probabilities")
        token_logprobs = logits_or_logprobs
    else:
        token_logprobs = token_logprobs_from_logits(logits_or_logprobs, labels)
    return -token_mean(token_logprobs, mask)


# --------------------------------------------------------------------------------------------
# Supervised baselines: SFT, RAFT, TRACT
# --------------------------------------------------------------------------------------------


def sft_loss(
    token_logprobs: torch.Tensor, mask: torch.Tensor, normalizer: Normalizer | None = None
) -> torch.Tensor:
    """SFT / Prometheus: token-mean negative log-likelihood.

    Args:
        token_logprobs: ``[B, T]`` log-probabilities of the target tokens (with grad).
        mask: ``[B, T]``, 1 on the feedback and score tokens (0 on prompt and padding).
        normalizer: global token count's share (see :class:`Normalizer`); ``None``: local.
    """
    return -token_mean(token_logprobs, mask, normalizer)


def regression_loss(
    y_hat: torch.Tensor, gold: torch.Tensor, normalizer: Normalizer | None = None
) -> torch.Tensor:
    """RAFT: mean squared error ``mean_b (y_hat_b - gold_b)^2``; ``[B], [B] -> scalar``
    (with ``normalizer``: the sum over ``normalizer.sequences``)."""
    if y_hat.shape != gold.shape:
        raise ValueError(f"y_hat {tuple(y_hat.shape)} and gold {tuple(gold.shape)} differ")
    return _seq_mean((y_hat - gold.to(y_hat.dtype)) ** 2, normalizer)


def raft_loss(
    y_hat: torch.Tensor,
    gold: torch.Tensor,
    gold_logprob: torch.Tensor | None = None,
    lambda_p: float = 0.0,
    normalizer: Normalizer | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RAFT: ``(y_hat - y)^2``, plus ``lambda_p * -log p(y|x)`` when ``lambda_p > 0`` --
    REAL's refinement terms (``refine_terms: both``) on the score read right after the prompt.
    ``lambda_p = 0`` is RAFT as published.

    The squared error alone has a flat region: where ``p`` is one-hot on one score for every
    input, its gradient through the softmax vanishes, while ``-log p(y)`` keeps a gradient of
    ``p - onehot(y)`` on the score logits (``docs/training.md``). So ``gold_logprob`` should
    come from a log-softmax (:func:`~realjudge.scoring.rail.score_log_probs`), not from the
    log of a probability that may have underflowed.

    Args:
        y_hat: ``[B]`` RAIL predictions (with grad).
        gold: ``[B]`` gold labels.
        gold_logprob: ``[B]`` ``log p(round(y)|x)`` (with grad); needed when ``lambda_p > 0``.
        lambda_p: weight of ``-log p(y|x)``.
        normalizer: sequences' share (see :class:`Normalizer`); ``None``: mean over ``B``.

    Returns:
        ``(loss, {"regression", "loss"} + {"nll"} when lambda_p > 0)``, detached float parts.
    """
    reg = regression_loss(y_hat, gold, normalizer)
    parts = {"regression": reg.item()}
    loss = reg
    if lambda_p:
        if gold_logprob is None:
            raise ValueError("raft_loss: lambda_p > 0 needs gold_logprob")
        nll = _seq_mean(-gold_logprob, normalizer)
        loss = reg + lambda_p * nll
        parts["nll"] = nll.item()
    parts["loss"] = loss.item()
    return loss, parts


def tract_loss(
    cot_token_logprobs: torch.Tensor,
    cot_mask: torch.Tensor,
    y_hat: torch.Tensor,
    gold: torch.Tensor,
    lam: float,
    normalizer: Normalizer | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """TRACT (CoT-RAFT): ``CE(c*) + lam * (y_hat(x, c*) - y)^2``.

    Args:
        cot_token_logprobs: ``[B, T]`` log-probs of the reference CoT tokens ``c*`` (with grad).
            Stage 1 uses the annotator CoTs, stage 2 CoTs the stage-1 model generated.
        cot_mask: ``[B, T]``, 1 on the tokens imitated.
        y_hat: ``[B]`` RAIL prediction at the score position after ``c*`` (with grad).
        gold: ``[B]`` gold labels.
        lam: weight of the regression term.
        normalizer: global counts' shares: tokens for the CE, sequences for the regression.

    Returns:
        ``(loss, {"ce", "regression", "loss"})`` with detached float parts.
    """
    ce = sft_loss(cot_token_logprobs, cot_mask, normalizer)
    reg = regression_loss(y_hat, gold, normalizer)
    loss = ce + lam * reg
    return loss, {"ce": ce.item(), "regression": reg.item(), "loss": loss.item()}


# --------------------------------------------------------------------------------------------
# Policy-gradient pieces
# --------------------------------------------------------------------------------------------


def policy_gradient_loss(
    token_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    old_logprobs: torch.Tensor | None = None,
    clip_eps: float | None = None,
    agg: Aggregation = "token-mean",
    normalizer: Normalizer | None = None,
) -> torch.Tensor:
    """Policy-gradient surrogate over sampled tokens.

    Args:
        token_logprobs: ``[N, T]`` log pi_theta of the sampled tokens (with grad).
        advantages: ``[N]`` per-sequence advantages (no grad; detached here anyway).
        mask: ``[N, T]``, 1 on the tokens the policy is credited for.
        old_logprobs: ``[N, T]`` log-probs under the sampling policy. ``None`` (REAL authors'
            default) gives the plain REINFORCE form ``-A * log pi``. Given, the ratio form
            ``-A * exp(log pi - log pi_old)`` is used (same gradient at the sampling policy).
        clip_eps: with ``old_logprobs``, the PPO-clip form
            ``max(-A r, -A clip(r, 1 - eps, 1 + eps))``. Requires ``old_logprobs``.
        agg: reduction over tokens, see :func:`masked_aggregate`.
        normalizer: global counts' shares, see :func:`masked_aggregate`.

    Returns:
        scalar loss.
    """
    if advantages.dim() != 1 or advantages.shape[0] != token_logprobs.shape[0]:
        raise ValueError(
            f"advantages must be [N]={token_logprobs.shape[0]}, got {tuple(advantages.shape)}"
        )
    adv = advantages.detach().to(token_logprobs.dtype).unsqueeze(-1)  # [N, 1]
    if old_logprobs is None:
        if clip_eps is not None:
            raise ValueError("clip_eps needs old_logprobs (the sampling policy's log-probs)")
        per_token = -adv * token_logprobs
    else:
        ratio = torch.exp(token_logprobs - old_logprobs.detach())
        per_token = -adv * ratio
        if clip_eps is not None:
            clipped = -adv * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
            per_token = torch.maximum(per_token, clipped)
    return masked_aggregate(per_token, mask, agg, normalizer)


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kind: Literal["k1", "k2", "k3"] = "k3",
    agg: Aggregation = "token-mean",
    normalizer: Normalizer | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) on sampled tokens, aggregated to a scalar.

    With ``d = log pi_ref - log pi_theta`` (``[N, T]``):
    ``k1 = -d``; ``k2 = d^2 / 2``; ``k3 = exp(d) - d - 1`` (Schulman's non-negative,
    low-variance estimator; ``d`` clamped to ``[-20, 20]`` for stability).
    """
    d = ref_logprobs.detach() - logprobs
    if kind == "k1":
        per_token = -d
    elif kind == "k2":
        per_token = 0.5 * d**2
    elif kind == "k3":
        d = d.clamp(-20.0, 20.0)
        per_token = torch.exp(d) - d - 1.0
    else:
        raise ValueError(f"unknown KL estimator {kind!r}")
    return masked_aggregate(per_token, mask, agg, normalizer)


def entropy_bonus(
    entropies: torch.Tensor,
    mask: torch.Tensor,
    agg: Aggregation = "token-mean",
    normalizer: Normalizer | None = None,
) -> torch.Tensor:
    """Aggregated policy entropy from per-token entropies ``[N, T]`` (scalar, >= 0).

    A bonus: the loss **subtracts** ``entropy_coef * entropy_bonus(...)``.
    """
    return masked_aggregate(entropies, mask, agg, normalizer)


# --------------------------------------------------------------------------------------------
# REAL
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealLossConfig:
    """Knobs of the REAL objective. Defaults are the authors' (fast) defaults.

    Attributes:
        baseline: ``"loo"`` (leave-one-out, unbiased) or ``"mean"`` (group mean incl. self).
        normalize_std: divide each advantage component by its group's reward std (+ ``std_eps``).
        adv_clip: clamp each advantage component to ``[-adv_clip, adv_clip]``; ``None`` = off.
        lambda_p: weight of the probability reward ``p(y|x,c)`` in the advantage (authors'
            ``beta_supp``), and of ``-log p(y|x,c)`` inside the refinement when
            ``refine_terms == "both"``.
        beta: weight of the refinement term (authors' ``beta_extra``: 0.0 fast, 0.01 best).
        refine_terms: ``"sq"`` -> ``(y_hat - y)^2``; ``"nll"`` -> ``-log p(y|x,c)``;
            ``"both"`` -> ``(y_hat - y)^2 + lambda_p * (-log p(y|x,c))`` (authors' form).
        pg_agg: reduction of the PG term over CoT tokens (authors: ``"token-mean"``; the
            exactly unbiased sequence-level estimator is ``"seq-mean-token-sum"``).
        clip_eps: PPO ratio clip (needs ``old_logprobs``); ``None`` = authors' no clipping.
        kl_coef, kl_kind: KL(pi || pi_ref) penalty weight and estimator (needs ``ref_logprobs``).
        entropy_coef: entropy bonus weight (needs ``entropies``).
        std_eps: epsilon added to the group std (the trainer's ``REALConfig.std_eps``).
        min_prob: floor on ``p(y|x,c)`` before the log of the ``nll`` refinement, used only
            when :func:`real_loss` is not given ``score_log_probs`` (the floor stops the
            gradient of a row whose probability is below it; the log-probs do not).
    """

    baseline: Literal["loo", "mean"] = "loo"
    normalize_std: bool = True
    adv_clip: float | None = 1.0
    lambda_p: float = 1.0
    beta: float = 0.0
    refine_terms: Literal["sq", "nll", "both"] = "both"
    pg_agg: Aggregation = "token-mean"
    clip_eps: float | None = None
    kl_coef: float = 0.0
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = 0.0
    std_eps: float = 1e-4
    min_prob: float = 1e-12

    def __post_init__(self) -> None:
        if self.baseline not in ("loo", "mean"):
            raise ValueError(f"baseline must be 'loo' or 'mean', got {self.baseline!r}")
        if self.refine_terms not in ("sq", "nll", "both"):
            raise ValueError(f"refine_terms must be sq|nll|both, got {self.refine_terms!r}")
        if self.pg_agg not in _AGGREGATIONS:
            raise ValueError(f"pg_agg must be one of {_AGGREGATIONS}, got {self.pg_agg!r}")
        if self.adv_clip is not None and self.adv_clip <= 0:
            raise ValueError(f"adv_clip must be positive or None, got {self.adv_clip}")
        if self.kl_kind not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_kind must be k1|k2|k3, got {self.kl_kind!r}")
        if self.normalize_std and not self.std_eps > 0:
            # a group whose rewards are all equal (or G == 1) would divide 0 by 0
            raise ValueError(f"std_eps must be positive with normalize_std, got {self.std_eps}")


def _group_advantage(
    rewards: torch.Tensor,
    group_size: int,
    baseline: Literal["loo", "mean"],
    normalize_std: bool,
    std_eps: float,
    clip: float | None,
) -> torch.Tensor:
    """Baseline-subtracted, optionally std-normalised (by the rewards' group std) and clipped."""
    if baseline == "loo":
        adv = loo_advantages(rewards, group_size)
    else:
        adv = group_mean_advantages(rewards, group_size)
    if normalize_std:
        adv = normalize_by_group_std(adv, group_size, eps=std_eps, std_of=rewards)
    return clip_advantages(adv, clip)


def _stats(prefix: str, x: torch.Tensor) -> dict[str, float]:
    x = x.detach().float()
    std = x.std().item() if x.numel() > 1 else 0.0
    return {f"{prefix}/mean": x.mean().item(), f"{prefix}/std": std}


def _regularisers(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    agg: Aggregation,
    kl_coef: float,
    kl_kind: Literal["k1", "k2", "k3"],
    entropy_coef: float,
    ref_logprobs: torch.Tensor | None,
    entropies: torch.Tensor | None,
    normalizer: Normalizer | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``kl_coef * KL - entropy_coef * H`` (each only when its coefficient is non-zero)."""
    total = torch.zeros((), dtype=token_logprobs.dtype, device=token_logprobs.device)
    metrics: dict[str, float] = {}
    if kl_coef != 0.0:
        if ref_logprobs is None:
            raise ValueError("kl_coef != 0 needs ref_logprobs")
        kl = kl_penalty(
            token_logprobs, ref_logprobs, mask, kind=kl_kind, agg=agg, normalizer=normalizer
        )
        total = total + kl_coef * kl
        metrics["kl"] = kl.item()
    if entropy_coef != 0.0:
        if entropies is None:
            raise ValueError("entropy_coef != 0 needs entropies")
        ent = entropy_bonus(entropies, mask, agg=agg, normalizer=normalizer)
        total = total - entropy_coef * ent
        metrics["entropy"] = ent.item()
    return total, metrics


def _check_real_shapes(
    score_probs: torch.Tensor, scores: torch.Tensor, gold: torch.Tensor, group_size: int
) -> None:
    n, k = score_probs.shape
    if scores.shape != (k,) or gold.shape != (n,):
        raise ValueError(f"scores must be [{k}] and gold [{n}]")
    group_rewards_view(gold, group_size)  # validates N % G


def real_advantages(
    score_probs: torch.Tensor,
    scores: torch.Tensor,
    gold: torch.Tensor,
    group_size: int,
    config: RealLossConfig | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """REAL's per-rollout advantages of the CoT exploration term (no gradient).

    ``A = clip(norm(adv_b(-(y_hat - y)^2))) + lambda_p * clip(norm(adv_b(p(y|x,c))))`` with
    ``y_hat = sum_k scores_k p_k``: ``adv_b`` is the LOO (or group-mean) advantage, ``norm``
    divides by the group std of that reward, ``clip`` clamps to ``[-adv_clip, adv_clip]``; the
    ``lambda_p`` part is skipped when it is 0.

    The rewards are those of the policy that sampled the rollouts: compute the advantages once
    per rollout batch, before any update, from the score distributions the sampling policy
    gave (the trainer reads them from the generation pass), and keep them fixed over the
    update passes (as the authors' code does, whose rewards are computed
    before its update passes). :func:`real_loss` takes them through ``advantages=``.

    Args:
        score_probs: ``[N, K]`` score distribution at each rollout's score position (detached
            here anyway); normalised or raw.
        scores: ``[K]`` ascending score values.
        gold: ``[N]`` gold label of each rollout's prompt (repeated ``G`` times).
        group_size: ``G``; ``G == 1`` gives zero advantages.
        config: :class:`RealLossConfig` (``baseline``, ``normalize_std``, ``adv_clip``,
            ``lambda_p``, ``std_eps`` are used).

    Returns:
        ``(advantages [N] float32, metrics)``; metrics: ``reward/mean|std`` (the regression
        reward), ``prob_reward/mean|std``, ``frac_groups_zero_std``, ``adv/mean|std|min|max``.
    """
    cfg = config if config is not None else RealLossConfig()
    if score_probs.dim() != 2:
        raise ValueError(f"score_probs must be [N, K], got {tuple(score_probs.shape)}")
    _check_real_shapes(score_probs, scores, gold, group_size)
    probs = score_probs.detach().float()
    gold = gold.detach().to(device=probs.device, dtype=torch.float32)
    r_reg = regression_reward(expected_score(probs, scores), gold)
    adv = _group_advantage(
        r_reg, group_size, cfg.baseline, cfg.normalize_std, cfg.std_eps, cfg.adv_clip
    )
    r_p = probability_reward(probs, gold, scores)
    if cfg.lambda_p != 0.0:
        adv_p = _group_advantage(
            r_p, group_size, cfg.baseline, cfg.normalize_std, cfg.std_eps, cfg.adv_clip
        )
        adv = adv + cfg.lambda_p * adv_p

    zero_std = tied_groups(r_reg, group_size).float().mean()  # groups are equal-sized
    metrics: dict[str, float] = {"frac_groups_zero_std": zero_std.item()}
    metrics.update(_stats("reward", r_reg))
    metrics.update(_stats("prob_reward", r_p))
    metrics.update(_adv_stats(adv))
    return adv, metrics


def _adv_stats(adv: torch.Tensor) -> dict[str, float]:
    out = _stats("adv", adv)
    out.update({"adv/min": adv.min().item(), "adv/max": adv.max().item()})
    return out


def real_loss(
    token_logprobs: torch.Tensor,
    cot_mask: torch.Tensor,
    score_probs: torch.Tensor,
    scores: torch.Tensor,
    gold: torch.Tensor,
    group_size: int,
    config: RealLossConfig | None = None,
    *,
    advantages: torch.Tensor | None = None,
    old_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    entropies: torch.Tensor | None = None,
    normalizer: Normalizer | None = None,
    score_log_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """REAL surrogate loss for ``N = B * G`` rollouts (``G`` per prompt, group-major).

    Objective per prompt: ``J = E_{c ~ pi}[R(c)]``, ``R(c) = -(y_hat(x, c) - y)^2`` where
    ``y_hat = sum_k scores_k p_k(x, c)`` depends on theta too. Its gradient is
    ``E[R grad log pi(c)] + E[grad R]``; this loss implements

    ``loss = PG(-A * log pi over CoT tokens, aggregated by cfg.pg_agg)
    + beta * mean_n refine_n + kl_coef * KL - entropy_coef * H``

    with ``A`` the given ``advantages`` (computed once per rollout batch by
    :func:`real_advantages` and kept over the update passes), or, when ``advantages`` is
    ``None``, ``real_advantages`` of the **detached** ``score_probs`` (the single-pass case),
    and ``refine_n`` = ``(y_hat_n - y_n)^2`` / ``-log p(y_n|x,c_n)`` / their sum with the nll
    weighted by ``lambda_p``, per ``cfg.refine_terms``, differentiated through ``score_probs``
    -- the current model's distribution, from the same forward pass as ``token_logprobs``.

    With ``baseline="loo", normalize_std=False, adv_clip=None, lambda_p=0, beta=1,
    refine_terms="sq", pg_agg="seq-mean-token-sum"``, ``-grad(loss)`` is an unbiased estimate of
    ``grad mean_prompts J`` (checked in ``tests/methods/test_real_gradient.py``). The authors'
    ``token-mean`` divides the PG term by the number of CoT tokens in the batch instead of by
    ``N``: a (length-weighted) rescaling of term (1) relative to term (2).

    Args:
        token_logprobs: ``[N, T]`` log pi_theta of the sampled CoT tokens (**with grad**).
        cot_mask: ``[N, T]``, 1 on the CoT tokens credited by the PG term (the generated
            feedback; typically excluding the score token itself, whose probability enters
            through ``score_probs``), 0 on prompt/padding.
        score_probs: ``[N, K]`` score distribution at the score position of each rollout,
            from the **same** forward pass (**with grad** if ``beta > 0``); normalised or raw.
        scores: ``[K]`` ascending score values.
        gold: ``[N]`` gold label of each rollout's prompt (repeated ``G`` times).
        group_size: ``G``; ``G == 1`` gives zero advantages (only the refinement term trains).
        config: :class:`RealLossConfig` (default: authors' defaults).
        advantages: ``[N]`` fixed advantages (no grad) from :func:`real_advantages`; ``None``
            computes them here from ``score_probs``.
        old_logprobs: ``[N, T]`` sampling-policy log-probs, for the ratio/PPO-clip form.
        ref_logprobs: ``[N, T]`` reference-policy log-probs, needed if ``kl_coef != 0``.
        entropies: ``[N, T]`` per-token entropies (with grad), needed if ``entropy_coef != 0``.
        normalizer: global counts' shares (:class:`Normalizer`): tokens or sequences for the
            PG/KL/entropy terms per ``pg_agg``, sequences for the refinement term.
        score_log_probs: ``[N, K]`` the log of ``score_probs`` from a log-softmax of the same
            logits (:func:`realjudge.scoring.rail.score_log_probs`), for the ``-log p(y|x,c)``
            refinement: finite with a gradient where ``p`` underflows. ``None`` takes the log
            of ``score_probs`` floored at ``cfg.min_prob`` (no gradient below the floor).

    Returns:
        ``(loss, metrics)``; metrics are detached Python floats. The reward metrics
        (``reward/*``, ``prob_reward/*``, ``frac_groups_zero_std``) are there only when the
        advantages are computed here; ``adv/*`` always describe the advantages used.
    """
    cfg = config if config is not None else RealLossConfig()
    n, k = score_probs.shape
    if token_logprobs.shape != cot_mask.shape or token_logprobs.shape[0] != n:
        raise ValueError(
            f"token_logprobs {tuple(token_logprobs.shape)}, cot_mask {tuple(cot_mask.shape)}"
            f" and score_probs {tuple(score_probs.shape)} disagree"
        )
    _check_real_shapes(score_probs, scores, gold, group_size)

    probs = score_probs.float()
    gold = gold.to(device=probs.device, dtype=torch.float32)
    y_hat = expected_score(probs, scores)  # [N], with grad

    # ---- advantages (no grad): given (fixed per rollout batch), or from this pass ----
    if advantages is None:
        adv, adv_metrics = real_advantages(probs, scores, gold, group_size, cfg)
    else:
        if advantages.shape != (n,):
            raise ValueError(f"advantages must be [{n}], got {tuple(advantages.shape)}")
        adv = advantages.detach().to(device=probs.device, dtype=torch.float32)
        adv_metrics = _adv_stats(adv)

    # ---- (1) CoT exploration: policy gradient over the CoT tokens ----
    pg = policy_gradient_loss(
        token_logprobs,
        adv,
        cot_mask,
        old_logprobs,
        cfg.clip_eps,
        agg=cfg.pg_agg,
        normalizer=normalizer,
    )

    # ---- (2) prediction refinement: gradient through the score distribution ----
    sq = (y_hat - gold) ** 2
    if score_log_probs is not None:
        if score_log_probs.shape != (n, k):
            raise ValueError(
                f"score_log_probs must be [{n}, {k}], got {tuple(score_log_probs.shape)}"
            )
        nll = -at_gold_score(score_log_probs.float(), gold, scores)
    else:
        nll = -probability_reward(probs, gold, scores).clamp_min(cfg.min_prob).log()
    if cfg.refine_terms == "sq":
        refine_per = sq
    elif cfg.refine_terms == "nll":
        refine_per = nll
    else:
        refine_per = sq + cfg.lambda_p * nll
    refine = _seq_mean(refine_per, normalizer)

    loss = pg.to(torch.float32) + cfg.beta * refine
    reg_total, reg_metrics = _regularisers(
        token_logprobs,
        cot_mask,
        cfg.pg_agg,
        cfg.kl_coef,
        cfg.kl_kind,
        cfg.entropy_coef,
        ref_logprobs,
        entropies,
        normalizer,
    )
    loss = loss + reg_total

    metrics: dict[str, float] = {
        "loss": loss.item(),
        "pg_loss": pg.item(),
        "refine_loss": refine.item(),
        "sq_err": sq.detach().mean().item(),
        "nll_gold": nll.detach().mean().item(),
        "score_mass": probs.detach().sum(-1).mean().item(),
        "cot_tokens/mean": cot_mask.float().sum(-1).mean().item(),
    }
    metrics.update(adv_metrics)
    metrics.update(_stats("y_hat", y_hat))
    metrics.update(reg_metrics)
    return loss, metrics


# --------------------------------------------------------------------------------------------
# GRPO / RLOO with the binary exact-match reward
# --------------------------------------------------------------------------------------------


def grpo_loss(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    decoded: torch.Tensor,
    gold: torch.Tensor,
    group_size: int,
    scores: torch.Tensor | None = None,
    advantage: Literal["grpo", "rloo"] = "grpo",
    agg: Aggregation = "token-mean",
    std_eps: float = 1e-6,
    old_logprobs: torch.Tensor | None = None,
    clip_eps: float | None = None,
    kl_coef: float = 0.0,
    kl_kind: Literal["k1", "k2", "k3"] = "k3",
    ref_logprobs: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    entropies: torch.Tensor | None = None,
    normalizer: Normalizer | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Standard RL baseline: reward ``1[decoded == round(gold)]``, group-relative advantage.

    Args:
        token_logprobs: ``[N, T]`` log pi of the sampled response tokens (with grad), usually
            the whole response including the score token.
        mask: ``[N, T]`` response mask.
        decoded: ``LongTensor [N]`` parsed score value per rollout, ``-1`` if unparsable.
        gold: ``[N]`` gold labels (rounded as in :func:`~realjudge.methods.advantages.binary_reward`).
        group_size: ``G``.
        scores: optional ``[K]`` score values (clamp gold to the scale before rounding).
        advantage: ``"grpo"``: ``(r - mean_group r) / (std_group r + std_eps)``;
            ``"rloo"``: leave-one-out ``r - mean_{j != i} r_j`` (not std-normalised).
        agg, old_logprobs, clip_eps: see :func:`policy_gradient_loss`.
        kl_coef, kl_kind, ref_logprobs, entropy_coef, entropies: optional regularisers.
        normalizer: global counts' shares, see :func:`masked_aggregate`.

    Returns:
        ``(loss, metrics)`` with detached float metrics.
    """
    n = token_logprobs.shape[0]
    if decoded.shape != (n,) or gold.shape != (n,) or mask.shape != token_logprobs.shape:
        raise ValueError("decoded and gold must be [N]; mask must match token_logprobs")
    rewards = binary_reward(decoded.to(gold.device), gold.float(), scores).float()
    if advantage == "grpo":
        adv = normalize_by_group_std(
            group_mean_advantages(rewards, group_size), group_size, eps=std_eps, std_of=rewards
        )
    elif advantage == "rloo":
        adv = loo_advantages(rewards, group_size)
    else:
        raise ValueError(f"advantage must be 'grpo' or 'rloo', got {advantage!r}")
    adv = adv.to(token_logprobs.device)
    pg = policy_gradient_loss(
        token_logprobs, adv, mask, old_logprobs, clip_eps, agg=agg, normalizer=normalizer
    )
    reg_total, reg_metrics = _regularisers(
        token_logprobs,
        mask,
        agg,
        kl_coef,
        kl_kind,
        entropy_coef,
        ref_logprobs,
        entropies,
        normalizer,
    )
    loss = pg + reg_total

    zero_std = tied_groups(rewards, group_size).float().mean()  # groups are equal-sized
    metrics: dict[str, float] = {
        "loss": loss.item(),
        "pg_loss": pg.item(),
        "parse_fail_frac": (decoded == -1).float().mean().item(),
        "frac_groups_zero_std": zero_std.item(),
        "adv/min": adv.min().item(),
        "adv/max": adv.max().item(),
    }
    metrics.update(_stats("reward", rewards))
    metrics.update(_stats("adv", adv))
    metrics.update(reg_metrics)
    return loss, metrics
