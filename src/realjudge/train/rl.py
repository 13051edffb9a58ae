"""RL objectives: GRPO/RLOO with the binary reward, and REAL.

Each step: sample ``G`` CoTs per prompt with the current weights (``rollout.sample``), cut each
right after its cue (``finish_rollout``; a missing cue is appended and counted, and the
appended tokens get no credit), then run ``ppo_epochs`` passes of updates over the rollouts.
Per micro-batch, ONE :func:`~realjudge.inference.batch.judge_forward` over prompt + rollout
gives the CoT token log-probs and the logits at the score position:

* REAL: score distribution -> :func:`realjudge.methods.real_loss` (CoT exploration with LOO
  advantages of the regression and probability rewards + the refinement term). The advantages
  are fixed per rollout: :func:`realjudge.methods.real_advantages` of the score distribution
  of the first forward pass over a group (the sampling-policy forward when ``clip_eps`` needs
  one, else the first update pass's own forward, before its backward), stored on the
  :class:`PromptGroup` and reused by every later pass -- no forward pass is added. The
  refinement term always uses the current forward's distribution.
* GRPO: the sampled score token is part of the response and of the PG loss; reward
  ``1[written score == round(y)]`` -> :func:`realjudge.methods.grpo_loss`. The written score is
  the score token right after the cue, or -- when the cue was re-tokenized or forced, or other
  text follows it -- the score evaluation's parser
  (:func:`realjudge.inference.judge.parse_score`) reads in the rollout's whole text, so a
  readable score earns its reward whatever its tokenisation (such a rollout's PG loss covers
  the CoT the model sampled before the cue). The reward depends only on the sampled tokens, so
  its advantages are the same on every pass.

Rows are laid out group-major (the ``G`` rollouts of a prompt next to each other), as the
advantage functions expect; micro-batches hold whole groups.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from realjudge.data.records import JudgeRecord
from realjudge.inference.parse import parse_score
from realjudge.inference.rollout import (
    FORCED_CUE,
    OK,
    RETOKENIZED_CUE,
    Rollout,
    finish_rollout,
    stop_token_ids,
    written_text,
)
from realjudge.methods import (
    UNPARSABLE,
    RealLossConfig,
    grpo_loss,
    real_advantages,
    real_loss,
)
from realjudge.models import generation_dtype
from realjudge.train.examples import Example, chunks, derive_seed
from realjudge.train.generation import rollout_backend
from realjudge.train.objectives import (
    Context,
    check_sizes,
    forward_examples,
    gold_tensor,
    mean_metrics,
    read_scores,
    score_metrics,
)


@dataclass
class PromptGroup:
    """One prompt and its ``G`` rollouts; ``old``/``ref``: per-rollout token log-probs of the
    sampling / reference policy over each row's response (when needed); ``advantages``: REAL's
    ``[G]`` advantages, set by the first forward pass over the group and then kept."""

    prompt_ids: list[int]
    gold: float
    rollouts: list[Rollout]
    old: list[torch.Tensor] | None = None
    ref: list[torch.Tensor] | None = None
    advantages: torch.Tensor | None = None


def sample_groups(
    ctx: Context,
    model: Any,
    records: Sequence[JudgeRecord],
    step: int,
    *,
    group_size: int,
    temperature: float,
    top_p: float,
    greedy: bool = False,
) -> tuple[list[PromptGroup], dict[str, float]]:
    """``G`` rollouts for each record (seeded by ``(seed, step, process)``) and their stats."""
    acc, cfg = ctx.accelerator, ctx.cfg
    stops = stop_token_ids(ctx.tokenizer, acc.unwrap_model(model))
    groups: list[PromptGroup] = []
    per_call = getattr(cfg, "generation_batch_size", None) or max(1, len(records))
    t0 = time.perf_counter()
    generated = 0
    with rollout_backend(ctx, model) as gen:
        for b, part in enumerate(chunks(list(records), per_call)):
            torch.manual_seed(derive_seed("rollout", cfg.seed, step, acc.process_index, b))
            prompts = [ctx.encoder.prompt_ids(r) for r in part]
            outs = gen.sample(
                ctx.tokenizer,
                prompts,
                num_samples=group_size,
                max_new_tokens=cfg.max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                greedy=greedy,
                stop_strings=ctx.vocab.stop_strings,
                dtype=generation_dtype(acc.mixed_precision, acc.device),
            )
            generated += sum(_generated_length(o, stops | {ctx.pad_id}) for o in outs)
            for j, rec in enumerate(part):
                rolls = [
                    read_rollout(ctx, o, stops) for o in outs[j * group_size : (j + 1) * group_size]
                ]
                groups.append(PromptGroup(prompts[j], float(rec.gold), rolls))
    flat = [r for g in groups for r in g.rollouts]
    n = max(1, len(flat))
    parsed = sum(r.sampled_score is None and r.parsed_score is not None for r in flat)
    stats = {
        "rollout/len_mean": sum(r.n_sampled for r in flat) / n,
        "rollout/len_max": float(max((r.n_sampled for r in flat), default=0)),
        "rollout/forced_cue_rate": sum(r.status == FORCED_CUE for r in flat) / n,
        "rollout/retokenized_cue_rate": sum(r.status == RETOKENIZED_CUE for r in flat) / n,
        "rollout/score_written_rate": sum(r.sampled_score is not None for r in flat) / n,
        "rollout/score_parsed_rate": parsed / n,
        "rollout/forced_cue_count": float(sum(r.status != OK for r in flat)),
        "rollout/tokens": float(generated),
        "time/rollout_s": time.perf_counter() - t0,
    }
    return groups, stats


def read_rollout(ctx: Context, generated: Sequence[int], stops: set[int]) -> Rollout:
    """One sampled continuation cut at its cue (:func:`finish_rollout`); when no score token
    follows a canonical cue, ``parsed_score`` is what evaluation's parser reads in its whole
    text (:func:`realjudge.inference.judge.parse_score`, on the data's scale)."""
    r = finish_rollout(generated, ctx.tokenizer, ctx.vocab, stops)
    if r.sampled_score is None:
        r.parsed_score = parse_score(written_text(generated, ctx.tokenizer, stops), ctx.scale)
    return r


def _generated_length(ids: Sequence[int], stops: set[int]) -> int:
    """Tokens the model generated in one continuation: up to and including its first end
    token (``stops``: end and pad tokens; rows that stopped early are padded)."""
    for j, t in enumerate(ids):
        if t in stops:
            return j + 1
    return len(ids)


class _RLObjective:
    """Sampling, optional old/reference log-probs, and the row layout; subclasses add the loss."""

    def __init__(self, cfg: Any) -> None:
        self.passes = cfg.ppo_epochs

    # -- rows -------------------------------------------------------------------------------

    def rows(self, ctx: Context, group: PromptGroup) -> list[Example]:
        raise NotImplementedError

    def flat_rows(self, ctx: Context, groups: Sequence[PromptGroup]) -> list[Example]:
        return [row for g in groups for row in self.rows(ctx, g)]

    # -- step preparation ---------------------------------------------------------------------

    def prepare(self, ctx: Context, model: Any, indexed, step: int):
        cfg = ctx.cfg
        records = [r for _, r in indexed]
        groups, stats = sample_groups(
            ctx,
            model,
            records,
            step,
            group_size=cfg.num_generations,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
        )
        if cfg.clip_eps is not None or cfg.kl_coef:
            stats.update(self._attach_logprobs(ctx, model, groups))
        return groups, stats

    def sampling_forward(
        self, ctx: Context, groups: Sequence[PromptGroup], rows: Sequence[Example], fwd: Any
    ) -> dict[str, float]:
        """Hook: the sampling policy's forward over ``groups`` (when ``clip_eps`` needs one)."""
        return {}

    @torch.no_grad()
    def _attach_logprobs(
        self, ctx: Context, model: Any, groups: list[PromptGroup]
    ) -> dict[str, float]:
        """Sampling-policy (for ratio clipping) and reference (for KL) token log-probs, computed
        once per step, in micro-batches of the size the updates use. Returns the averaged
        metrics of :meth:`sampling_forward`."""
        cfg = ctx.cfg
        hook_metrics: list[dict[str, float]] = []
        micro = check_sizes(cfg, ctx.accelerator.num_processes)
        for part in chunks(groups, micro):
            rows = self.flat_rows(ctx, part)
            lens = [len(r.response_ids) for r in rows]
            old = ref = None
            if cfg.clip_eps is not None:
                _, fwd = forward_examples(ctx, model, rows)
                old = fwd.token_logprobs.float().cpu()
                hook_metrics.append(self.sampling_forward(ctx, part, rows, fwd))
            if cfg.kl_coef:
                ref = ctx.ref_logprobs_fn(rows).float().cpu()
            for gi, g in enumerate(part):
                sl = slice(gi * cfg.num_generations, (gi + 1) * cfg.num_generations)
                if old is not None:
                    g.old = [old[i, : lens[i]] for i in range(sl.start, sl.stop)]
                if ref is not None:
                    g.ref = [ref[i, : lens[i]] for i in range(sl.start, sl.stop)]
        return mean_metrics(hook_metrics)

    @staticmethod
    def _stack(parts: list[torch.Tensor] | None, width: int, device: torch.device):
        out = torch.zeros(len(parts), width, dtype=torch.float32)
        for i, t in enumerate(parts):
            out[i, : t.numel()] = t
        return out.to(device)

    def _old_ref(self, ctx: Context, groups: Sequence[PromptGroup], width: int):
        old = ref = None
        if groups and groups[0].old is not None:
            old = self._stack([t for g in groups for t in g.old], width, ctx.device)
        if groups and groups[0].ref is not None:
            ref = self._stack([t for g in groups for t in g.ref], width, ctx.device)
        return old, ref


class GRPOObjective(_RLObjective):
    """Binary exact-match reward on the written score (:attr:`Rollout.written_score`); PG over
    the sampled CoT + score token (the CoT before the cue when the cue was rewritten)."""

    def rows(self, ctx: Context, group: PromptGroup) -> list[Example]:
        rows = []
        for r in group.rollouts:
            resp, n = list(r.response_ids), r.n_sampled
            if r.status == OK and r.sampled_score is not None:
                resp.append(ctx.vocab.token_ids[ctx.vocab.scores.index(r.sampled_score)])
                n += 1
            rows.append(Example(group.prompt_ids, resp, len(r.response_ids), n, group.gold))
        return rows

    def loss(self, ctx: Context, model: Any, groups: Sequence[PromptGroup]):
        cfg = ctx.cfg
        rows = self.flat_rows(ctx, groups)
        batch, fwd = forward_examples(ctx, model, rows, entropy=cfg.entropy_coef != 0)
        decoded = torch.tensor(
            [
                r.written_score if r.written_score is not None else UNPARSABLE
                for g in groups
                for r in g.rollouts
            ],
            dtype=torch.long,
            device=ctx.device,
        )
        gold = gold_tensor(rows, ctx.device)
        old, ref = self._old_ref(ctx, groups, batch.response_len)
        loss, metrics = grpo_loss(
            fwd.token_logprobs,
            batch.response_mask,
            decoded,
            gold,
            cfg.num_generations,
            scores=ctx.scores.to(ctx.device),
            advantage=cfg.advantage,
            agg=cfg.pg_agg,
            old_logprobs=old,
            clip_eps=cfg.clip_eps,
            kl_coef=cfg.kl_coef,
            kl_kind=cfg.kl_kind,
            ref_logprobs=ref,
            entropy_coef=cfg.entropy_coef,
            entropies=fwd.token_entropy,
        )
        _, leaked, y_hat = read_scores(ctx, fwd.score_logits.detach())
        metrics.update({k: v for k, v in score_metrics(y_hat, leaked, gold).items()})
        return loss, metrics


class REALObjective(_RLObjective):
    """REAL: CoT exploration + prediction refinement from one forward pass per micro-batch."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.loss_cfg = RealLossConfig(
            baseline=cfg.baseline,
            normalize_std=cfg.normalize_std,
            adv_clip=cfg.adv_clip,
            lambda_p=cfg.lambda_p,
            beta=cfg.beta,
            refine_terms=cfg.refine_terms,
            pg_agg=cfg.pg_agg,
            clip_eps=cfg.clip_eps,
            kl_coef=cfg.kl_coef,
            kl_kind=cfg.kl_kind,
            entropy_coef=cfg.entropy_coef,
        )

    def rows(self, ctx: Context, group: PromptGroup) -> list[Example]:
        return [
            Example(
                group.prompt_ids, list(r.response_ids), len(r.response_ids), r.n_sampled, group.gold
            )
            for r in group.rollouts
        ]

    def fixed_advantages(
        self, ctx: Context, groups: Sequence[PromptGroup], probs: torch.Tensor, gold: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The groups' advantages: computed from ``probs`` (detached) for groups that have none
        yet -- the first forward pass over them -- and stored; stored ones are reused. Returns
        ``(advantages [N], metrics of the ones computed now)``."""
        metrics: dict[str, float] = {}
        if any(g.advantages is None for g in groups):
            G = ctx.cfg.num_generations
            adv, metrics = real_advantages(
                probs.detach(), ctx.scores.to(probs.device), gold, G, self.loss_cfg
            )
            for gi, g in enumerate(groups):
                if g.advantages is None:
                    g.advantages = adv[gi * G : (gi + 1) * G].detach()
        return torch.cat([g.advantages for g in groups]).to(ctx.device), metrics

    def sampling_forward(
        self, ctx: Context, groups: Sequence[PromptGroup], rows: Sequence[Example], fwd: Any
    ) -> dict[str, float]:
        probs, _, _ = read_scores(ctx, fwd.score_logits)
        gold = gold_tensor(rows, probs.device)
        return self.fixed_advantages(ctx, groups, probs, gold)[1]

    def loss(self, ctx: Context, model: Any, groups: Sequence[PromptGroup]):
        cfg = ctx.cfg
        rows = self.flat_rows(ctx, groups)
        batch, fwd = forward_examples(ctx, model, rows, entropy=cfg.entropy_coef != 0)
        probs, leaked, _ = read_scores(ctx, fwd.score_logits)
        gold = gold_tensor(rows, ctx.device)
        old, ref = self._old_ref(ctx, groups, batch.response_len)
        adv, adv_metrics = self.fixed_advantages(ctx, groups, probs, gold)
        loss, metrics = real_loss(
            fwd.token_logprobs,
            batch.response_mask,
            probs,
            ctx.scores.to(ctx.device),
            gold,
            cfg.num_generations,
            self.loss_cfg,
            advantages=adv,
            old_logprobs=old,
            ref_logprobs=ref,
            entropies=fwd.token_entropy,
        )
        metrics.update(adv_metrics)
        metrics["leaked_mass"] = leaked.detach().float().mean().item()
        return loss, metrics
