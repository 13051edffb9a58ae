"""Benchmarks: inference throughput of the ways to read a judge's score.

:func:`bench_inference` times, in one process on the same model and the same records,
score-only RAIL (one forward pass per item), CoT + RAIL and CoT + decode (generation, then one
scoring forward pass), and reports examples/s and their ratios. CoT + RAIL and CoT + decode do
the same work (the distribution comes from the scoring pass either way), so their ratio shows
what reading the distribution costs on top of decoding: nothing but noise.

:func:`bench_train_step` runs REAL and GRPO training steps side by side on the same model,
prompts and rollouts, through the trainer's own code, and reports the REAL/GRPO ratios of step
time and peak memory (REAL should cost what GRPO costs: one forward pass gives both the CoT
log-probs and the score distribution).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from realjudge.inference.judge import Judge, JudgeConfig

INFERENCE_VARIANTS: dict[str, dict[str, Any]] = {
    "score_only_rail": dict(cot=False, mode="rail"),
    "cot_rail": dict(cot=True, mode="rail"),
    "cot_decode": dict(cot=True, mode="decode"),
}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (floats with 3 significant decimals)."""

    def cell(v: Any) -> str:
        if v is None:
            return "n/a"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    table = [list(map(str, header))] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
    if warmup:  # first-call allocations and kernel choices stay out of the timings
        Judge(loaded.model, tok, base).predict_all(records[:1])
    results: dict[str, dict[str, Any]] = {}
    for name, overrides in INFERENCE_VARIANTS.items():
        judge = Judge(loaded.model, tok, replace(base, **overrides))
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


# ---------------------------------------------------------------------------------------------
# training step: REAL vs GRPO
# ---------------------------------------------------------------------------------------------


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


