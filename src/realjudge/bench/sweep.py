"""Performance sweep: how one REAL and one GRPO training step grow with the step's shape.

:func:`bench_sweep` varies one factor at a time around a base point -- the group size ``G``
(rollouts per prompt), the prompt length ``P`` and the response (rollout) length ``L``, both in
tokens -- and at every point measures one REAL and one GRPO training step: wall time, process
CPU time and the step's peak memory footprint, with their REAL/GRPO ratios.

The steps are the trainer's own (see :class:`realjudge.bench.train_step.TrainStepHarness`, shared with
``realjudge bench train-step``): configs from :func:`realjudge.train.build_config`, the
objectives :class:`~realjudge.train.rl.REALObjective` / :class:`~realjudge.train.rl.GRPOObjective`
and :func:`realjudge.train.trainer.run_updates` (forward via ``judge_forward``, loss, backward,
gradient clipping, AdamW step). Every measured step starts from the same weights and optimiser
state; REAL and GRPO alternate within each round (REAL GRPO, GRPO REAL, ...).

Lengths are exact. Prompts: the benchmark records, their response padded with filler words
until the rendered prompt holds at least ``P`` tokens, then cut from the left to ``P`` tokens
by the trainer's encoder (``max_prompt_tokens = P``; a record longer than ``P`` is only cut).
Rollouts: ``L`` random non-special token ids followed by the score cue (the tokens the trainer
appends when a rollout misses its cue), as :class:`~realjudge.inference.rollout.Rollout` objects
in :class:`~realjudge.train.rl.PromptGroup` s -- the types
:func:`~realjudge.train.rl.sample_groups` returns. Each row of a step is thus ``P`` prompt
tokens, ``L`` response tokens and the cue; GRPO's rows also hold the sampled score token,
which GRPO trains on (the rollouts' sampled scores differ within a group, so GRPO's rewards
do, and both methods have a gradient). The returned rows record the lengths read back from the
groups that were trained on.

Rollout generation is not timed: it costs REAL and GRPO the same (both sample ``G`` rollouts
per prompt with the same weights and settings; REAL reads its score distribution from the
update's own forward pass), and synthetic rollouts are what lets ``L`` be exact. Its cost, and
the full-step ratio with it, is measured by :func:`realjudge.bench.train_step.bench_train_step`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from realjudge.bench.common import _fmt, _MemoryProbe, format_table, write_json
from realjudge.bench.train_step import (
    METHODS,
    StepSetup,
    TrainStepHarness,
    step_ratios,
    summarize_step_runs,
    train_step_harness,
)
from realjudge.data.records import JudgeRecord

#: The factors, in table order, and the name of each in the plot.
FACTORS: dict[str, str] = {
    "group_size": "group size G",
    "prompt_tokens": "prompt tokens P",
    "response_tokens": "response tokens L",
}

#: Appended to a record's response until its prompt is long enough (one token a word in the
#: SmolLM2 tokenizer; any tokenizer works, the prompt is cut to length afterwards).
FILLER = " filler"

TABLE_HEADER = (
    "factor",
    "value",
    "real step s",
    "grpo step s",
    "real/grpo time ratio",
    "real peak MiB",
    "grpo peak MiB",
    "real/grpo memory ratio",
)


@dataclass(frozen=True)
class SweepPoint:
    """One step shape: ``group_size`` rollouts per prompt, ``prompt_tokens`` prompt tokens,
    ``response_tokens`` response tokens before the cue."""

    group_size: int
    prompt_tokens: int
    response_tokens: int


def sweep_points(
    base: SweepPoint,
    group_sizes: Sequence[int],
    prompt_tokens: Sequence[int],
    response_tokens: Sequence[int],
) -> list[tuple[str, int, SweepPoint]]:
    """``(factor, value, point)`` for every value of every factor, the other two factors at
    their base values; a factor with no values is left out."""
    values = {
        "group_size": group_sizes,
        "prompt_tokens": prompt_tokens,
        "response_tokens": response_tokens,
    }
    return [(f, v, replace(base, **{f: v})) for f in FACTORS for v in values[f]]


def _with_filler(record: JudgeRecord, words: int) -> JudgeRecord:
    filler = FILLER * words
    if record.rendered_prompt is not None:  # a pre-rendered prompt is used verbatim
        return replace(record, rendered_prompt=record.rendered_prompt + filler)
    return replace(record, response=record.response + filler)


def padded_record(record: JudgeRecord, encoder: Any, tokens: int) -> JudgeRecord:
    """``record``, with filler words after its response when its rendered prompt (uncut) has
    fewer than ``tokens`` tokens, so that it has at least that many."""
    from realjudge.scoring.prompts import render_prompt

    def length(r: JudgeRecord) -> int:
        return len(encoder.encode(render_prompt(r, encoder.tokenizer, encoder.fmt)))

    words, padded, n = 0, record, length(record)
    for _ in range(64):
        if n >= tokens:
            return padded
        words += tokens - n  # every word adds at least one token
        padded = _with_filler(record, words)
        n = length(padded)
    raise RuntimeError(f"could not pad record {record.id} to {tokens} prompt tokens")


def exact_prompt_ids(record: JudgeRecord, encoder: Any) -> list[int]:
    """The trainer's prompt ids of ``record`` padded to exactly ``encoder.max_prompt_tokens``."""
    target = encoder.max_prompt_tokens
    ids = encoder.prompt_ids(padded_record(record, encoder, target))
    if len(ids) != target:  # pragma: no cover - padding guarantees enough tokens
        raise RuntimeError(f"prompt of {len(ids)} tokens, {target} wanted")
    return ids


