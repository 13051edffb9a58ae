"""RAIL: the regression-aware prediction read from the score distribution.

Pure tensor functions. ``logits`` are next-token logits at the score position (the position
right after the cue); ``score_token_ids`` come from :class:`~realjudge.scoring.vocab.ScoreVocab`.
"""

from __future__ import annotations

import torch


def score_distribution(
    logits: torch.Tensor, score_token_ids: torch.Tensor, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of the score tokens and the mass that leaked to every other token.

    Args:
        logits: ``[..., V]`` next-token logits at the score position.
        score_token_ids: ``[K]`` token id of each score, ascending by score.
        normalize: renormalise over the K score tokens (RAIL proper). ``False`` keeps the raw
            full-vocabulary probabilities, as the authors' and TRACT's code do; they then sum
            to ``1 - leaked``.

    Returns:
        ``(probs [..., K], leaked [...])``. Differentiable in ``logits``.
    """
    logits = logits.float()
    score_logits = logits.index_select(-1, score_token_ids.to(logits.device))
    log_in_scale = torch.logsumexp(score_logits, dim=-1) - torch.logsumexp(logits, dim=-1)
    leaked = -torch.expm1(log_in_scale)  # 1 - sum_k p_k, accurate when the sum is near 1
    if normalize:
        probs = torch.softmax(score_logits, dim=-1)
    else:
        probs = torch.exp(score_logits - torch.logsumexp(logits, dim=-1, keepdim=True))
    return probs, leaked


def score_log_probs(
    logits: torch.Tensor, score_token_ids: torch.Tensor, normalize: bool = True
) -> torch.Tensor:
    """``log`` of :func:`score_distribution`'s probabilities, ``[..., V] -> [..., K]``, from a
    log-softmax: finite, with a gradient, where those probabilities underflow to 0."""
    logits = logits.float()
    score_logits = logits.index_select(-1, score_token_ids.to(logits.device))
    if normalize:
        return torch.log_softmax(score_logits, dim=-1)
    return score_logits - torch.logsumexp(logits, dim=-1, keepdim=True)


def expected_score(probs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """RAIL prediction ``y_hat = sum_k k * p_k``: ``[..., K] -> [...]`` (differentiable).

    With raw (non-renormalised) probabilities it is the authors' variant: the mass leaked off
    the scale counts as score 0.
    """
    return (probs * scores.to(probs.dtype).to(probs.device)).sum(-1)


def argmax_score(probs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The most probable score (the greedy decode of the score token)."""
    return scores.to(probs.device)[probs.argmax(-1)]