class _MemoryProbe:
    """Peak memory of one block of work and its own footprint (peak minus what was in use
    before it). CUDA: allocated bytes (``max_memory_allocated``). CPU on Linux: resident set
    size, its high-water mark reset through ``/proc/self/clear_refs``. Elsewhere: ``None``."""

    _STATUS = "/proc/self/status"

    def __init__(self, device: Any) -> None:
        import ctypes
        import os

        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.device = device
        self.proc = (
            not self.cuda
            and os.path.exists("/proc/self/clear_refs")
            and os.path.exists(self._STATUS)
        )
        self._trim = None
        if self.proc:
            try:  # give freed heap memory back before each measurement (glibc only)
                self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            except OSError:
                self._trim = None
        self.before: int | None = None

    @property
    def kind(self) -> str:
        if self.cuda:
            return "cuda max_memory_allocated"
        return "peak RSS (VmHWM)" if self.proc else "n/a"

    def _status_kb(self, key: str) -> int:
        with open(self._STATUS) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"{key} missing from {self._STATUS}")

    def start(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.cuda:
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        elif self.proc:
            if self._trim is not None:
                self._trim(0)
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the high-water mark to the current RSS
                self.before = self._status_kb("VmRSS")
            except OSError:
                self.proc, self.before = False, None

    def stop(self) -> tuple[int | None, int | None]:
        """``(peak, peak - before)`` in bytes, or ``(None, None)``."""
        import torch

        if self.cuda:
            _sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.proc and self.before is not None:
            try:
                peak = self._status_kb("VmHWM")
            except OSError:
                return None, None
        else:
            return None, None
        return peak, peak - (self.before or 0)


def _median(xs: Sequence[float | None]) -> float | None:
    import statistics

    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def bench_train_step(
    model: str = "embedded",
    data: str = "embedded",
    prompts: int = 2,
    group_size: int = 4,
    max_new_tokens: int = 48,
    repeats: int = 3,
    *,
    lora: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    split: str | None = "train",
    fmt: str = "result",
    max_prompt_tokens: int = 512,
    beta: float = 0.01,
    temperature: float = 1.0,
    top_p: float = 0.9,
    learning_rate: float = 1e-5,
    seed: int = 0,
    warmup: int = 1,
    generation: bool = True,
    threads: int | None = None,
    show: bool = True,
    json_out: str | None = None,
) -> dict[str, Any]:
    """One REAL and one GRPO training step on the same model, prompts and rollouts.

    Both methods go through the trainer's own code: configs from
    :func:`realjudge.train.build_config`, rollouts from
    :func:`realjudge.train.rl.sample_groups`, the objectives
    :class:`~realjudge.train.rl.REALObjective` / :class:`~realjudge.train.rl.GRPOObjective`
    and :func:`realjudge.train.trainer.run_updates` (forward via ``judge_forward``, loss,
    backward, gradient clipping, AdamW step). Rollouts are sampled once with a fixed seed and
    shared by both methods; before every step the trainable weights and the optimiser state are
    restored in place from a snapshot, so each measured step starts from the same point.

    After ``warmup`` unmeasured steps per method, ``repeats`` rounds run REAL and GRPO,
    interleaved (the order flips every round: REAL GRPO GRPO REAL REAL ...). Each
    round times the update phase (the headline ratio) and measures its peak memory (see
    :class:`_MemoryProbe`); with ``generation`` it also times each method's own rollout
    sampling (``objective.prepare``, same seed: the same rollouts), reported separately and
    in the full-step ratio. ``beta`` is REAL's refinement weight (0.01: the authors' best; the
    default 0.0 computes the same graph scaled by zero). Returns a dict (also written to
    ``json_out``) with, each the median over rounds of the round's REAL/GRPO ratio,
    ``ratios["time"]`` (update phase, wall clock), ``ratios["cpu_time"]``
    (the same steps in process CPU time, steadier than wall time on a shared CPU),
    ``ratios["full_step_time"]`` and ``ratios["memory"]`` (step footprints); prints a table when
    ``show``. ``threads``: torch threads for the run (default: unchanged).
    """
    import json
    import tempfile
    from pathlib import Path

    import torch
    from transformers import get_scheduler

    from realjudge.data.loaders import load_records
    from realjudge.scoring.vocab import ScoreVocab
    from realjudge.train import build_config
    from realjudge.train.examples import Encoder, check_records
    from realjudge.train.modeling import load_start, prepare_for_training
    from realjudge.train.objectives import Context
    from realjudge.train.rl import sample_groups
    from realjudge.train.trainer import (
        _release,
        check_sizes,
        make_accelerator,
        make_objective,
        run_updates,
    )

    if min(prompts, group_size, max_new_tokens, repeats) < 1 or warmup < 0:
        raise ValueError("prompts, group_size, max_new_tokens and repeats must be >= 1")
    methods = ("real", "grpo")
    with tempfile.TemporaryDirectory(prefix="realjudge-bench-") as tmp:
        shared: dict[str, Any] = dict(
            model=model,
            data=data,
            data_split=split,
            out=str(Path(tmp) / "run"),
            device=device or "auto",
            dtype=dtype or "float32",
            report_to="none",
            fmt=fmt,
            lora=lora,
            seed=seed,
            batch_size=prompts,
            max_steps=1,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            learning_rate=learning_rate,
            num_generations=group_size,
            ppo_epochs=1,
            temperature=temperature,
            top_p=top_p,
        )
        cfgs = {
            "real": build_config("real", overrides={**shared, "beta": beta}),
            "grpo": build_config("grpo", overrides=shared),
        }
        acc = make_accelerator(cfgs["real"])
        threads_before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            torch.manual_seed(seed)
            net, tokenizer = load_start(cfgs["real"])
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            net = prepare_for_training(net, cfgs["real"])
            records = load_records(data, split, limit=prompts, seed=seed).records[:prompts]
            if len(records) < prompts:
                raise ValueError(f"{data!r} holds {len(records)} records, {prompts} asked for")
            scale = check_records(records, f"benchmark data {data}")
            vocab = ScoreVocab.from_tokenizer(tokenizer, fmt, scale)
            encoder = Encoder(tokenizer, vocab, fmt, max_prompt_tokens, max_new_tokens)
            c = cfgs["real"]
            params = [p for p in net.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(  # as the trainer builds it
                params,
                lr=c.learning_rate,
                betas=(c.adam_beta1, c.adam_beta2),
                eps=c.adam_eps,
                weight_decay=c.weight_decay,
            )
            scheduler = get_scheduler(
                "constant_with_warmup", optimizer, num_warmup_steps=0, num_training_steps=10**6
            )
            net, optimizer, scheduler = acc.prepare(net, optimizer, scheduler)
            dev = acc.device
            ctxs = {m: Context(cfgs[m], acc, tokenizer, encoder, vocab, scale) for m in methods}
            objectives = {m: make_objective(cfgs[m]) for m in methods}
            micro = check_sizes(cfgs["real"], acc.num_processes)
            indexed = list(enumerate(records))

            trainable = [p for p in net.parameters() if p.requires_grad]
            weights0 = [p.detach().to("cpu", copy=True) for p in trainable]
            inner = getattr(optimizer, "optimizer", optimizer)
            opt_state0: list[dict[str, Any]] = []

            def restore() -> None:
                with torch.no_grad():
                    for p, w in zip(trainable, weights0, strict=True):
                        p.copy_(w)
                    for p, saved in zip(trainable, opt_state0, strict=False):
                        for k, v in saved.items():
                            cur = inner.state[p].get(k)
                            if isinstance(v, torch.Tensor) and isinstance(cur, torch.Tensor):
                                cur.copy_(v)
                            else:
                                inner.state[p][k] = v
                optimizer.zero_grad(set_to_none=True)

            def weight_change() -> float:
                with torch.no_grad():
                    return max(
                        float((p.detach().cpu() - w).abs().max())
                        for p, w in zip(trainable, weights0, strict=True)
                    )

            # ---- the shared rollouts: sampled once, seeded, with the starting weights ----
            net.train()
            groups, rollout_stats = sample_groups(
                ctxs["real"],
                net,
                records,
                0,
                group_size=group_size,
                temperature=temperature,
                top_p=top_p,
            )
            flat = [r.response_ids for g in groups for r in g.rollouts]

            def update(m: str) -> dict[str, float]:
                torch.manual_seed(seed)
                net.train()
                return run_updates(
                    acc, ctxs[m], net, optimizer, scheduler, objectives[m], groups, micro
                )

            for _ in range(warmup):
                for m in methods:
                    restore()
                    update(m)
            # Every measured step starts from the optimiser state the warm-up allocated, with
            # its moments zeroed: no momentum carried over from the other method, so a step
            # moves the weights only through its own gradient.
            opt_state0 = [
                {
                    k: (
                        (v.detach().to("cpu", copy=True) if k == "step" else torch.zeros_like(v))
                        if isinstance(v, torch.Tensor)
                        else v
                    )
                    for k, v in inner.state[p].items()
                }
                for p in trainable
            ]

            probe = _MemoryProbe(dev)
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
            same_rollouts = True
            for i in range(repeats):
                # REAL, GRPO, then GRPO, REAL, ...: whatever the position in a round costs
                # (caches, the other tenants of a shared machine) falls on both methods alike
                for m in methods if i % 2 == 0 else methods[::-1]:
                    run: dict[str, Any] = {}
                    restore()
                    if generation:
                        net.train()
                        _sync(dev)
                        t0 = time.perf_counter()
                        items, _ = objectives[m].prepare(ctxs[m], net, indexed, 0)
                        _sync(dev)
                        run["generation_s"] = time.perf_counter() - t0
                        same_rollouts &= [r.response_ids for g in items for r in g.rollouts] == flat
                        del items
                    probe.start()
                    t0, c0 = time.perf_counter(), time.process_time()
                    metrics = update(m)
                    _sync(dev)
                    run["update_s"] = time.perf_counter() - t0
                    run["update_cpu_s"] = time.process_time() - c0
                    run["peak_bytes"], run["footprint_bytes"] = probe.stop()
                    run["weight_change"] = weight_change()
                    run["loss"] = metrics.get("loss")
                    run["grad_norm"] = metrics.get("grad_norm")
                    run["frac_groups_zero_std"] = metrics.get("frac_groups_zero_std")
                    runs[m].append(run)
            restore()
            dtype_name = str(next(net.parameters()).dtype)
            mixed = str(acc.mixed_precision)
            n_threads = torch.get_num_threads()
        finally:
            torch.set_num_threads(threads_before)
            _release(acc)

    results: dict[str, dict[str, Any]] = {}
    for m in methods:
        rs = runs[m]
        full = [r["generation_s"] + r["update_s"] for r in rs] if generation else []
        results[m] = {
            "update_s": _median([r["update_s"] for r in rs]),
            "update_s_all": [r["update_s"] for r in rs],
            "update_cpu_s": _median([r["update_cpu_s"] for r in rs]),
            "update_cpu_s_all": [r["update_cpu_s"] for r in rs],
            "generation_s": _median([r.get("generation_s") for r in rs]),
            "full_step_s": _median(full),
            "peak_mib": _median([_mib(r["peak_bytes"]) for r in rs]),
            "footprint_mib": _median([_mib(r["footprint_bytes"]) for r in rs]),
            "footprint_mib_all": [_mib(r["footprint_bytes"]) for r in rs],
            "weight_change_min": min(r["weight_change"] for r in rs),
            "loss": _median([r["loss"] for r in rs]),
            "grad_norm": _median([r["grad_norm"] for r in rs]),
            "frac_groups_zero_std": _median([r["frac_groups_zero_std"] for r in rs]),
        }
    real, grpo = results["real"], results["grpo"]

    def paired(value: Callable[[dict[str, Any]], float | None]) -> float | None:
        """Median over rounds of REAL/GRPO within the round: the two steps of a round ran
        back to back, so a slow drift of the machine's load cancels out."""
        pairs = zip(runs["real"], runs["grpo"], strict=True)
        return _median([_ratio(value(a), value(b)) for a, b in pairs])

    ratios = {
        "time": paired(lambda r: r["update_s"]),
        "cpu_time": paired(lambda r: r["update_cpu_s"]),
        "full_step_time": (
            paired(lambda r: r["generation_s"] + r["update_s"]) if generation else None
        ),
        "memory": paired(lambda r: r["footprint_bytes"]),
        "absolute_peak_memory": paired(lambda r: r["peak_bytes"]),
        "time_of_medians": _ratio(real["update_s"], grpo["update_s"]),
        "memory_of_medians": _ratio(real["footprint_mib"], grpo["footprint_mib"]),
    }
    n_rows = len(flat)
    out = {
        "config": {
            "model": model,
            "data": data,
            "prompts": prompts,
            "group_size": group_size,
            "rows": n_rows,
            "max_new_tokens": max_new_tokens,
            "repeats": repeats,
            "warmup": warmup,
            "lora": lora,
            "beta": beta,
            "device": str(dev),
            "dtype": dtype_name,
            "mixed_precision": mixed,
            "memory_measure": probe.kind,
            "torch_threads": n_threads,
        },
        "rollouts": {
            **rollout_stats,
            "mean_response_tokens": sum(len(r) for r in flat) / max(1, n_rows),
            "identical_when_resampled": same_rollouts if generation else None,
        },
        "results": results,
        "ratios": ratios,
    }
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(out, indent=2))
    if show:
        print_train_step_bench(out)
    return out


def _mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def train_step_ratio_lines(result: dict[str, Any]) -> list[str]:
    r = result["ratios"]
    return [
        f"real/grpo step time ratio: {_fmt(r['time'])}",
        f"real/grpo peak memory ratio: {_fmt(r['memory'])}",
    ]


def print_train_step_bench(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg, res, ro = result["config"], result["results"], result["rollouts"]
    table = Table(
        title=(
            f"train step: {cfg['model']} on {cfg['data']}, {cfg['prompts']} prompts x "
            f"{cfg['group_size']} rollouts ({ro['mean_response_tokens']:.0f} tokens each), "
            f"{cfg['device']} {cfg['dtype']}{' LoRA' if cfg['lora'] else ''}, "
            f"median of {cfg['repeats']}"
        )
    )
    for col in (
        "method",
        "update s",
        "update CPU s",
        "generation s",
        "full step s",
        "step memory MiB",
        "peak MiB",
        "grad norm",
        "max |dw|",
    ):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m, r in res.items():
        table.add_row(
            m.upper(),
            _fmt(r["update_s"]),
            _fmt(r["update_cpu_s"]),
            _fmt(r["generation_s"]),
            _fmt(r["full_step_s"]),
            _fmt(r["footprint_mib"], ".1f"),
            _fmt(r["peak_mib"], ".1f"),
            _fmt(r["grad_norm"], ".3g"),
            _fmt(r["weight_change_min"], ".2e"),
        )
    console = Console()
    if console.width < 120:
        console = Console(width=120)
    console.print(table)
    rat = result["ratios"]
    print(
        "update phase = judge_forward + loss + backward + AdamW step on the same rollouts "
        "(the headline time ratio); full step adds each method's own rollout generation "
        "(identical for both). Ratios: median over rounds of REAL/GRPO within a round."
    )
    print(
        f"memory = the step's own footprint ({cfg['memory_measure']}, peak minus use before "
        "the step)"
        + (
            f"; absolute peak ratio {_fmt(rat['absolute_peak_memory'])}"
            if cfg["device"].startswith("cuda")
            else ""
        )
        + "."
    )
    if res["grpo"]["grad_norm"] == 0.0:
        print(
            "note: every GRPO group had equal rewards on these rollouts, so its gradient is "
            "zero (the step still does all its work)."
        )
    print(f"real/grpo full step time ratio (generation + update): {_fmt(rat['full_step_time'])}")
    print(
        f"real/grpo step CPU-time ratio (update phase, process CPU time): {_fmt(rat['cpu_time'])}"
    )
    for line in train_step_ratio_lines(result):
        print(line)
