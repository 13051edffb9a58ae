"""``realjudge bench prefix``: a supervised training step with the prompt prefix its
mini-batch shares run once (``share_prefix_forward``) against the full pass.

Every prompt of a judging task starts with the same template -- the system message and the
task description (67 of the ~180 tokens of an embedded prompt) -- so a mini-batch of ``B``
rows computes that prefix ``B`` times in the full pass and once with the shared prefix
(:func:`realjudge.inference.batch.judge_forward`). Per method (RAFT, TRACT: the main job's
warm starts), one model and optimiser are built as ``realjudge train`` builds them
(:func:`realjudge.train.trainer.set_up`, with the main job's settings: batches of 8, the
lower half of the layers frozen, ``mixed_precision`` auto), one mini-batch of training rows
is prepared, and :func:`realjudge.train.trainer.run_updates` (forward, loss, backward,
clipping, AdamW) is timed with the shared prefix and without it, in rounds of flipping
order, after one unmeasured step of each. The ratio printed is the median of the per-round
ratios full / shared: measured side by side in one run, on whatever else the machine does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from realjudge.bench.common import _median, _ratio, format_table, torch_threads, write_json

METHODS = ("raft", "tract")


def _time_updates(run: Any, items: Sequence[Any], shared: bool) -> float:
    from realjudge.train.trainer import run_updates

    run.cfg.share_prefix_forward = shared  # the Context reads it on every forward
    t0 = time.perf_counter()
    run_updates(
        run.acc, run.ctx, run.model, run.optimizer, run.scheduler, run.objective, items, run.micro
    )
    return time.perf_counter() - t0


def _bench_method(
    method: str,
    model: str,
    data: str,
    batch_size: int,
    freeze_fraction: float,
    rounds: int,
    seed: int,
) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    from realjudge.inference.batch import common_prefix_len, make_batch
    from realjudge.quickstart import inspect_model
    from realjudge.train import build_config
    from realjudge.train.trainer import _release, set_up

    with tempfile.TemporaryDirectory(prefix="realjudge-bench-") as tmp:
        cfg = build_config(
            method,
            overrides=dict(
                model=model,
                data=data,
                out=str(Path(tmp) / "run"),
                report_to="none",
                seed=seed,
                batch_size=batch_size,
                max_steps=10**6,
                eval_limit=0,
                save_final=False,
                freeze_layers=int(inspect_model(model).layers * freeze_fraction),
            ),
        )
        run = set_up(cfg)
        try:
            records = run.train_records[:batch_size]
            items, _ = run.objective.prepare(run.ctx, run.model, list(enumerate(records)), 0)
            rows = items[:batch_size]
            layout = make_batch([r.prompt_ids for r in rows], [r.response_ids for r in rows], 0)
            prefix = common_prefix_len(layout)
            mean_prompt = sum(len(r.prompt_ids) for r in rows) / len(rows)
            for shared in (True, False):  # warm-up, not measured
                _time_updates(run, items, shared)
            values: dict[str, list[float]] = {"shared": [], "full": []}
            ratios = []
            for i in range(rounds):
                order = (True, False) if i % 2 == 0 else (False, True)
                got = {s: _time_updates(run, items, s) for s in order}
                values["shared"].append(got[True])
                values["full"].append(got[False])
                ratios.append(_ratio(got[False], got[True]))
            mixed = str(run.acc.mixed_precision)
            device = str(run.acc.device)
        finally:
            _release(run.acc)
    return {
        "speedup": _median(ratios),
        "shared_step_s": values["shared"],
        "full_step_s": values["full"],
        "rows": len(items),
        "common_prefix_tokens": prefix,
        "mean_prompt_tokens": mean_prompt,
        "freeze_layers": cfg.freeze_layers,
        "mixed_precision": mixed,
        "device": device,
    }


def bench_prefix(
    model: str = "embedded",
    data: str = "embedded",
    *,
    methods: Sequence[str] = METHODS,
    batch_size: int = 8,
    freeze_fraction: float = 0.5,
    rounds: int = 5,
    seed: int = 0,
    threads: int | None = None,
    show: bool = True,
    json_out: str | None = None,
) -> dict[str, Any]:
    """Per method, the median speedup full / shared of one training step over ``rounds``
    rounds (see the module doc); ``freeze_fraction`` of the layers frozen from the bottom, as
    the main job does."""
    from realjudge.models import runtime_environment

    if rounds < 1 or batch_size < 2:
        raise ValueError("rounds must be >= 1 and batch_size >= 2 (one row shares nothing)")
    unknown = sorted(set(methods) - {"sft", "raft", "tract"})
    if unknown:
        raise ValueError(f"supervised methods only (sft, raft, tract), got {unknown}")
    with torch_threads(threads) as threads_used:
        per_method = {
            m: _bench_method(m, model, data, batch_size, freeze_fraction, rounds, seed)
            for m in methods
        }
    out = {
        "speedups": {m: r["speedup"] for m, r in per_method.items()},
        "methods": per_method,
        "config": {
            "model": model,
            "data": data,
            "batch_size": batch_size,
            "freeze_fraction": freeze_fraction,
            "rounds": rounds,
            "seed": seed,
            "torch_threads": threads_used,
        },
        # the machine the steps ran on: train's device is ``auto`` (a GPU when there is one)
        "environment": runtime_environment(
            next(iter(per_method.values()))["device"] if per_method else "auto"
        ),
    }
    if json_out:
        write_json(out, json_out)
    if show:
        print(format_prefix_bench(out))
    return out


def format_prefix_bench(result: dict[str, Any]) -> str:
    """A table of the step times, then one line per method:
    ``<method> step speedup (shared prefix/full): X``."""
    rows = [
        [
            m,
            r["rows"],
            f"{r['common_prefix_tokens']} of {r['mean_prompt_tokens']:.0f}",
            _median(r["full_step_s"]),
            _median(r["shared_step_s"]),
        ]
        for m, r in result["methods"].items()
    ]
    table = format_table(
        ["method", "rows", "shared prefix tokens", "full step s", "shared step s"], rows
    )

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = [
        f"{m} step speedup (shared prefix/full): {fmt(s)}" for m, s in result["speedups"].items()
    ]
    return "\n".join([table, *lines])
