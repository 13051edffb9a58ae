"""Shared plumbing of the training objectives: the context they run in and the RAIL read-out.

An objective turns the records of one step into *items* (``prepare``: tokenise, and for RL
sample rollouts) and a micro-batch of items into a loss (``loss``), always through
:func:`realjudge.inference.batch.make_batch` and one
:func:`realjudge.inference.batch.judge_forward` -- so the token log-probs and the score
distribution of a row come from the same pass, at the same positions inference uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from realjudge.data.records import JudgeRecord
from realjudge.inference.batch import JudgeBatch, JudgeForward, judge_forward, make_batch
from realjudge.methods import Normalizer, at_gold_score
from realjudge.scoring import rail
from realjudge.scoring.vocab import ScoreVocab
from realjudge.train.examples import Encoder, Example


@dataclass
class Context:
    """What an objective needs besides the model: settings, tokenisation, the score vocabulary.

    ``ref_logprobs_fn`` (RL with ``kl_coef``) maps a batch to the reference policy's token
    log-probs.
    """

    cfg: Any
    accelerator: Any
    tokenizer: Any
    encoder: Encoder
    vocab: ScoreVocab
    scale: tuple[int, int]
    ref_logprobs_fn: Any = None
    score_ids: torch.Tensor = field(init=False)
    scores: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.score_ids = torch.tensor(self.vocab.token_ids, dtype=torch.long)
        self.scores = torch.tensor(self.vocab.scores, dtype=torch.float32)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def _cache_forward(self, key: str) -> bool:
        """Whether the config's switch ``key`` (``share_prompt_forward``,
        ``share_prefix_forward``) may run part of a training forward from a KV cache: not
        under gradient checkpointing (which turns the KV cache off), DeepSpeed ZeRO-3 or FSDP
        (two forward calls per micro-batch are not verified on sharded weights)."""
        from realjudge.train.generation import sharding

        cfg = self.cfg
        if not getattr(cfg, key, False) or cfg.gradient_checkpointing:
            return False
        return sharding(self.accelerator) is None

    @property
    def prompt_group_size(self) -> int:
        """Rows per prompt for which :func:`forward_examples` runs a shared prompt once: the
        RL configs' ``num_generations`` with ``share_prompt_forward`` (consecutive rows that
        do not share a prompt fall back to the full pass), else 1; 1 where
        :meth:`_cache_forward` says no."""
        if not self._cache_forward("share_prompt_forward"):
            return 1
        return int(self.cfg.num_generations)

    @property
    def share_prefix(self) -> bool:
        """Whether :func:`forward_examples` runs a prompt prefix common to a whole mini-batch
        once (``share_prefix_forward``, where :meth:`_cache_forward` allows it)."""
        return self._cache_forward("share_prefix_forward")


class Objective(Protocol):
    """One training method. ``passes``: how often the update loop runs over a step's items.

    ``units``: ``(loss tokens, sequences)`` of some items, summed by the update loop over a
    mini-batch and all processes into the :class:`~realjudge.methods.Normalizer` that
    ``loss`` divides by (``None``: means over the items given)."""

    passes: int

    def prepare(
        self, ctx: Context, model: Any, records: Sequence[JudgeRecord], step: int
    ) -> tuple[list[Any], dict[str, float]]: ...

    def units(self, ctx: Context, items: Sequence[Any]) -> tuple[int, int]: ...

    def loss(
        self, ctx: Context, model: Any, items: Sequence[Any], norm: Normalizer | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


def unit_counts(rows: Sequence[Example]) -> tuple[int, int]:
    """``(tokens, sequences)`` the losses of ``rows`` average over: the loss tokens (the
    ``loss_len`` leading response tokens each row's ``response_mask`` covers) and the rows."""
    return sum(r.loss_len for r in rows), len(rows)


def forward_examples(
    ctx: Context,
    model: Any,
    rows: Sequence[Example],
    entropy: bool = False,
    group_size: int | None = None,
    share_prefix: bool | None = None,
) -> tuple[JudgeBatch, JudgeForward]:
    """:func:`~realjudge.inference.batch.judge_forward` over ``rows`` (prompt + response);
    ``group_size``: rows per shared prompt (default :attr:`Context.prompt_group_size`);
    ``share_prefix``: run the rows' common prompt prefix once (default
    :attr:`Context.share_prefix`)."""
    batch = make_batch(
        [r.prompt_ids for r in rows],
        [r.response_ids for r in rows],
        ctx.pad_id,
        score_index=[r.score_index for r in rows],
        loss_lengths=[r.loss_len for r in rows],
    ).to(ctx.device)
    if group_size is None:
        group_size = ctx.prompt_group_size
    if share_prefix is None:
        share_prefix = ctx.share_prefix
    fwd = judge_forward(
        model, batch, entropy=entropy, group_size=group_size, share_prefix=share_prefix
    )
    return batch, fwd


def read_scores(
    ctx: Context, score_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(probs [N, K], leaked [N], y_hat [N])`` at the score position (differentiable)."""
    probs, leaked = rail.score_distribution(
        score_logits, ctx.score_ids.to(score_logits.device), normalize=ctx.cfg.rail_normalize
    )
    y_hat = rail.expected_score(probs, ctx.scores)
    return probs, leaked, y_hat


def read_score_log_probs(ctx: Context, score_logits: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` log of :func:`read_scores`' probabilities, from a log-softmax
    (differentiable where the probability underflows)."""
    return rail.score_log_probs(
        score_logits, ctx.score_ids.to(score_logits.device), normalize=ctx.cfg.rail_normalize
    )


def read_gold_logprob(ctx: Context, score_logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """``[N]`` ``log p(round(y))`` of the same distribution as :func:`read_scores`."""
    return at_gold_score(read_score_log_probs(ctx, score_logits), gold, ctx.scores)


def score_metrics(
    y_hat: torch.Tensor, leaked: torch.Tensor, gold: torch.Tensor
) -> dict[str, float]:
    """Diagnostics of the score read-out: y_hat mean/std, leaked mass, squared error."""
    y = y_hat.detach().float()
    g = gold.to(y.device, torch.float32)
    return {
        "y_hat/mean": y.mean().item(),
        "y_hat/std": y.std().item() if y.numel() > 1 else 0.0,
        "leaked_mass": leaked.detach().float().mean().item(),
        "sq_err": ((y - g) ** 2).mean().item(),
    }


@dataclass
class CollapseWatch:
    """Says when the score read-out has collapsed: for ``patience`` steps in a row every row
    of a step got the same expected score (``y_hat/std`` below ``tol``). There the score
    distribution is one score token for every input, the gradient of ``(y_hat - y)^2``
    through it vanishes and the evaluation curve stays flat until noise moves the model out
    (``docs/training.md``). ``update`` returns the warning once per such stretch, else None.
    """

    patience: int = 10
    tol: float = 1e-3
    streak: int = 0

    def update(self, step: int, metrics: dict[str, float]) -> str | None:
        std = metrics.get("y_hat/std")
        if std is None or not std < self.tol:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak != self.patience:
            return None
        mean = metrics.get("y_hat/mean", float("nan"))
        return (
            f"step {step}: for {self.patience} steps every row got the same expected score "
            f"(y_hat/std < {self.tol:g}; y_hat/mean {mean:.3f}): the score distribution has "
            "collapsed onto one score, where the regression gradient vanishes (grad_norm "
            "near 0) and the evaluation curve stays flat until the run leaves it; a lower "
            "learning_rate, another seed or, for RAFT, raft_lambda_p may avoid it "
            "(docs/training.md)"
        )


def gold_tensor(rows: Sequence[Example], device: torch.device) -> torch.Tensor:
    """``[N]`` float32 gold scores of ``rows``."""
    return torch.tensor([r.gold for r in rows], dtype=torch.float32, device=device)


def mean_metrics(dicts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over the dicts that have it (``{}`` for none)."""
    keys: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in d.items():
            keys.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in keys.items()}


def mini_batch_prompts(cfg: Any) -> int:
    """Prompts per optimiser update, over all processes (``mini_batch_size``, RL only; else
    the whole ``batch_size``)."""
    return getattr(cfg, "mini_batch_size", None) or cfg.batch_size


def check_sizes(cfg: Any, world: int) -> int:
    """Prompts per process per micro-batch (the update loop's unit, also used to chunk the
    no-grad passes of RL); raises when the global sizes do not split over ``world``
    processes and ``grad_accum`` micro-batches."""
    mini = mini_batch_prompts(cfg)
    if cfg.batch_size % world or mini % world:
        raise ValueError(
            f"batch_size ({cfg.batch_size}) and mini_batch_size ({mini}) must divide by the "
            f"number of processes ({world})"
        )
    if (mini // world) % cfg.grad_accum:
        raise ValueError(
            f"each process's mini-batch ({mini // world} prompts) must divide into grad_accum "
            f"({cfg.grad_accum}) micro-batches"
        )
    return mini // world // cfg.grad_accum
