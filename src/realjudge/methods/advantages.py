"""Rewards and group-relative advantages, as small pure tensor functions.

Conventions used throughout ``realjudge.methods``:

* A batch of ``B`` prompts with ``G`` sampled rollouts each is laid out flat, **group-major**:
  rollouts ``g * G ... g * G + G - 1`` belong to prompt ``g``; ``N = B * G``.
* ``scores`` is the ``[K]`` tensor of score values in ascending order (``1., 2., ..., 5.``);
  ``probs`` are ``[N, K]`` probabilities of those scores at the score position.
* Rewards are plain tensors without gradient: callers pass detached values (``real_loss`` in
  :mod:`realjudge.methods.losses` does this itself).
"""

from __future__ import annotations

import torch

UNPARSABLE: int = -1
"""Sentinel for a rollout whose score could not be parsed (``decoded`` value)."""


# --------------------------------------------------------------------------------------------
# Group layout
# --------------------------------------------------------------------------------------------


def group_rewards_view(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """View flat per-rollout values ``[B * G]`` as ``[B, G]`` (group-major layout).

    Raises ``ValueError`` if ``group_size < 1`` or the length is not a multiple of it.
    """
    if rewards.dim() != 1:
        raise ValueError(f"expected a flat [B*G] tensor, got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"{rewards.numel()} rollouts are not a multiple of group_size={group_size}"
        )
    return rewards.view(-1, group_size)


# --------------------------------------------------------------------------------------------
# Baselines and advantages
# --------------------------------------------------------------------------------------------


def leave_one_out_baseline(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out (RLOO) baseline ``b_i = mean_{j != i, j in group(i)} r_j``.

    Args:
        rewards: ``[B * G]`` per-rollout rewards.
        group_size: ``G``.

    Returns:
        ``[B * G]`` baselines. ``b_i`` does not depend on rollout ``i``, so ``r_i - b_i`` gives
        an unbiased policy-gradient estimate. For ``G == 1`` there is no other rollout: the
        baseline is defined as the reward itself, i.e. the advantage is **zero** (a lone rollout
        carries no comparative signal; this matches RLOO/GRPO practice of skipping it).
    """
    r = group_rewards_view(rewards, group_size)
    if group_size == 1:
        return rewards.clone()
    total = r.sum(dim=1, keepdim=True)
    return ((total - r) / (group_size - 1)).reshape(-1)


def tied_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``BoolTensor [B*G]``: whether the rollout's group has one reward for all its rollouts
    (bit for bit). Such a group carries no comparative signal: its advantages are exactly 0."""
    r = group_rewards_view(rewards, group_size)
    tied = r.max(dim=1, keepdim=True).values == r.min(dim=1, keepdim=True).values
    return tied.expand_as(r).reshape(-1)


def _centred(rewards: torch.Tensor, group_size: int, baseline: torch.Tensor) -> torch.Tensor:
    """``rewards - baseline`` computed in float64, exactly 0 in tied groups, in the rewards'
    dtype. Without both, a group of equal float32 rewards gets advantages of a rounding error
    (~6e-8 for rewards near 1), which a later division by the group std + eps blows up."""
    adv = rewards.double() - baseline
    adv = torch.where(tied_groups(rewards, group_size), torch.zeros_like(adv), adv)
    return adv.to(rewards.dtype)


def loo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``A_i = r_i - b_i`` with the leave-one-out baseline; ``[B*G] -> [B*G]``.

    Equals ``G / (G - 1) * (r_i - mean_group(r))``; zero for ``G == 1`` and, exactly, in a group
    whose rewards are all equal.
    """
    return _centred(rewards, group_size, leave_one_out_baseline(rewards.double(), group_size))


def group_mean_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``A_i = r_i - mean_group(r)`` (baseline includes rollout ``i``); ``[B*G] -> [B*G]``.

    This is ``(G - 1) / G`` times the LOO advantage, so it is a (slightly) down-scaled unbiased
    estimator; zero for ``G == 1`` and, exactly, in a group whose rewards are all equal.
    """
    r = group_rewards_view(rewards.double(), group_size)
    return _centred(rewards, group_size, r.mean(dim=1, keepdim=True).expand_as(r).reshape(-1))


def group_std(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """Unbiased (``correction=1``) standard deviation of each group, broadcast back to ``[B*G]``.

    Defined as ``0`` for ``G == 1`` (instead of NaN).
    """
    v = group_rewards_view(values, group_size)
    if group_size == 1:
        return torch.zeros_like(values)
    return v.std(dim=1, keepdim=True).expand_as(v).reshape(-1)


def normalize_by_group_std(
    advantages: torch.Tensor,
    group_size: int,
    eps: float = 1e-6,
    std_of: torch.Tensor | None = None,
) -> torch.Tensor:
    """Divide each advantage by its group's standard deviation plus ``eps``.

    Args:
        advantages: ``[B*G]`` advantages.
        group_size: ``G``.
        eps: added to the std, so a group whose rewards are all equal (std 0, advantage 0) stays
            0; it also bounds how far tiny reward differences are blown up (advantages of a group
            with reward std ``s`` are scaled by ``s / (s + eps)``).
        std_of: ``[B*G]`` values whose within-group std is used; default ``advantages`` itself.
            Pass the rewards to get the GRPO convention ``(r - b) / (std(r) + eps)``.

    Returns:
        ``[B*G]``. For ``G == 1`` the std is taken as 0, so the result is ``advantages / eps``
        (which is 0 for LOO / group-mean advantages).
    """
    ref = advantages if std_of is None else std_of
    if ref.shape != advantages.shape:
        raise ValueError(f"std_of shape {tuple(ref.shape)} != {tuple(advantages.shape)}")
    return advantages / (group_std(ref, group_size) + eps)


def clip_advantages(advantages: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Clamp advantages to ``[-clip, clip]``; ``clip=None`` returns them unchanged."""
    if clip is None:
        return advantages
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    return advantages.clamp(-clip, clip)


# --------------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------------


def _check_scores(scores: torch.Tensor) -> None:
    if scores.dim() != 1 or scores.numel() < 1:
        raise ValueError(f"scores must be a non-empty [K] tensor, got shape {tuple(scores.shape)}")
    if scores.numel() > 1 and not bool((scores[1:] > scores[:-1]).all()):
        raise ValueError("scores must be strictly ascending")


def gold_to_score_index(gold: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Index into ``scores`` of the score nearest to each gold label.

    Gold labels may be fractional (a mean of annotators, e.g. ``4.33``) or outside the scale.
    Rule: clamp ``gold`` to ``[scores[0], scores[-1]]``, then take the nearest score; an exact tie
    (``4.5`` between 4 and 5) goes to the **higher** score (round half up). So with scores 1..5:
    ``4.33 -> 4``, ``4.5 -> 5``, ``3.67 -> 4``, ``0.2 -> 1``, ``7 -> 5``.

    Args:
        gold: ``[...]`` float gold labels.
        scores: ``[K]`` strictly ascending score values.

    Returns:
        ``LongTensor [...]`` with values in ``[0, K)``.
    """
    _check_scores(scores)
    scores = scores.to(device=gold.device, dtype=torch.float64)
    g = gold.to(torch.float64).clamp(scores[0].item(), scores[-1].item())
    dist = (g.unsqueeze(-1) - scores).abs()  # [..., K]
    # argmin returns the first minimum; searching the reversed scale makes ties go up.
    k = scores.numel()
    return (k - 1) - dist.flip(-1).argmin(dim=-1)


def regression_reward(y_hat: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Regression reward ``-(y_hat - gold)^2``; ``[N], [N] -> [N]``."""
    return -((y_hat - gold.to(y_hat.dtype)) ** 2)


def at_gold_score(values: torch.Tensor, gold: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Each row's entry in the column of its (rounded) gold score: ``[N, K], [N] -> [N]``
    (probabilities, log-probabilities, ... of the K scores; rounded by
    :func:`gold_to_score_index`)."""
    idx = gold_to_score_index(gold, scores).to(values.device)
    return values.gather(-1, idx.unsqueeze(-1)).squeeze(-1)


def probability_reward(
    probs: torch.Tensor, gold: torch.Tensor, scores: torch.Tensor
) -> torch.Tensor:
    """Probability the score distribution gives to the (rounded) gold score, ``p(round(y)|x,c)``.

    Args:
        probs: ``[N, K]`` score probabilities (normalised or raw full-vocabulary ones).
        gold: ``[N]`` gold labels, rounded by :func:`gold_to_score_index`.
        scores: ``[K]`` ascending score values.

    Returns:
        ``[N]``.
    """
    return at_gold_score(probs, gold, scores)


def binary_reward(
    decoded: torch.Tensor, gold: torch.Tensor, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact-match reward ``1[decoded == round(gold)]`` of the standard RL baseline.

    Args:
        decoded: ``LongTensor [N]`` score value parsed from each rollout, or
            :data:`UNPARSABLE` (``-1``) when no score could be parsed (reward 0).
        gold: ``[N]`` gold labels.
        scores: optional ``[K]`` score values; if given, gold is rounded with
            :func:`gold_to_score_index` (clamped to the scale, ties up); otherwise it is rounded
            half up (``floor(gold + 0.5)``) without clamping.

    Returns:
        ``float [N]`` of 0/1 (dtype of ``gold`` if floating, else float32).
    """
    if scores is not None:
        target = scores.to(gold.device)[gold_to_score_index(gold, scores)]
        target = torch.round(target.to(torch.float64)).long()
    else:
        target = torch.floor(gold.to(torch.float64) + 0.5).long()
    hit = (decoded.long() == target) & (decoded.long() != UNPARSABLE)
    out_dtype = gold.dtype if gold.is_floating_point() else torch.float32
    return hit.to(out_dtype)
