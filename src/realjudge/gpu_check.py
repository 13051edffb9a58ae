"""A prepared GPU check: REAL and GRPO training steps on random-init models of real shapes.

Meant for a machine that has a GPU and nothing else: no network, no ``pip install``, no
``datasets``, ``gguf``, vLLM or DeepSpeed (``scripts/gpu_check.sh`` runs it from a checkout
with ``PYTHONPATH=src``). For each model shape -- SmolLM2-135M (Llama) and Qwen3-0.6B, random
weights, written to a temporary directory and loaded as a checkpoint -- it runs REAL and GRPO
steps through the trainer's own code (:func:`realjudge.bench.train_step_harness`: the
trainer's configs, model preparation, optimiser and accelerator; rollouts from
``objective.prepare``; updates from :func:`realjudge.train.trainer.run_updates`) on prompts
of the embedded task, and reports as JSON:

- the REAL/GRPO step-time ratio (update phase, and full step = rollouts + update), each the
  median over rounds of the ratio within a round (REAL GRPO, GRPO REAL, ...);
- rollout tokens/s (generated tokens / generation time), training tokens/s (prompt + response
  tokens of every rollout row / update time);
- MFU against the GPU's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`, or ``--peak-tflops``), with
  FLOPs counted as :data:`FLOPS_FORMULA` says.

The tokenizer is the SmolLM2 one, shipped with the repo (``scripts/gpu_check_tokenizer``) so
that nothing has to be fetched; the Qwen3-shaped model's embedding is larger than that
vocabulary (151936 rows), as Qwen3's own is larger than its tokenizer.

Every phase has a time budget: after its first measured round a phase stops when its budget
is spent, and a phase that would start after the total budget is skipped. The JSON is
rewritten after each phase, so a run that is killed keeps what it measured. ``--device cpu
--tiny`` runs the same code on tiny shapes in a few seconds (CI).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_ASSET = REPO / "scripts" / "gpu_check_tokenizer"
"""``tokenizer.json.gz``: the embedded SmolLM2-135M-Instruct tokenizer (see its README.md)."""

#: Special tokens and chat template of that tokenizer (as its tokenizer_config.json has them).
TOKENIZER_SPECIALS = dict(
    bos_token="<|im_start|>",
    eos_token="<|im_end|>",
    pad_token="<|im_end|>",
    unk_token="<|endoftext|>",
)
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Dense bf16 tensor-core peak of a GPU, TFLOP/s, by a pattern of its ``torch.cuda`` name
#: (spec sheets; the first pattern that matches wins). ``--peak-tflops`` overrides it.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bH200\b", 989.0),
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b.*\bNVL\b", 835.0),
    (r"\bH100\b", 989.0),  # SXM
    (r"\bA100\b", 312.0),
    (r"\bL40S\b", 362.0),
    (r"\bL4\b", 121.0),
)

FLOPS_FORMULA = (
    "flops = 6 * params * training_tokens + 2 * params * rollout_tokens; params: the model's "
    "unique parameters (a tied embedding counted once); training_tokens: prompt + response "
    "tokens of every rollout row put through the update (padding not counted); rollout_tokens: "
    "tokens generated (prompt prefill not counted); attention-score FLOPs not counted, and the "
    "LM head is counted for prompt tokens although the training forward skips it there. "
    "mfu = flops / seconds / peak_bf16_flops"
)


@dataclass(frozen=True)
class ModelShape:
    """The shape of one model to build with random weights."""

    name: str
    family: str  # "llama" or "qwen3"
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    head_dim: int | None = None
    tie_word_embeddings: bool = True


SHAPES: dict[str, ModelShape] = {
    "smollm2-135m": ModelShape("smollm2-135m", "llama", 576, 30, 9, 3, 1536, 49152),
    "qwen3-0.6b": ModelShape("qwen3-0.6b", "qwen3", 1024, 28, 16, 8, 3072, 151936, head_dim=128),
}
#: ``--tiny``: the same families, two small layers each; the Qwen3 one keeps an embedding
#: larger than the tokenizer's vocabulary, as the real one has.
TINY_SHAPES: dict[str, ModelShape] = {
    "smollm2-135m": ModelShape("smollm2-135m", "llama", 64, 2, 4, 2, 128, 49152),
    "qwen3-0.6b": ModelShape("qwen3-0.6b", "qwen3", 64, 2, 4, 2, 128, 49152 + 64, head_dim=16),
}


@dataclass
class CheckSettings:
    """What one run measures (see ``python -m realjudge.gpu_check --help`` for each)."""

    models: tuple[str, ...] = ("smollm2-135m", "qwen3-0.6b")
    tiny: bool = False
    device: str = "auto"
    dtype: str = "float32"
    prompts: int = 4
    group_size: int = 16  # the paper's group size; 64 rollout rows a step
    max_new_tokens: int = 256
    max_prompt_tokens: int = 512
    repeats: int = 3
    warmup: int = 1
    phase_budgets_s: tuple[float, ...] = (150.0, 240.0)
    total_budget_s: float = 450.0
    peak_tflops: float | None = None
    seed: int = 0

    def budget_of(self, i: int) -> float:
        b = self.phase_budgets_s
        return b[i] if i < len(b) else b[-1]


TINY_OVERRIDES = dict(
    prompts=2, group_size=2, max_new_tokens=4, max_prompt_tokens=96, repeats=1, warmup=0
)


# ---------------------------------------------------------------------------------------------
# pure arithmetic
# ---------------------------------------------------------------------------------------------


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of ``device_name`` from :data:`PEAK_BF16_TFLOPS`, else ``None``."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops
    return None


def step_flops(params: int, training_tokens: int, rollout_tokens: int) -> float:
    """FLOPs of one RL step as :data:`FLOPS_FORMULA` counts them."""
    return 6.0 * params * training_tokens + 2.0 * params * rollout_tokens


def mfu(flops: float, seconds: float | None, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: ``flops / seconds`` over the peak; ``None`` without a time or
    a peak."""
    if not seconds or seconds <= 0 or not peak_tflops or peak_tflops <= 0:
        return None
    return flops / seconds / (peak_tflops * 1e12)