def cue_ids(harness: TrainStepHarness) -> list[int]:
    """The score cue's tokens as the trainer appends them to a rollout that misses its cue."""
    text = harness.vocab.forced_cue_text()
    return list(harness.tokenizer.encode(text, add_special_tokens=False))


def _plain_token_ids(harness: TrainStepHarness) -> list[int]:
    """Token ids both the tokenizer and the model's embedding know, special tokens left out."""
    tok = harness.tokenizer
    n = len(tok)
    config = getattr(harness.acc.unwrap_model(harness.net), "config", None)
    n = min(n, getattr(config, "vocab_size", None) or n)
    special = set(tok.all_special_ids)
    return [i for i in range(n) if i not in special]


def synthetic_groups(
    harness: TrainStepHarness, setup: StepSetup, point: SweepPoint, seed: int
) -> list[Any]:
    """One :class:`~realjudge.train.rl.PromptGroup` per benchmark record: its prompt of exactly
    ``point.prompt_tokens`` tokens and ``point.group_size`` rollouts of
    ``point.response_tokens`` random non-special tokens followed by the score cue. Rollout
    ``j`` of a group wrote the score ``j`` places after the gold one (cyclically), so exactly
    one rollout per group earns GRPO's reward."""
    from realjudge.inference.rollout import OK, Rollout
    from realjudge.scoring.prompts import round_score
    from realjudge.train.examples import derive_seed
    from realjudge.train.rl import PromptGroup

    tok, scores = harness.tokenizer, list(harness.vocab.scores)
    cue, plain = cue_ids(harness), _plain_token_ids(harness)
    rng = random.Random(derive_seed("bench-sweep", seed, *vars(point).values()))
    groups = []
    for record in harness.records:
        gold = float(record.gold)  # check_records made sure there is one
        first = scores.index(round_score(gold, record.scale))
        rollouts = []
        for j in range(point.group_size):
            ids = rng.choices(plain, k=point.response_tokens) + cue
            score = scores[(first + j) % len(scores)]
            rollouts.append(Rollout(ids, len(ids), OK, score, tok.decode(ids)))
        groups.append(PromptGroup(exact_prompt_ids(record, setup.encoder), gold, rollouts))
    return groups


def _single(values: set[int], what: str) -> int:
    if len(values) != 1:  # pragma: no cover - the groups are built with one length
        raise RuntimeError(f"{what} lengths differ: {sorted(values)}")
    return next(iter(values))


def measure_point(
    harness: TrainStepHarness,
    point: SweepPoint,
    *,
    repeats: int,
    warmup: int,
    probe: _MemoryProbe,
    seed: int,
) -> dict[str, Any]:
    """One REAL and one GRPO step of shape ``point``, ``repeats`` interleaved rounds after
    ``warmup`` unmeasured steps per method. Returns the lengths read back from the groups
    trained on, the per-method medians (:func:`realjudge.bench.summarize_step_runs`) and the
    paired REAL/GRPO ratios (:func:`realjudge.bench.step_ratios`)."""
    cue = cue_ids(harness)
    setup = harness.setup(
        num_generations=point.group_size,
        max_prompt_tokens=point.prompt_tokens,
        max_new_tokens=point.response_tokens + len(cue),
    )
    groups = synthetic_groups(harness, setup, point, seed)
    harness.warm_up(setup, groups, warmup)
    runs = harness.measure_rounds(setup, groups, repeats, probe)
    rollouts = [r for g in groups for r in g.rollouts]
    return {
        "group_size": _single({len(g.rollouts) for g in groups}, "group"),
        "prompt_tokens": _single({len(g.prompt_ids) for g in groups}, "prompt"),
        "response_tokens": _single({len(r.response_ids) - len(cue) for r in rollouts}, "response"),
        "cue_tokens": len(cue),
        "rows": len(rollouts),
        "results": summarize_step_runs(runs),
        "ratios": step_ratios(runs),
    }


