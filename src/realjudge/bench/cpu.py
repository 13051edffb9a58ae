"""The CPU fast path against fp32, side by side in one process (``realjudge bench cpu``).

The fast path is what ``auto`` precision picks on this machine (:func:`realjudge.models.
pick_dtype`: bf16 on a CPU where it is fast, else fp32) plus the G samples of a prompt
sharing one prefill (:func:`realjudge.inference.rollout.shared_prefill`) and inference
through packed weights (:mod:`realjudge.linear`; the fp32 arm keeps plain ``Linear``
layers). ``--dtype fp32`` measures the fast path of a CPU without fast bf16. Four figures, at the
shapes of a ``cpu-embedded`` RL step (REAL: ``batch_size`` prompts x ``num_generations``
rollouts of up to ``max_new_tokens`` tokens) and of a CoT evaluation:

- rollout speedup: the step's rollouts (each row drawn from its own generator, as the trainer
  draws them) sampled from the trainer's fp32 master weights, all in one ``generate`` call, as
  before (fp32, the prompts repeated G times before the prefill, the top-p nucleus found by
  sorting the vocabulary and the draw made over all of it) against the fast path (a bf16 copy
  of the weights, refreshed from the master weights on every call, one prefill per prompt,
  each row's nucleus found with ``topk`` and the draw made among its tokens:
  :class:`realjudge.inference.rollout.RowSeededSampler`). Sampled rows stop at their score, so the two paths may decode
  different numbers of steps: the figure is the ratio of sampled token slots per second
  (rows x decode steps / seconds);
- train speedup: one REAL update (``judge_forward``, loss, backward, clipping, AdamW) through
  the trainer's own code on the same rollouts, as before (accelerate ``mixed_precision``
  ``no``, every rollout's row run through the model with its prompt:
  ``share_prompt_forward=False``) against the fast path (bf16 autocast, fp32 master weights and
  losses, each prompt run once for its G rollouts), ratio of step times. The
  preset's ``freeze_layers`` (``cpu-embedded``: 0, every layer trained; the main job and the
  ``cpu-embedded`` / ``cpu-powered`` comparisons freeze the lower 15 of 30: ``freeze_layers``
  times that step);
- eval speedup: ``Judge.predict_all`` with chain of thought on the same records, as before
  (fp32 weights, greedy feedbacks, then a scoring forward pass over every prompt + feedback:
  ``JudgeConfig.reread_cue``; ``generate``'s ``DynamicCache``) against the fast path (its
  weights; a ``StaticCache`` written in place, ``JudgeConfig.kv_cache``; a feedback in which
  the judge wrote the canonical cue itself is scored from the generation pass, the others by
  running only their forced cue on the generation's KV cache:
  :func:`realjudge.inference.rollout.logits_after_rollouts`), ratio of examples/s. The base
  model seldom writes the canonical cue (``--model embedded``: its cues are forced); a trained
  judge writes it on every item (``--model`` a ``realjudge train`` output; ``wrote_cue`` in
  the JSON);
- decode fraction of bandwidth bound: the fast path's weight bytes over the time of one decode
  step (the rollout batch, cache filled with the prompts) against the bandwidth of a large
  memory copy measured in the same run (bytes read + written per second). 1.0 would mean a
  decode step streams the weights as fast as memory can copy.

Each timed pair runs in rounds whose order flips (fp32 fast, fast fp32, ...); figures are
medians over rounds of the round's ratio. A train round builds a fresh harness for each arm
(accelerate keeps one mixed-precision state per process) and times one step after a warm-up
step: timing the fp32 steps in the harness that had just sampled the rollouts, and the fast
ones in a second harness after it, gave 1.24 with ``--dtype fp32``, where both arms run the
same fp32 step. The first train harness after the rollouts still ran slow, whichever arm it
held (65 s against 49-50 s for the same fp32 step), so one fast-path harness runs first and
is not counted (``first_harness_s`` in the JSON).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from realjudge.bench.common import _median, _ratio, torch_threads, write_json
from realjudge.seeds import derive_seed

SPEEDUP_LINES = (
    ("rollout", "rollout speedup (fast/fp32)"),
    ("train", "train speedup (fast/fp32)"),
    ("eval", "eval speedup (fast/fp32)"),
)
DECODE_LINE = "decode fraction of bandwidth bound"


def step_shapes(preset: str = "cpu-embedded", method: str = "real") -> dict[str, Any]:
    """The shapes of one RL step of ``preset``: prompts, rollouts per prompt, token limits,
    sampling settings (from :data:`realjudge.train.config.PRESETS`)."""
    from realjudge.train.config import preset_values

    v = preset_values(preset, method)
    return {
        "prompts": int(v["batch_size"]),
        "group_size": int(v["num_generations"]),
        "max_new_tokens": int(v["max_new_tokens"]),
        "max_prompt_tokens": int(v["max_prompt_tokens"]),
        "temperature": float(v["temperature"]),
        "top_p": float(v["top_p"]),
        "fmt": str(v["fmt"]),
        "normalize": bool(v["rail_normalize"]),
        "freeze_layers": int(v.get("freeze_layers", 0)),
    }


def fraction_of_bound(weight_bytes: int, step_s: float, copy_bytes_per_s: float) -> float:
    """Weight bytes read per decode step over the step time, as a fraction of the copy
    bandwidth."""
    return weight_bytes / step_s / copy_bytes_per_s


def copy_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Bytes read + written per second by ``Tensor.copy_`` of an ``nbytes`` buffer (larger
    than the caches), best of ``repeats``, on torch's threads."""
    import torch

    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def weight_bytes(model: Any) -> int:
    """Bytes of ``model``'s distinct parameters (a tied embedding counted once: the output
    head reads it whole on every decode step)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def decode_step_seconds(
    model: Any, prompt_ids: Sequence[Sequence[int]], pad_id: int, steps: int = 16
) -> float:
    """Median seconds of one single-token forward pass with a KV cache over the left-padded
    ``prompt_ids`` (one row each), greedy."""
    import torch

    from realjudge.inference.rollout import (
        cache_kwarg,
        generation_position_ids,
        left_padded,
        returned_cache,
    )

    ids, att = left_padded(prompt_ids, pad_id)
    key = cache_kwarg(model)
    times = []
    with torch.no_grad():
        out = model(
            input_ids=ids,
            attention_mask=att,
            position_ids=generation_position_ids(att),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = returned_cache(out)
        pos = generation_position_ids(att)[:, -1:]
        for _ in range(steps):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            att = torch.cat([att, torch.ones_like(nxt)], dim=1)
            pos = pos + 1
            t0 = time.perf_counter()
            out = model(
                input_ids=nxt,
                attention_mask=att,
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
                **{key: cache},
            )
            times.append(time.perf_counter() - t0)
            cache = returned_cache(out)
    return float(_median(times[1:] or times))


def _paired(
    rounds: int, run: Callable[[str], float], higher_is_faster: bool
) -> tuple[float | None, dict[str, list[float]]]:
    """``rounds`` rounds of ``run("fp32")`` and ``run("fast")`` in flipping order; the median
    of the per-round fast/fp32 speedup, and every value."""
    values: dict[str, list[float]] = {"fp32": [], "fast": []}
    speedups = []
    for i in range(rounds):
        order = ("fp32", "fast") if i % 2 == 0 else ("fast", "fp32")
        got = {kind: run(kind) for kind in order}
        for kind, v in got.items():
            values[kind].append(v)
        a, b = (got["fast"], got["fp32"]) if higher_is_faster else (got["fp32"], got["fast"])
        speedups.append(_ratio(a, b))
    return _median(speedups), values


def bench_cpu(
    model: str = "embedded",
    data: str = "embedded",
    *,
    fast_dtype: str | None = None,
    preset: str = "cpu-embedded",
    prompts: int | None = None,
    group_size: int | None = None,
    max_new_tokens: int | None = None,
    eval_items: int = 16,
    eval_batch_size: int = 8,
    repeats: int = 2,
    train_repeats: int = 3,
    freeze_layers: int | None = None,
    kv_cache: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    show: bool = True,
    json_out: str | None = None,
) -> dict[str, Any]:
    """The four figures of the module doc. ``fast_dtype``: the fast path's dtype (default
    ``auto``: :func:`realjudge.models.pick_dtype` on the CPU); ``prompts``, ``group_size``,
    ``max_new_tokens``: override the preset's step shape (tests use tiny ones); ``eval_items``
    records of the test split, ``eval_batch_size`` per batch, for the eval figure;
    ``repeats`` rounds for rollouts and eval, ``train_repeats`` rounds of one measured step
    per precision (each after a warm-up step in a fresh harness); ``freeze_layers``: lower
    layers frozen in the train figure's step (default: the preset's); ``kv_cache``: the
    fast path's evaluation cache (:attr:`~realjudge.inference.settings.JudgeConfig.kv_cache`;
    the fp32 arm's is dynamic)."""
    import torch

    from realjudge.inference.settings import KV_CACHES
    from realjudge.models import pick_dtype, runtime_environment

    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache must be one of {KV_CACHES}, got {kv_cache!r}")

    shapes = step_shapes(preset)
    for key, value in (
        ("prompts", prompts),
        ("group_size", group_size),
        ("max_new_tokens", max_new_tokens),
        ("freeze_layers", freeze_layers),
    ):
        if value is not None:
            shapes[key] = int(value)
    if min(shapes["prompts"], shapes["group_size"], shapes["max_new_tokens"]) < 1:
        raise ValueError("prompts, group_size and max_new_tokens must be >= 1")
    if min(repeats, train_repeats, eval_items, eval_batch_size) < 1:
        raise ValueError("repeats, train_repeats, eval_items and eval_batch_size must be >= 1")
    if shapes["freeze_layers"] < 0:
        raise ValueError("freeze_layers must be >= 0")
    fast = pick_dtype(torch.device("cpu"), fast_dtype)
    mixed = "bf16" if fast == torch.bfloat16 else "fp16" if fast == torch.float16 else "no"
    with torch_threads(threads) as threads_used:
        rollout, groups = _bench_rollouts(model, data, shapes, fast, repeats, seed)
        train = _bench_train(model, data, shapes, mixed, groups, train_repeats, seed)
        evaluation = _bench_eval(
            model, data, shapes, fast, eval_items, eval_batch_size, repeats, kv_cache, seed
        )
        bandwidth = copy_bandwidth()
    decode = rollout.pop("decode")
    fraction = fraction_of_bound(decode["weight_bytes"], decode["step_s"], bandwidth)
    out = {
        "speedups": {
            "rollout": rollout["speedup"],
            "train": train["speedup"],
            "eval": evaluation["speedup"],
        },
        "decode_fraction_of_bandwidth_bound": fraction,
        "config": {
            "model": model,
            "data": data,
            "preset": preset,
            **shapes,
            "fast_dtype": str(fast).removeprefix("torch."),
            "eval_items": eval_items,
            "eval_batch_size": eval_batch_size,
            "kv_cache": kv_cache,
            "repeats": repeats,
            "train_repeats": train_repeats,
            "torch_threads": threads_used,
        },
        "rollout": rollout,
        "train": train,
        "eval": evaluation,
        "decode": {**decode, "copy_bytes_per_s": bandwidth},
        "environment": runtime_environment("cpu"),
    }
    if json_out:
        write_json(out, json_out)
    if show:
        print(format_cpu_bench(out))
    return out


