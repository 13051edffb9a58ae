"""RL objectives: GRPO/RLOO with the binary reward, and REAL.

Each step: sample ``G`` CoTs per prompt with the current weights (``rollout.sample``), cut each
right after its cue (``finish_rollout``; a missing cue is appended and counted, and the
appended tokens get no credit), then run ``ppo_epochs`` passes of updates over the rollouts.
Per micro-batch, ONE :func:`~realjudge.inference.batch.judge_forward` over prompt + rollout
gives the CoT token log-probs and the logits at the score position:

* REAL: score distribution -> :func:`realjudge.methods.real_loss` (CoT exploration with LOO
  advantages of the regression and probability rewards + the refinement term). The rewards
  are the SAMPLING policy's: in ``prepare``, once per step and for every group, before any
  update, :func:`realjudge.methods.real_advantages` of each rollout's score distribution after
  its cue as the generation pass itself computed it (raw logits recorded during ``generate``,
  :class:`~realjudge.inference.rollout.CueLogitsRecorder`, in the generation precision); only
  rows whose generation never saw the canonical cue (forced / re-tokenized) get a small
  no-grad forward -- or reuse the ``clip_eps`` forward when there is one. Eval mode
  throughout, as the rollouts were sampled. The advantages are stored on the
  :class:`PromptGroup` and reused by every mini-batch and pass, so they do not depend on
  ``mini_batch_size``. The refinement term always uses the current forward's distribution.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from realjudge.data.records import JudgeRecord
from realjudge.inference.parse import parse_score
from realjudge.inference.rollout import (
    FORCED_CUE,
    OK,
    RETOKENIZED_CUE,
    CueLogitsRecorder,
    Rollout,
    compact_logits,
    compact_score_distribution,
    finish_rollout,
    logits_after_cue,
    stop_token_ids,
    written_text,
)
from realjudge.methods import (
    UNPARSABLE,
    Normalizer,
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
    read_score_log_probs,
    read_scores,
    score_metrics,
    unit_counts,
)


@dataclass
class PromptGroup:
    """One prompt and its ``G`` rollouts; ``old``/``ref``: per-rollout token log-probs of the
    sampling / reference policy over each row's response (when needed); ``advantages``: REAL's
    ``[G]`` advantages, set once per step by ``prepare`` (the sampling policy's; or, for a group
    built by hand, by the first loss over it) and then kept."""

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
    *,
    group_size: int,
    temperature: float,
    top_p: float,
    greedy: bool = False,
    cue_logits: bool = False,
    positions: Sequence[int] | None = None,
) -> tuple[list[PromptGroup], dict[str, float]]:
    """``G`` rollouts for each record and their stats.

    ``positions``: each record's place in the run's stream of training prompts (unique over
    the run; default ``0, 1, ...``). A prompt's rollouts are drawn with seeds derived from
    ``(seed, position)`` alone (:func:`rollout_seeds`), so they do not depend on the number
    of processes, the generation batch size or the other prompts in the batch.

    ``cue_logits``: also keep, on each rollout whose generation wrote the canonical cue and
    went on for at least one more step, the generation pass's raw score logits right after
    the cue (:attr:`Rollout.cue_logits`, from :class:`CueLogitsRecorder`): the sampling
    policy's score distribution, read without another forward pass."""
    acc, cfg = ctx.accelerator, ctx.cfg
    recorder = CueLogitsRecorder(ctx.score_ids) if cue_logits else None
    stops = stop_token_ids(ctx.tokenizer, acc.unwrap_model(model))
    groups: list[PromptGroup] = []
    per_call = getattr(cfg, "generation_batch_size", None) or max(1, len(records))
    t0 = time.perf_counter()
    generated = 0
    if positions is None:
        positions = range(len(records))
    seeds = rollout_seeds(cfg.seed, positions)
    with rollout_backend(ctx, model) as gen:
        for b, part in enumerate(chunks(list(records), per_call)):
            prompts = [ctx.encoder.prompt_ids(r) for r in part]
            part_seeds = seeds[b * per_call : b * per_call + len(part)]
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
                recorder=recorder,
                prompt_seeds=part_seeds,
            )
            steps = recorder.result() if recorder is not None else None
            generated += sum(_generated_length(o, stops | {ctx.pad_id}) for o in outs)
            for j, rec in enumerate(part):
                rows = range(j * group_size, (j + 1) * group_size)
                rolls = [read_rollout(ctx, outs[i], stops) for i in rows]
                if steps is not None:
                    for i, r in zip(rows, rolls, strict=True):
                        r.cue_logits = logits_after_cue(steps[i], r)
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