def bench_sweep(
    model: str = "embedded",
    data: str = "embedded",
    *,
    group_sizes: Sequence[int] = (2, 4, 8),
    prompt_tokens: Sequence[int] = (128, 256, 512),
    response_tokens: Sequence[int] = (32, 64, 128),
    base_group_size: int = 4,
    base_prompt_tokens: int = 256,
    base_response_tokens: int = 64,
    prompts: int = 2,
    repeats: int = 2,
    warmup: int = 1,
    lora: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    split: str | None = "train",
    fmt: str = "result",
    beta: float = 0.01,
    learning_rate: float = 1e-5,
    seed: int = 0,
    threads: int | None = None,
    show: bool = True,
    json_out: str | None = None,
    plot_out: str | None = None,
) -> dict[str, Any]:
    """Time and peak memory of one REAL and one GRPO training step (update phase: forward,
    loss, backward, clipping, AdamW step; generation excluded, see the module doc) as the group
    size, the prompt length and the response length vary, one at a time, around the base point
    ``(base_group_size, base_prompt_tokens, base_response_tokens)``.

    Each step trains on ``prompts`` records of ``data`` (``split``) with synthetic rollouts of
    exact length. A point is measured ``repeats`` rounds (after ``warmup`` unmeasured steps per
    method); a point that recurs (the base point, in every factor) is measured once. Times are
    medians over rounds of the wall clock; memory is the step's own footprint (peak minus use
    before it: CUDA ``max_memory_allocated``, CPU peak RSS; see
    :class:`realjudge.bench._MemoryProbe`); ratios are medians over rounds of REAL/GRPO within
    a round. ``threads``: torch threads (default: unchanged).

    Returns ``{"config", "rows"}``, one row per (factor, value) with the lengths read back from
    the groups trained on, ``real_step_s``, ``grpo_step_s``, ``time_ratio``,
    ``real_peak_mib``, ``grpo_peak_mib``, ``memory_ratio``, CPU times and absolute peaks, and
    the full per-method ``results`` / ``ratios``. Also written to ``json_out``; ``plot_out``
    gets a PNG with one panel per factor (step time against the factor's value, both methods);
    prints a table when ``show``.
    """
    base = SweepPoint(base_group_size, base_prompt_tokens, base_response_tokens)
    points = sweep_points(base, group_sizes, prompt_tokens, response_tokens)
    if not points:
        raise ValueError("nothing to sweep: give values for at least one factor")
    if min(prompts, repeats, warmup) < 1:
        # warmup >= 1: the untimed step builds the optimiser state each measured step restores
        raise ValueError("prompts, repeats and warmup must be >= 1")
    for _, _, p in [("base", 0, base), *points]:
        if p.group_size < 2 or min(p.prompt_tokens, p.response_tokens) < 1:
            raise ValueError(
                f"{p}: group sizes must be >= 2 (advantages are relative within a group), "
                "token counts >= 1"
            )
    measured: dict[SweepPoint, dict[str, Any]] = {}
    with train_step_harness(
        model=model,
        data=data,
        split=split,
        prompts=prompts,
        group_size=base.group_size,
        max_new_tokens=base.response_tokens,
        max_prompt_tokens=base.prompt_tokens,
        lora=lora,
        device=device,
        dtype=dtype,
        fmt=fmt,
        beta=beta,
        temperature=1.0,
        top_p=1.0,
        learning_rate=learning_rate,
        seed=seed,
        threads=threads,
    ) as h:
        probe = _MemoryProbe(h.device)
        for _, _, point in points:
            if point not in measured:
                measured[point] = measure_point(
                    h, point, repeats=repeats, warmup=warmup, probe=probe, seed=seed
                )
        where = h.describe()
    rows = [_row(factor, value, measured[point]) for factor, value, point in points]
    out = {
        "config": {
            "model": model,
            "data": data,
            "split": split,
            "prompts": prompts,
            "base": vars(base),
            "group_sizes": list(group_sizes),
            "prompt_tokens": list(prompt_tokens),
            "response_tokens": list(response_tokens),
            "repeats": repeats,
            "warmup": warmup,
            "lora": lora,
            "beta": beta,
            "fmt": fmt,
            "generation": "excluded (synthetic rollouts; see realjudge bench train-step)",
            **where,
        },
        "rows": rows,
    }
    if json_out:
        write_json(out, json_out)
    if plot_out:
        plot_sweep(out, plot_out)
    if show:
        print(format_sweep(out))
    return out