def format_cpu_bench(result: dict[str, Any]) -> str:
    """The four lines of ``realjudge bench cpu``."""

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = [f"{label}: {fmt(result['speedups'][key])}" for key, label in SPEEDUP_LINES]
    lines.append(f"{DECODE_LINE}: {fmt(result['decode_fraction_of_bandwidth_bound'])}")
    return "\n".join(lines)


def _harness(
    model: str, data: str, shapes: dict[str, Any], mixed: str, seed: int, share: bool = True
) -> Any:
    from realjudge.bench.train_step import train_step_harness

    return train_step_harness(
        model=model,
        data=data,
        split="train",
        prompts=shapes["prompts"],
        group_size=shapes["group_size"],
        max_new_tokens=shapes["max_new_tokens"],
        max_prompt_tokens=shapes["max_prompt_tokens"],
        lora=False,
        device="cpu",
        dtype="float32",
        fmt=shapes["fmt"],
        beta=0.01,
        temperature=shapes["temperature"],
        top_p=shapes["top_p"],
        learning_rate=5e-6,
        seed=seed,
        threads=None,
        mixed_precision=mixed,
        freeze_layers=shapes["freeze_layers"],
        share_prompt_forward=share,
    )


def _timed_steps(h: Any, groups: Sequence[Any], repeats: int) -> list[float]:
    """One warm-up, then ``repeats`` timed REAL steps, each from the starting point."""
    from realjudge.bench.train_step import fresh_groups

    setup = h.setup()
    h.warm_up_method("real", setup, groups)
    times = []
    for _ in range(repeats):
        h.restore()
        t0 = time.perf_counter()
        h.update("real", setup, fresh_groups(groups))
        times.append(time.perf_counter() - t0)
    h.restore()
    return times