def rollout_seeds(seed: int, positions: Sequence[int]) -> list[int]:
    """The sampling seed of each prompt, from the run's seed and the prompt's position in the
    run's stream of training prompts (``step * batch_size + index in the step's batch``)."""
    return [derive_seed("rollout", seed, p) for p in positions]


def read_rollout(ctx: Context, generated: Sequence[int], stops: set[int]) -> Rollout:
    """One sampled continuation cut at its cue (:func:`finish_rollout`); when no score token
    follows a canonical cue, ``parsed_score`` is what evaluation's parser reads in its whole
    text (:func:`realjudge.inference.judge.parse_score`, on the data's scale)."""
    r = finish_rollout(generated, ctx.tokenizer, ctx.vocab, stops)
    if r.sampled_score is None:
        r.parsed_score = parse_score(written_text(generated, ctx.tokenizer, stops), ctx.scale)
    return r


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """``model`` in eval mode (no dropout: the sampling policy, as ``sample`` runs it) for the
    duration, then back to its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


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

    def units(self, ctx: Context, groups: Sequence[PromptGroup]) -> tuple[int, int]:
        """``(credited tokens, rollouts)`` of ``groups`` (the loss's denominators)."""
        return unit_counts(self.flat_rows(ctx, groups))

    # -- step preparation ---------------------------------------------------------------------

    # whether ``prepare`` asks ``sample_groups`` for the logits after each rollout's cue
    reads_cue_logits = False

    def prepare(self, ctx: Context, model: Any, indexed, step: int):
        """Sample the step's groups, then -- in eval mode, as they were sampled -- attach the
        sampling policy's old / reference log-probs (when ``clip_eps`` / ``kl_coef`` need
        them) and whatever else the objective fixes per step (:meth:`finish_prepare`)."""
        cfg = ctx.cfg
        records = [r for _, r in indexed]
        # this process holds a contiguous slice of the step's global batch (``shard``)
        first = step * cfg.batch_size + ctx.accelerator.process_index * len(records)
        groups, stats = sample_groups(
            ctx,
            model,
            records,
            positions=range(first, first + len(records)),
            group_size=cfg.num_generations,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            cue_logits=self.reads_cue_logits,
        )
        with eval_mode(model):
            if cfg.clip_eps is not None or cfg.kl_coef:
                stats.update(self._attach_logprobs(ctx, model, groups))
            stats.update(self.finish_prepare(ctx, model, groups))
        return groups, stats

    def finish_prepare(
        self, ctx: Context, model: Any, groups: list[PromptGroup]
    ) -> dict[str, float]:
        """Hook: the last part of ``prepare`` (eval mode, after the log-probs); metrics."""
        return {}

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
        once per step, in micro-batches of the size the updates use, with ``model`` as it is
        (``prepare`` puts it in eval mode: the policy that sampled). The sampling-policy
        forward is a full forward over every row, needed for ``clip_eps`` only. Returns the
        averaged metrics of :meth:`sampling_forward`."""
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

    def loss(
        self,
        ctx: Context,
        model: Any,
        groups: Sequence[PromptGroup],
        norm: Normalizer | None = None,
    ):
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
            normalizer=norm,
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
            std_eps=cfg.std_eps,
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

    reads_cue_logits = True

    def finish_prepare(
        self, ctx: Context, model: Any, groups: list[PromptGroup]
    ) -> dict[str, float]:
        """REAL's rewards and advantages for every group of the step, from the sampling
        policy: each rollout's score distribution after its cue is the one the generation pass
        itself computed there (:attr:`Rollout.cue_logits`); only the rows whose generation
        never saw the canonical cue (forced or re-tokenized cue, or none left by the clip
        forward) get one no-grad forward (eval mode, micro-batches of the update size). The
        advantages are stored on the groups; metrics: those of
        :func:`realjudge.methods.real_advantages` and ``rewards/forward_rows`` (the rows that
        needed the forward)."""
        cfg = ctx.cfg
        G = cfg.num_generations
        missing = [r for g in groups for r in g.rollouts if r.cue_logits is None]
        if missing:
            self._forward_cue_logits(ctx, model, groups)
        if not groups:
            return {"rewards/forward_rows": 0.0}
        compact = torch.stack([r.cue_logits for g in groups for r in g.rollouts]).float()
        probs, _ = compact_score_distribution(compact, normalize=cfg.rail_normalize)
        gold = torch.tensor([g.gold for g in groups for _ in range(G)], dtype=torch.float32)
        adv, metrics = real_advantages(probs, ctx.scores, gold, G, self.loss_cfg)
        for gi, g in enumerate(groups):
            g.advantages = adv[gi * G : (gi + 1) * G].detach().cpu()
        metrics["rewards/forward_rows"] = float(len(missing))
        return metrics

    @torch.no_grad()
    def _forward_cue_logits(self, ctx: Context, model: Any, groups: Sequence[PromptGroup]) -> None:
        """Fill :attr:`Rollout.cue_logits` of the rollouts that have none with one forward
        pass over just those rows (prompt + response), ``micro * G`` rows at a time."""
        todo = [(g, r) for g in groups for r in g.rollouts if r.cue_logits is None]
        per = check_sizes(ctx.cfg, ctx.accelerator.num_processes) * ctx.cfg.num_generations
        for part in chunks(todo, per):
            rows = [
                Example(g.prompt_ids, list(r.response_ids), len(r.response_ids), 0, g.gold)
                for g, r in part
            ]
            # the rows left over are not laid out in groups: the full pass (whether a chunk
            # happened to hold one prompt's rows, or which prefix its rows share, must not
            # change the rewards: their rounding would depend on the micro-batch size)
            _, fwd = forward_examples(ctx, model, rows, group_size=1, share_prefix=False)
            logits = compact_logits(fwd.score_logits, ctx.score_ids).cpu()
            for (_, r), row in zip(part, logits, strict=True):
                r.cue_logits = row

    def fixed_advantages(
        self, ctx: Context, groups: Sequence[PromptGroup], probs: torch.Tensor, gold: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The groups' advantages, fixed for the step by ``prepare`` (:meth:`finish_prepare`).
        Groups that did not go through ``prepare`` (built by hand, e.g. the step benchmark's
        shared rollouts) get them here once, from ``probs`` (detached), and keep them. Returns
        ``(advantages [N], metrics of any computed now)``."""
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
        """The clip forward doubles as the forward of the rows whose cue the generation pass
        never saw: their :attr:`Rollout.cue_logits` are taken from it (no extra pass)."""
        logits = compact_logits(fwd.score_logits.detach(), ctx.score_ids).cpu()
        flat = [r for g in groups for r in g.rollouts]
        for r, row in zip(flat, logits, strict=True):
            if r.cue_logits is None:
                r.cue_logits = row
        return {}

    def loss(
        self,
        ctx: Context,
        model: Any,
        groups: Sequence[PromptGroup],
        norm: Normalizer | None = None,
    ):
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
            normalizer=norm,
            score_log_probs=read_score_log_probs(ctx, fwd.score_logits),
        )
        metrics.update(adv_metrics)
        metrics["leaked_mass"] = leaked.detach().float().mean().item()
        return loss, metrics