def _row(factor: str, value: int, m: dict[str, Any]) -> dict[str, Any]:
    real, grpo, ratios = m["results"]["real"], m["results"]["grpo"], m["ratios"]
    return {
        "factor": factor,
        "value": value,
        **{k: m[k] for k in ("group_size", "prompt_tokens", "response_tokens", "cue_tokens")},
        "rows": m["rows"],
        "real_step_s": real["update_s"],
        "grpo_step_s": grpo["update_s"],
        "time_ratio": ratios["time"],
        "real_peak_mib": real["footprint_mib"],
        "grpo_peak_mib": grpo["footprint_mib"],
        "memory_ratio": ratios["memory"],
        "real_cpu_s": real["update_cpu_s"],
        "grpo_cpu_s": grpo["update_cpu_s"],
        "cpu_time_ratio": ratios["cpu_time"],
        "real_absolute_peak_mib": real["peak_mib"],
        "grpo_absolute_peak_mib": grpo["peak_mib"],
        "results": m["results"],
        "ratios": ratios,
    }


def format_sweep(result: dict[str, Any]) -> str:
    """The sweep as a text table with a heading and notes."""
    cfg = result["config"]
    b = cfg["base"]
    head = (
        f"train step sweep: {cfg['model']} on {cfg['data']}, {cfg['prompts']} prompts, "
        f"{cfg['device']} {cfg['dtype']}{' LoRA' if cfg['lora'] else ''}, "
        f"{cfg['torch_threads']} threads, median of {cfg['repeats']}; base point "
        f"G={b['group_size']} P={b['prompt_tokens']} L={b['response_tokens']}"
    )
    rows = [
        [
            r["factor"],
            r["value"],
            r["real_step_s"],
            r["grpo_step_s"],
            r["time_ratio"],
            r["real_peak_mib"],
            r["grpo_peak_mib"],
            r["memory_ratio"],
        ]
        for r in result["rows"]
    ]
    cue = result["rows"][0]["cue_tokens"]
    notes = (
        f"step = judge_forward + loss + backward + AdamW step on synthetic rollouts (L random "
        f"tokens + the {cue}-token score cue; GRPO's rows add the score token); rollout "
        "generation is excluded: it costs both methods the same and is timed by "
        "'realjudge bench train-step'.\n"
        f"peak MiB = the step's own footprint ({cfg['memory_measure']}, peak minus use before "
        "the step). Ratios: median over rounds of REAL/GRPO within a round.\n"
        f"over the sweep: {ratio_summary(result)}"
    )
    return f"{head}\n{format_table(TABLE_HEADER, rows)}\n{notes}"


def plot_sweep(result: dict[str, Any], path: str) -> None:
    """A PNG at ``path``: one panel per factor, step time against the factor's value for
    REAL and GRPO (the other factors at their base values, named in the panel's title)."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    factors = [f for f in FACTORS if any(r["factor"] == f for r in result["rows"])]
    base = result["config"]["base"]
    short = {"group_size": "G", "prompt_tokens": "P", "response_tokens": "L"}
    fig = Figure(figsize=(4.2 * len(factors), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, factor in zip(fig.subplots(1, len(factors), squeeze=False)[0], factors, strict=True):
        rows = sorted(
            (r for r in result["rows"] if r["factor"] == factor), key=lambda r: r["value"]
        )
        xs = [r["value"] for r in rows]
        top = 0.0
        for m in METHODS:
            ys = [r[f"{m}_step_s"] for r in rows]
            ax.plot(xs, ys, marker="o", label=m.upper())
            top = max(top, *ys)
        others = ", ".join(f"{short[f]}={base[f]}" for f in FACTORS if f != factor)
        ax.set_title(f"{FACTORS[factor]} ({others})", fontsize=10)
        ax.set_xlabel(FACTORS[factor])
        ax.set_ylabel("step time (s)")
        ax.set_xticks(xs)
        ax.set_ylim(0, 1.15 * top or 1.0)
        ax.grid(alpha=0.3)
        ax.legend()
    cfg = result["config"]
    fig.suptitle(
        f"REAL vs GRPO training step: {cfg['model']}, {cfg['device']} {cfg['dtype']}",
        fontsize=11,
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def ratio_summary(result: dict[str, Any]) -> str:
    """One line: the range of the REAL/GRPO time and memory ratios over the sweep."""

    def span(key: str) -> str:
        vals = [r[key] for r in result["rows"] if r[key] is not None]
        return f"{_fmt(min(vals))}-{_fmt(max(vals))}" if vals else "n/a"

    return f"real/grpo time ratio {span('time_ratio')}, memory ratio {span('memory_ratio')}"