def _bench_rollouts(
    model: str,
    data: str,
    shapes: dict[str, Any],
    fast: Any,
    repeats: int,
    seed: int,
) -> tuple[dict[str, Any], list[Any]]:
    """In the fp32 training harness: the rollout pair, the decode step of the fast path and
    the rollouts both train arms use."""
    import torch

    from realjudge.inference.rollout import finish_rollout, generation_copy, sample, stop_token_ids
    from realjudge.train.rl import PromptGroup

    with _harness(model, data, shapes, "no", seed) as h:
        setup = h.setup()
        net = h.acc.unwrap_model(h.net)
        tok = h.tokenizer
        prompt_ids = [setup.encoder.prompt_ids(r) for r in h.records]
        G = shapes["group_size"]
        common = dict(
            num_samples=G,
            max_new_tokens=shapes["max_new_tokens"],
            temperature=shapes["temperature"],
            top_p=shapes["top_p"],
            stop_strings=h.vocab.stop_strings,
            # each row drawn from its own generator, as the trainer draws rollouts
            prompt_seeds=[derive_seed("bench-rollout", seed, i) for i in range(len(prompt_ids))],
        )
        outs: dict[str, list[list[int]]] = {}

        def run(kind: str) -> float:
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            if kind == "fp32":
                got = sample(net, tok, prompt_ids, share_prefill=False, top_p_impl="sort", **common)
            else:
                got = sample(net, tok, prompt_ids, dtype=fast, share_prefill=True, **common)
            seconds = time.perf_counter() - t0
            outs[kind] = got
            slots = sum(len(row) for row in got)
            return slots / seconds

        run("fast")  # warm-up: builds the generation copy, first-call allocations
        speedup, slots_per_s = _paired(repeats, run, higher_is_faster=True)
        stops = stop_token_ids(tok, net)
        groups = [
            PromptGroup(
                prompt_ids[j],
                float(rec.gold),
                [finish_rollout(o, tok, h.vocab, stops) for o in outs["fp32"][j * G : (j + 1) * G]],
            )
            for j, rec in enumerate(h.records)
        ]
        gen = generation_copy(net, fast) if fast != torch.float32 else net
        rows = [p for p in prompt_ids for _ in range(G)]
        step_s = decode_step_seconds(gen, rows, tok.pad_token_id)
        decode = {
            "rows": len(rows),
            "weight_bytes": weight_bytes(gen),
            "step_s": step_s,
            "dtype": str(next(gen.parameters()).dtype).removeprefix("torch."),
        }
    rollout = {
        "speedup": speedup,
        "token_slots_per_s": slots_per_s,
        "rows": len(rows),
        "decode_steps": {k: len(v[0]) if v else 0 for k, v in outs.items()},
        "decode": decode,
    }
    return rollout, groups


