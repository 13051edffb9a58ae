"""Periodic evaluation during training: correlation of RAIL predictions with gold.

Two modes, both through the same batch layout and forward pass as training:

* ``score``: prompt + cue, read the score distribution at once (no CoT; one forward pass).
* ``cot``: greedy CoT (``rollout.sample``, cut at the cue, forced cue when absent), then the
  distribution right after the cue.

The records are split evenly over the processes (padded, so every process runs the same
number of forward passes -- FSDP/ZeRO-3 need that) and the predictions gathered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import gather_object

from realjudge.data.embedded import check_items
from realjudge.data.records import JudgeRecord
from realjudge.inference.rollout import FORCED_CUE, OK, RETOKENIZED_CUE
from realjudge.scoring.agreement import check_accuracy, correlation_metrics
from realjudge.train.examples import Example, chunks, shard
from realjudge.train.objectives import Context, forward_examples, read_scores
from realjudge.train.rl import sample_groups


@torch.no_grad()
def evaluate(
    ctx: Context, model: Any, records: Sequence[JudgeRecord], mode: str, step: int = 0
) -> dict[str, float]:
    """Pearson/Spearman/Kendall/RMSE/MAE/accuracy of RAIL predictions, plus leaked mass (and
    the forced-cue rate for ``cot``, and ``check_accuracy`` of the feedbacks' item-by-item checks
    when the records' ``meta`` has them); an undefined correlation is NaN. Collective: every
    process must call it."""
    acc, cfg = ctx.accelerator, ctx.cfg
    world, rank = acc.num_processes, acc.process_index
    idx = list(range(len(records)))
    idx += idx[-1:] * (-len(idx) % world)
    mine = shard(idx, rank, world)
    was_training = model.training
    model.eval()
    results: list[tuple[int, float, float, str, str]] = []
    for part in chunks(mine, cfg.eval_batch_size):
        recs = [records[i] for i in part]
        statuses = [OK] * len(part)
        feedbacks = [""] * len(part)
        if mode == "score":
            rows = [Example(ctx.encoder.score_prompt_ids(r), [], 0, 0, r.gold) for r in recs]
        else:
            groups, _ = sample_groups(
                ctx, model, recs, group_size=1, temperature=1.0, top_p=1.0, greedy=True
            )
            rows = [
                Example(
                    g.prompt_ids,
                    g.rollouts[0].response_ids,
                    len(g.rollouts[0].response_ids),
                    0,
                    g.gold,
                )
                for g in groups
            ]
            statuses = [g.rollouts[0].status for g in groups]
            feedbacks = [g.rollouts[0].feedback for g in groups]
        _, fwd = forward_examples(ctx, model, rows)
        _, leaked, y_hat = read_scores(ctx, fwd.score_logits)
        outs = zip(part, y_hat.tolist(), leaked.tolist(), statuses, feedbacks, strict=True)
        results.extend(outs)
    model.train(was_training)
    by_index = {i: (y, lk, f, fb) for i, y, lk, f, fb in gather_object(results)}
    order = sorted(by_index)
    pred = [by_index[i][0] for i in order]
    gold = [float(records[i].gold) for i in order]
    m = correlation_metrics(pred, gold, scale=ctx.scale, n_boot=0)
    out = {
        k: (float("nan") if m.get(k) is None else float(m[k]))
        for k in ("pearson", "spearman", "kendall", "rmse", "mae", "accuracy")
    }
    out["leaked_mass"] = sum(by_index[i][1] for i in order) / max(1, len(order))
    if mode == "cot":
        # as realjudge eval counts them: the cue appended to a feedback without one, and a
        # cue the judge wrote but not as the canonical tokens (cut and written anew)
        for key, status in (
            ("forced_cue_rate", FORCED_CUE),
            ("retokenized_cue_rate", RETOKENIZED_CUE),
        ):
            out[key] = sum(by_index[i][2] == status for i in order) / max(1, len(order))
        truths = {str(i): t for i in order if (t := check_items(records[i].meta)) is not None}
        fb_rows = [{"id": str(i), "feedback": by_index[i][3], "status": OK} for i in order]
        checks = check_accuracy(fb_rows, truths, n_boot=0)
        if checks is not None:
            out["check_accuracy"] = checks["accuracy"]
    out["n"] = float(len(order))
    return out
