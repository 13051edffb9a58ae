"""Supervised objectives: SFT, RAFT and TRACT (stage 1 and the stage-2 CoT regeneration).

Every loss is one :func:`~realjudge.inference.batch.judge_forward` over prompt + target and a
function from :mod:`realjudge.methods`:

* SFT: response = feedback + cue + gold score token; ``sft_loss`` over all of it.
* RAFT: prompt = judge prompt + cue, empty response; ``raft_loss`` = ``(y_hat - y)^2``
  (+ ``raft_lambda_p * -log p(y)``).
* TRACT: response = CoT + cue (reference CoT in stage 1, the stage-1 model's own CoT in
  stage 2); ``tract_loss`` = CE on the CoT + ``lambda * (y_hat - y)^2`` with ``y_hat`` read at
  the position right after the cue.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate.utils import gather_object

from realjudge.data.records import JudgeRecord
from realjudge.inference.rollout import OK, finish_rollout, sample, stop_token_ids
from realjudge.methods import Normalizer, raft_loss, sft_loss, tract_loss
from realjudge.train.examples import Example, chunks, derive_seed, shard
from realjudge.train.objectives import (
    Context,
    forward_examples,
    gold_tensor,
    read_gold_logprob,
    read_scores,
    score_metrics,
    unit_counts,
)

Indexed = Sequence[tuple[int, JudgeRecord]]


class _Supervised:
    """Items are :class:`Example` rows; :meth:`units` counts them."""

    passes = 1

    def units(self, ctx: Context, rows: Sequence[Example]) -> tuple[int, int]:
        return unit_counts(rows)


class SFTObjective(_Supervised):
    def prepare(self, ctx: Context, model: Any, indexed: Indexed, step: int):
        rows = []
        for _, rec in indexed:
            ids, cue_end = ctx.encoder.target(rec)
            rows.append(Example(ctx.encoder.prompt_ids(rec), ids, cue_end, len(ids), rec.gold))
        return rows, {}

    def loss(
        self, ctx: Context, model: Any, rows: Sequence[Example], norm: Normalizer | None = None
    ):
        batch, fwd = forward_examples(ctx, model, rows)
        loss = sft_loss(fwd.token_logprobs, batch.response_mask, norm)
        _, leaked, y_hat = read_scores(ctx, fwd.score_logits.detach())
        metrics = {"loss": loss.item(), "ce": loss.item()}
        metrics.update(score_metrics(y_hat, leaked, gold_tensor(rows, ctx.device)))
        return loss, metrics


class RAFTObjective(_Supervised):
    def prepare(self, ctx: Context, model: Any, indexed: Indexed, step: int):
        rows = [Example(ctx.encoder.score_prompt_ids(r), [], 0, 0, r.gold) for _, r in indexed]
        return rows, {}

    def loss(
        self, ctx: Context, model: Any, rows: Sequence[Example], norm: Normalizer | None = None
    ):
        _, fwd = forward_examples(ctx, model, rows)
        _, leaked, y_hat = read_scores(ctx, fwd.score_logits)
        gold = gold_tensor(rows, ctx.device)
        lam = ctx.cfg.raft_lambda_p
        gold_logprob = read_gold_logprob(ctx, fwd.score_logits, gold) if lam else None
        loss, metrics = raft_loss(y_hat, gold, gold_logprob, lam, norm)
        metrics.update(score_metrics(y_hat, leaked, gold))
        return loss, metrics


class TRACTObjective(_Supervised):
    """Stage 1: reference CoTs. Stage 2: CoTs regenerated once by the starting model
    (:meth:`setup`), for the records the run will visit, cached in the output dir."""

    CACHE = "tract_stage2_cots.jsonl"

    def __init__(self) -> None:
        self.cots: dict[int, list[int]] = {}

    #: The settings that decide what the starting model regenerates: a cache written under
    #: others is regenerated (recorded next to it, :attr:`CACHE_META`).
    CACHE_KEYS = (
        "model",
        "init_from",
        "data",
        "data_split",
        "fmt",
        "max_prompt_tokens",
        "max_new_tokens",
        "regen_greedy",
        "regen_temperature",
        "regen_top_p",
        "seed",
    )
    CACHE_META = "tract_stage2_cots.meta.json"

    def setup(self, ctx: Context, model: Any, records: Sequence[JudgeRecord], needed: list[int]):
        """Stage 2: read the cached CoTs, and regenerate with ``model`` -- the starting
        weights: the trainer calls this before a checkpoint is restored -- those the run needs
        and the cache lacks (a run resumed with a larger ``max_steps`` visits more records),
        or all of them when the cache was written under other :attr:`CACHE_KEYS` settings."""
        if ctx.cfg.tract_stage != 2:
            return {}
        out = Path(ctx.cfg.out)
        cache, meta_path = out / self.CACHE, out / self.CACHE_META
        meta = {k: getattr(ctx.cfg, k) for k in self.CACHE_KEYS}
        cached: dict[int, dict[str, Any]] = {}
        if cache.is_file():
            saved = json.loads(meta_path.read_text()) if meta_path.is_file() else meta
            if saved == meta:  # (a cache from before the record: taken as it is)
                with cache.open() as f:
                    cached = {int(r["index"]): r for r in map(json.loads, f)}
            else:
                changed = sorted(k for k in meta if saved.get(k) != meta[k])
                ctx.accelerator.print(f"TRACT stage 2: {cache} was written with other {changed}")
        missing = [i for i in needed if i not in cached]
        if missing:
            self._regenerate(ctx, model, records, missing, cached, cache)
            if ctx.accelerator.is_main_process:
                meta_path.write_text(json.dumps(meta, indent=2))
        ctx.accelerator.wait_for_everyone()
        with cache.open() as f:
            self.cots = {int(r["index"]): list(r["response_ids"]) for r in map(json.loads, f)}
        return {}

    def _regenerate(self, ctx, model, records, needed, cached, cache: Path) -> None:
        """Greedy (or sampled) CoTs of the starting weights for ``needed``, split over the
        processes, written into ``cache`` with the ``cached`` rows kept."""
        from realjudge.train.generation import generation_model

        acc, cfg = ctx.accelerator, ctx.cfg
        world, rank = acc.num_processes, acc.process_index
        todo = sorted(needed)
        todo += todo[-1:] * (-len(todo) % world)  # equal shares: generation may be collective
        mine = shard(todo, rank, world)
        stops = stop_token_ids(ctx.tokenizer, acc.unwrap_model(model))
        done: list[dict[str, Any]] = []
        with generation_model(acc, model) as gen:
            for part in chunks(mine, cfg.regen_batch_size):
                prompts = [ctx.encoder.prompt_ids(records[i]) for i in part]
                outs = sample(
                    gen,
                    ctx.tokenizer,
                    prompts,
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.regen_temperature,
                    top_p=cfg.regen_top_p,
                    greedy=cfg.regen_greedy,
                    stop_strings=ctx.vocab.stop_strings,
                    # seeded per record: the same CoTs whatever the number of processes
                    prompt_seeds=[derive_seed("tract-regen", cfg.seed, i) for i in part],
                )
                for i, out in zip(part, outs, strict=True):
                    ro = finish_rollout(out, ctx.tokenizer, ctx.vocab, stops)
                    done.append(
                        {
                            "index": i,
                            "response_ids": ro.response_ids,
                            "status": ro.status,
                            "feedback": ro.feedback,
                        }
                    )
        new = {r["index"]: r for r in gather_object(done)}
        if acc.is_main_process:
            rows = {**cached, **new}
            tmp = cache.with_suffix(".tmp")
            cache.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w") as f:
                for i in sorted(rows):
                    f.write(json.dumps(rows[i]) + "\n")
            tmp.replace(cache)
            n_forced = sum(r["status"] != OK for r in new.values())
            acc.print(f"TRACT stage 2: regenerated {len(new)} CoTs ({n_forced} without a cue)")

    def prepare(self, ctx: Context, model: Any, indexed: Indexed, step: int):
        rows = []
        for i, rec in indexed:
            if ctx.cfg.tract_stage == 2:
                cot = self.cots[i]
            else:
                ids, cue_end = ctx.encoder.target(rec)
                cot = ids[:cue_end]
            rows.append(Example(ctx.encoder.prompt_ids(rec), cot, len(cot), len(cot), rec.gold))
        return rows, {}

    def loss(
        self, ctx: Context, model: Any, rows: Sequence[Example], norm: Normalizer | None = None
    ):
        batch, fwd = forward_examples(ctx, model, rows)
        _, leaked, y_hat = read_scores(ctx, fwd.score_logits)
        gold = gold_tensor(rows, ctx.device)
        loss, parts = tract_loss(
            fwd.token_logprobs, batch.response_mask, y_hat, gold, ctx.cfg.tract_lambda, norm
        )
        metrics = dict(parts)
        metrics.update(score_metrics(y_hat, leaked, gold))
        return loss, metrics
