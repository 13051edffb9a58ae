"""Command-line entry of training: ``python -m realjudge.train`` and ``realjudge train``.

Both accept the same arguments (:func:`add_arguments`) and work under ``accelerate launch``::

    realjudge train --method real --model embedded --data embedded --out runs/real \\
        [--config FILE] [--preset cpu-embedded] [--resume] [--lora] [--init-from DIR] \\
        [key=value ...]
    accelerate launch --config_file configs/accelerate/multi_gpu_ddp.yaml \\
        -m realjudge.train --config configs/methods/real-qwen3-8b.yaml
    # two CPU processes (gloo); note that `accelerate launch --cpu --num_processes 2` starts
    # only one process unless MPI is set up, so go through the torchrun path:
    accelerate launch --multi_gpu --num_processes 2 -m realjudge.train ... device=cpu

Flags map to config keys; ``key=value`` pairs set any other key of the method's config
(:mod:`realjudge.train.config`), e.g. ``beta=0.01 num_generations=16 lora_r=32``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from realjudge.train.config import (
    METHODS,
    PRESETS,
    TrainConfig,
    build_config,
    parse_overrides,
)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--method", choices=METHODS, help="training method (or 'method' in --config)")
    p.add_argument("--model", help="starting model: embedded, tiny, a checkpoint dir or a hub id")
    p.add_argument(
        "--data", help="training data: embedded, a .json/.jsonl/.parquet file or a hub id"
    )
    p.add_argument("--eval-data", dest="eval_data", help="evaluation data (periodic + final)")
    p.add_argument("--out", help="output dir (final model, checkpoints, logs)")
    p.add_argument("--config", help="YAML or JSON file of config keys")
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset")
    p.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from the latest checkpoint in --out",
    )
    p.add_argument("--lora", action="store_true", default=None, help="train LoRA adapters")
    p.add_argument("--init-from", dest="init_from", help="warm start from a checkpoint dir")
    p.add_argument("--max-steps", dest="max_steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as JSON and exit"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any other config key")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    over: dict[str, Any] = {}
    for key in (
        "model",
        "data",
        "eval_data",
        "out",
        "resume",
        "lora",
        "init_from",
        "max_steps",
        "seed",
    ):
        value = getattr(args, key, None)
        if value is not None:
            over[key] = value
    over.update(parse_overrides(args.overrides))
    return build_config(args.method, preset=args.preset, file=args.config, overrides=over)


def run(args: argparse.Namespace) -> int:
    """Resolve the config and train. User errors are ``ValueError``s: a bad config
    (:class:`ConfigError`), an ``out`` that holds a run without resume/overwrite
    (``RunExistsError``), a bad ``init_from``, unreadable data."""
    cfg = config_from_args(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from realjudge.train.trainer import train

    result = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under a launcher, the main process reports
        return 0
    if result.final_eval:
        shown = {k: round(v, 4) for k, v in result.final_eval.items() if isinstance(v, float)}
        print(f"final eval: {shown}")
    print(f"model written to {result.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m realjudge.train",
        description="Train a judge with SFT, RAFT, TRACT, GRPO or REAL.",
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except ValueError as e:  # ConfigError, RunExistsError, InitFromError, DataError, ...
        raise SystemExit(f"realjudge train: error: {e}") from None
