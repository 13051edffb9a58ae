"""The math of every training method as small pure tensor functions.

No model loading, trainers or I/O: see :mod:`realjudge.methods.advantages` (rewards, group
baselines) and :mod:`realjudge.methods.losses` (SFT, RAFT, TRACT, GRPO/RLOO, REAL).
"""

from realjudge.methods.advantages import (
    UNPARSABLE,
    binary_reward,
    clip_advantages,
    gold_to_score_index,
    group_mean_advantages,
    group_rewards_view,
    group_std,
    leave_one_out_baseline,
    loo_advantages,
    normalize_by_group_std,
    probability_reward,
    regression_reward,
)
from realjudge.methods.losses import (
    Aggregation,
    RealLossConfig,
    entropy_bonus,
    entropy_from_logits,
    gold_log_prob,
    grpo_loss,
    kl_penalty,
    masked_aggregate,
    masked_ce,
    policy_gradient_loss,
    real_loss,
    regression_loss,
    sft_loss,
    token_logprobs_from_logits,
    token_mean,
    tract_loss,
)

__all__ = [
    "UNPARSABLE",
    "Aggregation",
    "RealLossConfig",
    "binary_reward",
    "clip_advantages",
    "entropy_bonus",
    "entropy_from_logits",
    "gold_log_prob",
    "gold_to_score_index",
    "group_mean_advantages",
    "group_rewards_view",
    "group_std",
    "grpo_loss",
    "kl_penalty",
    "leave_one_out_baseline",
    "loo_advantages",
    "masked_aggregate",
    "masked_ce",
    "normalize_by_group_std",
    "policy_gradient_loss",
    "probability_reward",
    "real_loss",
    "regression_loss",
    "regression_reward",
    "sft_loss",
    "token_logprobs_from_logits",
    "token_mean",
    "tract_loss",
]