def _bench_train(
    model: str,
    data: str,
    shapes: dict[str, Any],
    mixed: str,
    groups: Sequence[Any],
    rounds: int,
    seed: int,
) -> dict[str, Any]:
    """``rounds`` rounds of one REAL step per arm, each in a harness of its own (accelerate
    keeps one mixed-precision state per process, so an arm cannot switch inside one), fp32
    then fast, fast then fp32, ...: what the first or second harness of a process costs falls
    on both arms alike. One fast-path harness runs before them, not counted: the first one
    after the rollouts runs slow whichever arm it holds."""

    def run(kind: str) -> float:
        fp32 = kind == "fp32"
        with _harness(model, data, shapes, "no" if fp32 else mixed, seed, share=not fp32) as h:
            return _timed_steps(h, groups, 1)[0]

    first = run("fast")
    speedup, step_s = _paired(rounds, run, higher_is_faster=False)
    return {
        "speedup": speedup,
        "first_harness_s": first,
        "fp32_step_s": step_s["fp32"],
        "fast_step_s": step_s["fast"],
        "fast_mixed_precision": mixed,
    }


def _bench_eval(
    model: str,
    data: str,
    shapes: dict[str, Any],
    fast: Any,
    n: int,
    batch_size: int,
    repeats: int,
    kv_cache: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """CoT evaluation (greedy feedback, then the score) as before (fp32 weights, a dynamic
    KV cache, a scoring forward pass over every feedback) and on the fast path (fast weights,
    a static KV cache, every score read from the generation pass: its logits after a cue the
    judge wrote, its KV cache under a forced one)."""
    from realjudge.data.loaders import load_records
    from realjudge.inference.judge import Judge, JudgeConfig
    from realjudge.inference.settings import resolve_kv_cache
    from realjudge.models import load_model

    records = load_records(data, "test", limit=n, seed=seed).records[:n]
    if not records:
        raise ValueError(f"no test records in {data!r}")
    cfg = JudgeConfig(
        fmt=shapes["fmt"],
        normalize=shapes["normalize"],
        cot=True,
        batch_size=batch_size,
        max_new_tokens=shapes["max_new_tokens"],
        max_prompt_tokens=shapes["max_prompt_tokens"],
        backend="transformers",
        progress=False,
        kv_cache=kv_cache,
    )
    # as before: plain fp32 Linear layers; the fast path's packed (realjudge.linear)
    loaded = {
        kind: load_model(model, device="cpu", dtype=dt, pack=kind == "fast")
        for kind, dt in (("fp32", "float32"), ("fast", str(fast).removeprefix("torch.")))
    }
    # as before, fp32 generates into a DynamicCache and reads every feedback's score with a
    # second forward pass; the fast path generates into a StaticCache (kv_cache "auto" on a
    # CPU) and reads the score from the generation pass (logits after the judge's own cue,
    # else its KV cache)
    configs = {"fp32": replace(cfg, reread_cue=True, kv_cache="dynamic"), "fast": cfg}
    judges = {k: Judge(lm.model, lm.tokenizer, configs[k]) for k, lm in loaded.items()}
    tokens: dict[str, float] = {}
    wrote_cue: dict[str, float] = {}

    def run(kind: str) -> float:
        t0 = time.perf_counter()
        rows = judges[kind].predict_all(records)
        seconds = time.perf_counter() - t0
        tok = loaded[kind].tokenizer
        lengths = [
            len(tok.encode(r["feedback"], add_special_tokens=False))
            for r in rows
            if isinstance(r.get("feedback"), str)
        ]
        tokens[kind] = sum(lengths) / max(1, len(lengths))
        wrote_cue[kind] = sum(r.get("status") == "ok" for r in rows) / len(rows)
        return len(records) / seconds

    judges["fast"].predict_all(records[:1])  # warm-up
    judges["fp32"].predict_all(records[:1])
    speedup, per_s = _paired(repeats, run, higher_is_faster=True)
    return {
        "speedup": speedup,
        "examples_per_s": per_s,
        "n": len(records),
        "mean_feedback_tokens": tokens,
        # rows whose judge wrote the canonical cue (the fast path reads their score from the
        # generation pass)
        "wrote_cue": wrote_cue,
        "kv_cache": {k: resolve_kv_cache(c.kv_cache, "cpu") for k, c in configs.items()},
    }


PRECISION_LINE = "rail expected score mean abs difference (fast vs fp32)"


def rail_precision_gap(
    model: str = "embedded",
    data: str = "embedded",
    split: str | None = "test",
    n: int | None = None,
    *,
    fast_dtype: str | None = None,
    preset: str = "cpu-embedded",
    batch_size: int = 8,
    show: bool = True,
    json_out: str | None = None,
) -> dict[str, Any]:
    """How far the fast path's RAIL expected scores (score-only, the preset's format and
    renormalisation) move from fp32's on ``n`` records (default: all) of ``split``: the mean
    and largest absolute difference, per item, between the two models' ``expected_score``."""
    import torch

    from realjudge.data.loaders import load_records
    from realjudge.inference.judge import Judge, JudgeConfig
    from realjudge.models import load_model, pick_dtype

    shapes = step_shapes(preset)
    records = load_records(data, split, limit=n, seed=0).records
    records = records[:n] if n is not None else records
    if not records:
        raise ValueError(f"no records in {data!r} split {split!r}")
    fast = pick_dtype(torch.device("cpu"), fast_dtype)
    cfg = JudgeConfig(
        fmt=shapes["fmt"],
        normalize=shapes["normalize"],
        cot=False,
        batch_size=batch_size,
        max_prompt_tokens=shapes["max_prompt_tokens"],
        backend="transformers",
        progress=False,
    )
    scores: dict[str, list[float | None]] = {}
    for kind, dt in (("fp32", "float32"), ("fast", str(fast).removeprefix("torch."))):
        loaded = load_model(model, device="cpu", dtype=dt, pack=kind == "fast")
        rows = Judge(loaded.model, loaded.tokenizer, cfg).predict_all(records)
        scores[kind] = [r.get("expected_score") for r in rows]
        del loaded
    pairs = [
        (a, b)
        for a, b in zip(scores["fp32"], scores["fast"], strict=True)
        if a is not None and b is not None
    ]
    diffs = [abs(a - b) for a, b in pairs]
    out = {
        "mean_abs_difference": sum(diffs) / len(diffs) if diffs else None,
        "max_abs_difference": max(diffs) if diffs else None,
        "n": len(records),
        "n_compared": len(pairs),
        "config": {
            "model": model,
            "data": data,
            "split": split,
            "fast_dtype": str(fast).removeprefix("torch."),
            "fmt": shapes["fmt"],
            "normalize": shapes["normalize"],
        },
        "expected_scores": scores,
    }
    if json_out:
        write_json(out, json_out)
    if show:
        print(format_precision_gap(out))
    return out


def format_precision_gap(result: dict[str, Any]) -> str:
    mean, worst = result["mean_abs_difference"], result["max_abs_difference"]
    if mean is None:
        return f"{PRECISION_LINE}: n/a (no item scored by both)"
    return (
        f"{PRECISION_LINE}: {mean:.4f}\n"
        f"largest: {worst:.4f} over {result['n_compared']} items "
        f"({result['config']['fast_dtype']} vs float32, score-only RAIL)"
    )