def rate(count: float, seconds: float | None) -> float | None:
    return count / seconds if seconds and seconds > 0 else None


def median(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Median over rounds of ``a[i] / b[i]`` (the two ran back to back in round ``i``)."""
    return median([x / y for x, y in zip(a, b, strict=True) if y])


def round_order(i: int) -> tuple[str, str]:
    """REAL GRPO in even rounds, GRPO REAL in odd ones."""
    return ("real", "grpo") if i % 2 == 0 else ("grpo", "real")


def keep_measuring(
    done: int, repeats: int, elapsed_s: float, last_round_s: float, budget_s: float
) -> bool:
    """Whether to run another measured round: always the first; then while rounds are left and
    one more round (as long as the last one) still ends inside the budget."""
    if done == 0:
        return True
    return done < repeats and elapsed_s + last_round_s <= budget_s


# ---------------------------------------------------------------------------------------------
# tokenizer and random-init checkpoints
# ---------------------------------------------------------------------------------------------


def load_check_tokenizer(asset: Path | None = None) -> Any:
    """The SmolLM2 tokenizer from the repo's gzipped ``tokenizer.json`` (no network, no GGUF);
    without the asset (an installed package), the embedded model's tokenizer."""
    from transformers import PreTrainedTokenizerFast

    src = (asset or TOKENIZER_ASSET) / "tokenizer.json.gz"
    if not src.is_file():
        from realjudge.models import load_tokenizer

        return load_tokenizer("embedded")
    with tempfile.TemporaryDirectory(prefix="realjudge-tok-") as tmp:
        path = Path(tmp) / "tokenizer.json"
        with gzip.open(src, "rb") as f_in, open(path, "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path), **TOKENIZER_SPECIALS)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def model_config(shape: ModelShape, tokenizer: Any) -> Any:
    """A transformers config of ``shape`` (LlamaConfig / Qwen3Config) with the tokenizer's
    special token ids."""
    if shape.vocab_size < len(tokenizer):
        raise ValueError(
            f"{shape.name}: vocab_size {shape.vocab_size} < tokenizer size {len(tokenizer)}"
        )
    common = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=shape.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if shape.family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if shape.family == "qwen3":
        from transformers import Qwen3Config

        return Qwen3Config(**common, head_dim=shape.head_dim)
    raise ValueError(f"unknown model family {shape.family!r}")


def write_random_checkpoint(shape: ModelShape, tokenizer: Any, out: Path, seed: int) -> int:
    """A randomly initialised model of ``shape`` and the tokenizer, saved as a transformers
    checkpoint in ``out`` (bf16 on disk); returns its number of unique parameters."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(shape, tokenizer))
    n_params = sum(p.numel() for p in model.parameters())  # a tied weight is listed once
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return n_params


# ---------------------------------------------------------------------------------------------
# one phase: one model shape
# ---------------------------------------------------------------------------------------------


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: Any) -> float | None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def run_phase(
    shape: ModelShape, s: CheckSettings, tokenizer: Any, budget_s: float, peak: float | None
) -> dict[str, Any]:
    """REAL and GRPO steps on a random-init model of ``shape``; the phase's JSON record."""
    from realjudge.bench import train_step_harness
    from realjudge.train.rl import sample_groups
    from realjudge.train.trainer import item_tokens

    t_start = time.perf_counter()
    out: dict[str, Any] = {"shape": asdict(shape), "budget_s": budget_s}
    with tempfile.TemporaryDirectory(prefix=f"realjudge-gpucheck-{shape.name}-") as tmp:
        ckpt = Path(tmp) / shape.name
        t0 = time.perf_counter()
        params = write_random_checkpoint(shape, tokenizer, ckpt, s.seed)
        out["params"] = params
        out["build_s"] = time.perf_counter() - t0
        _log(f"{shape.name}: {params / 1e6:.1f}M parameters, checkpoint in {out['build_s']:.1f}s")
        with train_step_harness(
            model=str(ckpt),
            data="embedded",
            split="train",
            prompts=s.prompts,
            group_size=s.group_size,
            max_new_tokens=s.max_new_tokens,
            max_prompt_tokens=s.max_prompt_tokens,
            lora=False,
            device=s.device,
            dtype=s.dtype,
            fmt="result",
            beta=0.01,
            temperature=1.0,
            top_p=1.0,
            learning_rate=1e-6,
            seed=s.seed,
            threads=None,
        ) as h:
            out["where"] = h.describe()
            setup = h.setup()
            dev = h.device
            indexed = list(enumerate(h.records))
            h.net.train()
            t0 = time.perf_counter()
            groups, first_stats = sample_groups(
                setup.ctxs["real"],
                h.net,
                h.records,
                group_size=s.group_size,
                temperature=1.0,
                top_p=1.0,
            )
            _sync(dev)
            out["first_rollout_s"] = time.perf_counter() - t0
            h.warm_up(setup, groups, s.warmup)
            out["setup_s"] = time.perf_counter() - t_start
            _log(f"{shape.name}: set up and warmed up in {out['setup_s']:.1f}s")

            runs: dict[str, list[dict[str, Any]]] = {"real": [], "grpo": []}
            last_round = 0.0
            while keep_measuring(
                len(runs["real"]), s.repeats, time.perf_counter() - t_start, last_round, budget_s
            ):
                t_round = time.perf_counter()
                for m in round_order(len(runs["real"])):
                    runs[m].append(_measure(h, m, setup, indexed, dev, item_tokens))
                last_round = time.perf_counter() - t_round
                _log(f"{shape.name}: round {len(runs['real'])} in {last_round:.1f}s")
    out["rounds"] = len(runs["real"])
    out["first_rollout_stats"] = first_stats
    out.update(summarize_phase(runs, params, peak))
    out["elapsed_s"] = time.perf_counter() - t_start
    return out


def _measure(h: Any, m: str, setup: Any, indexed: list, dev: Any, item_tokens: Any) -> dict:
    """One step of method ``m`` from the harness's starting point: its own rollouts
    (``objective.prepare``, same seed every time), then its update (``run_updates``)."""
    h.restore()
    h.net.train()
    _reset_peak(dev)
    _sync(dev)
    t0 = time.perf_counter()
    items, stats = setup.objectives[m].prepare(setup.ctxs[m], h.net, indexed, 0)
    _sync(dev)
    generation_s = time.perf_counter() - t0
    items = [replace(g, advantages=None) for g in items]
    t0 = time.perf_counter()
    metrics = h.update(m, setup, items)
    _sync(dev)
    update_s = time.perf_counter() - t0
    return {
        "generation_s": generation_s,
        "update_s": update_s,
        "rollout_tokens": int(stats.get("rollout/tokens", 0)),
        "training_tokens": sum(item_tokens(g) for g in items),
        "rows": sum(len(g.rollouts) for g in items),
        "peak_gib": _peak_gib(dev),
        "loss": metrics.get("loss"),
        "grad_norm": metrics.get("grad_norm"),
    }


def summarize_phase(
    runs: dict[str, list[dict[str, Any]]], params: int, peak: float | None
) -> dict[str, Any]:
    """Per method medians, rates and MFU; the paired REAL/GRPO ratios."""
    methods: dict[str, Any] = {}
    for m, rs in runs.items():
        gen = median([r["generation_s"] for r in rs])
        upd = median([r["update_s"] for r in rs])
        full = median([r["generation_s"] + r["update_s"] for r in rs])
        train_tok = rs[0]["training_tokens"]
        roll_tok = rs[0]["rollout_tokens"]
        methods[m] = {
            "generation_s": gen,
            "update_s": upd,
            "full_step_s": full,
            "update_s_all": [r["update_s"] for r in rs],
            "generation_s_all": [r["generation_s"] for r in rs],
            "rows": rs[0]["rows"],
            "rollout_tokens": roll_tok,
            "training_tokens": train_tok,
            "rollout_tokens_per_s": rate(roll_tok, gen),
            "training_tokens_per_s": rate(train_tok, upd),
            "step_flops": step_flops(params, train_tok, roll_tok),
            "mfu_full_step": mfu(step_flops(params, train_tok, roll_tok), full, peak),
            "mfu_update": mfu(step_flops(params, train_tok, 0), upd, peak),
            "mfu_rollout": mfu(step_flops(params, 0, roll_tok), gen, peak),
            "peak_gib": median([r["peak_gib"] for r in rs]),
            "loss": median([r["loss"] for r in rs]),
            "grad_norm": median([r["grad_norm"] for r in rs]),
        }
    real, grpo = runs["real"], runs["grpo"]
    ratios = {
        "update_time": paired_ratio([r["update_s"] for r in real], [r["update_s"] for r in grpo]),
        "full_step_time": paired_ratio(
            [r["generation_s"] + r["update_s"] for r in real],
            [r["generation_s"] + r["update_s"] for r in grpo],
        ),
    }
    return {"methods": methods, "real_grpo_ratios": ratios}


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


def environment(device: str, peak_override: float | None) -> dict[str, Any]:
    """Versions, the device and the peak the MFU is taken against (and where it came from)."""
    import accelerate
    import torch
    import transformers

    on_cuda = device != "cpu" and torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if on_cuda else platform.processor() or "cpu"
    table_peak = peak_bf16_tflops(name) if on_cuda else None
    peak = peak_override if peak_override is not None else table_peak
    source = (
        "--peak-tflops"
        if peak_override is not None
        else ("table (dense bf16, spec sheet)" if table_peak is not None else "unknown: no MFU")
    )
    return {
        "device": "cuda" if on_cuda else "cpu",
        "device_name": name,
        "peak_bf16_tflops": peak,
        "peak_source": source,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
    }


def summary(phases: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers per model (for docs/results.md)."""
    out: dict[str, Any] = {}
    for name, p in phases.items():
        if p.get("status") != "ok":
            out[name] = {"status": p.get("status")}
            continue
        ms, r = p["methods"], p["real_grpo_ratios"]
        out[name] = {
            "params": p["params"],
            "real_grpo_step_time_ratio": r["full_step_time"],
            "real_grpo_update_time_ratio": r["update_time"],
            "rollout_tokens_per_s": {m: ms[m]["rollout_tokens_per_s"] for m in ms},
            "training_tokens_per_s": {m: ms[m]["training_tokens_per_s"] for m in ms},
            "mfu_full_step": {m: ms[m]["mfu_full_step"] for m in ms},
            "mfu_update": {m: ms[m]["mfu_update"] for m in ms},
            "rounds": p["rounds"],
        }
    return out


def run_check(s: CheckSettings, out_path: Path | None = None) -> dict[str, Any]:
    """All phases of the check; the JSON (also written to ``out_path`` after every phase)."""
    import torch

    t_start = time.perf_counter()
    shapes = TINY_SHAPES if s.tiny else SHAPES
    env = environment(s.device, s.peak_tflops)
    result: dict[str, Any] = {
        "check": "realjudge gpu_check",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env,
        "settings": {**asdict(s), "temperature": 1.0, "top_p": 1.0, "beta": 0.01},
        "flops_formula": FLOPS_FORMULA,
        "notes": (
            "Random-init weights: every rollout runs to max_new_tokens without writing a score "
            "(a cue is forced after it), so GRPO's rewards are all equal and its gradient is "
            "zero; the step still does all its work. Ratios: median over rounds of REAL/GRPO "
            "within a round. Step = the method's own rollouts (objective.prepare) + its update "
            "(run_updates). Weights in settings.dtype; compute in "
            "environment.mixed_precision (bf16 autocast on a GPU)."
        ),
        "phases": {},
    }
    tokenizer = load_check_tokenizer()
    for i, name in enumerate(s.models):
        budget = s.budget_of(i)
        elapsed = time.perf_counter() - t_start
        if elapsed >= s.total_budget_s:
            result["phases"][name] = {"status": "skipped", "reason": "total budget spent"}
            _log(f"{name}: skipped (total budget of {s.total_budget_s:.0f}s spent)")
            continue
        budget = min(budget, s.total_budget_s - elapsed)
        try:
            phase = run_phase(shapes[name], s, tokenizer, budget, env["peak_bf16_tflops"])
            phase["status"] = "ok"
        except Exception as e:  # one shape failing (OOM, an old transformers) keeps the rest
            phase = {
                "status": "error",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-4000:],
            }
            _log(f"{name}: failed: {type(e).__name__}: {e}")
        result["phases"][name] = phase
        if "where" in phase:
            result["environment"]["mixed_precision"] = phase["where"].get("mixed_precision")
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        result["summary"] = summary(result["phases"])
        result["wall_s"] = time.perf_counter() - t_start
        if out_path is not None:
            write_json(result, out_path)
    return result


def write_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable))
    tmp.replace(path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def default_out() -> Path:
    """``$OUT/gpu_check.json`` when ``$OUT`` is a directory (the device tool's output folder),
    else ``runs/gpu_check.json``."""
    out = os.environ.get("OUT")
    if out and Path(out).is_dir():
        return Path(out) / "gpu_check.json"
    return Path("runs") / "gpu_check.json"


def build_parser() -> argparse.ArgumentParser:
    d = CheckSettings()
    p = argparse.ArgumentParser(
        prog="scripts/gpu_check.sh",
        description=(
            "REAL and GRPO training steps on random-init SmolLM2-135M and Qwen3-0.6B shapes "
            "through the trainer's own code; prints JSON (step-time ratio, rollout and "
            "training tokens/s, MFU)."
        ),
    )
    p.add_argument(
        "--models",
        default=",".join(d.models),
        help=f"comma-separated shapes, run in this order (default: {','.join(d.models)})",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="tiny shapes (2 layers, hidden 64) and a step of 2 prompts x 2 rollouts of 4 "
        "tokens, for CI on a CPU (default: off)",
    )
    p.add_argument(
        "--device",
        default=d.device,
        choices=("auto", "cuda", "cpu"),
        help=f"where to run (default: {d.device}: cuda when there is one)",
    )
    p.add_argument(
        "--dtype",
        default=d.dtype,
        choices=("float32", "bfloat16"),
        help=f"weight dtype; compute is bf16 autocast on a GPU either way (default: {d.dtype}, "
        "as the recipes train)",
    )
    p.add_argument("--prompts", type=int, help=f"prompts per step (default: {d.prompts})")
    p.add_argument("--group-size", type=int, help=f"rollouts per prompt (default: {d.group_size})")
    p.add_argument(
        "--max-new-tokens", type=int, help=f"rollout length (default: {d.max_new_tokens})"
    )
    p.add_argument(
        "--repeats", type=int, help=f"measured rounds per shape at most (default: {d.repeats})"
    )
    p.add_argument(
        "--warmup", type=int, help=f"unmeasured steps per method first (default: {d.warmup})"
    )
    p.add_argument(
        "--phase-budgets",
        default=",".join(f"{b:g}" for b in d.phase_budgets_s),
        help="seconds per shape, in --models order, the last one repeated; a shape stops "
        "measuring after its first round once the next would pass it (default: "
        f"{','.join(f'{b:g}' for b in d.phase_budgets_s)})",
    )
    p.add_argument(
        "--total-budget",
        type=float,
        default=d.total_budget_s,
        help=f"seconds for the whole check; later shapes are skipped once spent (default: "
        f"{d.total_budget_s:g})",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        help="dense bf16 peak of the device for MFU (default: from the table by device name; "
        "H200 989)",
    )
    p.add_argument(
        "--out",
        help="where the JSON goes (default: $OUT/gpu_check.json if $OUT is a directory, else "
        "runs/gpu_check.json)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed (default: {d.seed})")
    return p


def settings_from_args(args: argparse.Namespace) -> CheckSettings:
    s = CheckSettings(
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        tiny=args.tiny,
        device=args.device,
        dtype=args.dtype,
        total_budget_s=args.total_budget,
        peak_tflops=args.peak_tflops,
        seed=args.seed,
        phase_budgets_s=tuple(float(b) for b in args.phase_budgets.split(",") if b.strip()),
    )
    if s.tiny:
        s = replace(s, **TINY_OVERRIDES)
    given = {
        k: getattr(args, k)
        for k in ("prompts", "group_size", "max_new_tokens", "repeats", "warmup")
        if getattr(args, k) is not None
    }
    s = replace(s, **given)
    if min(s.prompts, s.group_size, s.max_new_tokens, s.repeats) < 1 or s.warmup < 0:
        raise ValueError("prompts, group size, max new tokens and repeats must be >= 1")
    if not s.models or not s.phase_budgets_s:
        raise ValueError("--models and --phase-budgets must not be empty")
    unknown = [m for m in s.models if m not in SHAPES]
    if unknown:
        raise ValueError(f"unknown model shape(s) {unknown}; known: {', '.join(SHAPES)}")
    return s


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        s = settings_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    out_path = Path(args.out) if args.out else default_out()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    result = run_check(s, out_path)
    print(json.dumps(result, indent=2, default=_jsonable))
    _log(f"JSON written to {out_path}; summary:")
    _log(json.dumps(result.get("summary", {}), default=_jsonable))
    return 0 if all(p.get("status") == "ok" for p in result["phases"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
