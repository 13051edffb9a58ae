"""Inference throughput of the ways to read a judge's score.

:func:`bench_inference` times, in one process on the same model and the same records,
score-only RAIL (one forward pass per item), CoT + RAIL and CoT + decode (generation, then one
scoring forward pass), and reports examples/s and their ratios. CoT + RAIL and CoT + decode do
the same work (the distribution comes from the scoring pass either way), so their ratio shows
what reading the distribution costs on top of decoding: nothing but noise.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from realjudge.bench.common import _timed, format_table
from realjudge.inference.judge import Judge, JudgeConfig

INFERENCE_VARIANTS: dict[str, dict[str, Any]] = {
    "score_only_rail": dict(cot=False, mode="rail"),
    "cot_rail": dict(cot=True, mode="rail"),
    "cot_decode": dict(cot=True, mode="decode"),
}


def bench_inference(
    model: str = "embedded",
    data: str = "embedded",
    n: int = 16,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    *,
    split: str | None = None,
    fmt: str = "result",
    max_prompt_tokens: int | None = 2048,
    device: str | None = None,
    dtype: str | None = None,
    seed: int = 0,
    warmup: bool = True,
    show: bool = True,
) -> dict[str, Any]:
    """Examples/s of score-only RAIL, CoT + RAIL and CoT + decode on ``n`` records of ``data``.

    All three run with the transformers backend on the same loaded model, the same records, one
    CoT sample (greedy) of at most ``max_new_tokens`` tokens, ``batch_size`` items per batch.
    Returns ``{"config", "results": {variant: {seconds, examples_per_s, n_errors,
    forced_cue_rate, mean_feedback_tokens}}, "ratios"}``; prints a table when ``show``.
    """
    from realjudge.data.loaders import load_records
    from realjudge.models import load_model

    loaded = load_model(model, device=device, dtype=dtype, seed=seed)
    records = load_records(data, split, limit=n, seed=seed).records[:n]
    if not records:
        raise ValueError(f"no records in {data!r}")
    base = JudgeConfig(
        fmt=fmt,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
        backend="transformers",
        progress=False,
        seed=seed,
    )
    tok = loaded.tokenizer
    judges = {
        name: Judge(loaded.model, tok, replace(base, **overrides))
        for name, overrides in INFERENCE_VARIANTS.items()
    }
    if warmup:  # first-call allocations and kernel choices stay out of every variant's timing
        for judge in judges.values():  # (score-only and generation paths differ)
            judge.predict_all(records[:1])
    results: dict[str, dict[str, Any]] = {}
    for name, judge in judges.items():
        rows, seconds = _timed(lambda judge=judge: judge.predict_all(records))
        ok = [r for r in rows if not str(r["status"]).startswith("error")]
        feedback_tokens = [
            len(tok.encode(r["feedback"], add_special_tokens=False))
            for r in ok
            if isinstance(r.get("feedback"), str)
        ]
        results[name] = {
            "seconds": seconds,
            "examples_per_s": len(records) / seconds if seconds > 0 else None,
            "n_errors": len(rows) - len(ok),
            "forced_cue_rate": (
                sum(1 for r in ok if r["status"] == "forced_cue") / len(ok) if ok else None
            ),
            "mean_feedback_tokens": (
                sum(feedback_tokens) / len(feedback_tokens) if feedback_tokens else None
            ),
        }

    def ratio(a: str, b: str) -> float | None:
        x, y = results[a]["examples_per_s"], results[b]["examples_per_s"]
        return x / y if x and y else None

    ratios = {
        "cot_rail/score_only_rail": ratio("cot_rail", "score_only_rail"),
        "cot_decode/score_only_rail": ratio("cot_decode", "score_only_rail"),
        "cot_rail/cot_decode": ratio("cot_rail", "cot_decode"),
    }
    out = {
        "config": {
            "model": model,
            "data": data,
            "split": split,
            "n": len(records),
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "fmt": fmt,
            "device": str(loaded.device),
            "dtype": str(next(loaded.model.parameters()).dtype),
        },
        "results": results,
        "ratios": ratios,
    }
    if show:
        print(format_inference_bench(out))
    return out


def format_inference_bench(result: dict[str, Any]) -> str:
    cfg = result["config"]
    head = (
        f"inference benchmark: {cfg['model']} on {cfg['data']}, n={cfg['n']}, "
        f"batch {cfg['batch_size']}, max_new_tokens {cfg['max_new_tokens']}, "
        f"{cfg['device']} {cfg['dtype']}"
    )
    rows = [
        [
            name,
            r["examples_per_s"],
            r["seconds"],
            r["mean_feedback_tokens"],
            r["forced_cue_rate"],
            r["n_errors"],
        ]
        for name, r in result["results"].items()
    ]
    table = format_table(
        ["variant", "examples/s", "seconds", "cot tokens", "forced cue", "errors"], rows
    )
    ratios = "\n".join(
        f"  {k}: " + ("n/a" if v is None else f"{v:.3f}") for k, v in result["ratios"].items()
    )
    return f"{head}\n{table}\nthroughput ratios:\n{ratios}"
