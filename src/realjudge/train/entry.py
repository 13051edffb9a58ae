"""Command-line entry of training: ``python -m realjudge.train`` and ``realjudge train``.

Both accept the same arguments (:func:`add_arguments`) and work under ``accelerate launch``::

    realjudge train --method real --model embedded --data embedded --out runs/real \\
        [--config FILE] [--preset cpu-embedded] [--resume] [--lora] [--init-from DIR] \\
        [key=value ...]
    realjudge train --list-keys --method real --preset cpu-embedded   # keys, values, meaning
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
import inspect
import json
import os
import re
import textwrap
import typing
from typing import Any

from realjudge.train.config import (
    CONFIG_CLASSES,
    METHODS,
    PRESETS,
    ConfigError,
    TrainConfig,
    build_config,
    parse_overrides,
    read_config_file,
)

#: How to list the config keys (help of ``realjudge train`` and ``python -m realjudge.train``).
LIST_KEYS_HINT = (
    "List every config key with its type, default and meaning: "
    "'realjudge train --list-keys [--method M] [--preset P]'."
)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of training. The flags are shortcuts for config keys: left out, the key
    keeps its value from --config, else from --preset, else the method's default (shown)."""
    d = TrainConfig()
    p.add_argument(
        "--method",
        choices=METHODS,
        help="training method (default: 'method' in --config; one of the two is required)",
    )
    p.add_argument(
        "--model",
        help="starting model: embedded, tiny, a checkpoint dir or a hub id "
        f"(default: --config's or --preset's, else {d.model})",
    )
    p.add_argument(
        "--data",
        help="training data: embedded, a .json/.jsonl/.parquet file or a hub id "
        f"(default: --config's or --preset's, else {d.data})",
    )
    p.add_argument(
        "--eval-data",
        dest="eval_data",
        help="evaluation data, periodic and final (default: --config's or --preset's, else "
        "none: no evaluation)",
    )
    p.add_argument(
        "--out",
        help="output dir: final model, checkpoints, logs "
        f"(default: --config's or --preset's, else {d.out})",
    )
    p.add_argument("--config", help="YAML or JSON file of config keys (default: none)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        metavar="METHOD_PRESET",
        help="start from a method preset of realjudge.train.config: "
        + ", ".join(sorted(PRESETS))
        + " (authors: the REAL authors' settings; cpu-embedded: small CPU runs of the "
        "embedded model). Not the same names as 'realjudge reproduce --preset', which takes "
        "experiment presets (default: none, the method's defaults)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from the latest checkpoint in --out",
    )
    p.add_argument("--lora", action="store_true", default=None, help="train LoRA adapters")
    p.add_argument(
        "--init-from",
        dest="init_from",
        help="warm start from a checkpoint dir (default: --config's, else none: --model's weights)",
    )
    p.add_argument(
        "--max-steps",
        dest="max_steps",
        type=int,
        help="training steps, one batch of prompts each "
        f"(default: --config's or --preset's, else {d.max_steps})",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="model init (tiny), LoRA init, data order and sampling seed "
        f"(default: --config's or --preset's, else {d.seed})",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as JSON and exit"
    )
    p.add_argument(
        "--list-keys",
        action="store_true",
        help="print every config key of --method (of every method without it) with its type, "
        "its value after --preset/--config, and its meaning, and exit",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="any other config key, e.g. beta=0.01 lora_r=32 (see --list-keys; default: none)",
    )
    return p


def key_docs(cls: type[TrainConfig]) -> dict[str, str]:
    """``{key: meaning}`` from the ``Attributes:`` sections of ``cls``'s docstring and its
    bases' (a subclass's text wins; ``a, b: text`` documents both keys)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        lines = inspect.cleandoc(klass.__doc__ or "").splitlines()
        if "Attributes:" not in lines:
            continue
        names: list[str] = []
        for line in lines[lines.index("Attributes:") + 1 :]:
            if not line.strip() or not line.startswith("    "):
                break
            entry = re.match(r"^    ([a-z_][\w, ]*):\s(.*)$", line)
            if entry:
                names = [n.strip() for n in entry.group(1).split(",")]
                for n in names:
                    docs[n] = entry.group(2).strip()
            else:
                for n in names:
                    docs[n] += " " + line.strip()
    return docs


def format_keys(cfg: TrainConfig, keys: list[str] | None = None) -> str:
    """``key: type = value`` and its meaning, one block per key (all of ``cfg``'s by default)."""
    cls = type(cfg)
    hints = typing.get_type_hints(cls)
    docs = key_docs(cls)
    out = []
    for key in keys if keys is not None else cls.field_names():
        hint = hints[key]
        kind = hint.__name__ if isinstance(hint, type) else str(hint)
        out.append(f"{key}: {kind} = {json.dumps(getattr(cfg, key))}")
        doc = docs.get(key, "(undocumented)").replace("``", "")
        out += textwrap.wrap(doc, 96, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(out)


def list_keys(args: argparse.Namespace) -> str:
    """The text of ``--list-keys``: one method's keys with their resolved values, or, without
    a method, the shared keys and then each method's own keys, at their defaults."""
    method = args.method or (read_config_file(args.config).get("method") if args.config else None)
    if method:
        cfg = config_from_args(args)
        where = f" after --preset {args.preset}" if args.preset else ""
        head = f"config keys of method {cfg.method!r}, values{where} and any --config or flags:"
        return head + "\n" + format_keys(cfg)
    if args.preset:
        raise ConfigError("--list-keys with --preset needs --method: presets are per method")
    shared = TrainConfig.field_names()
    parts = ["config keys every method shares (class defaults; --method M shows M's own):"]
    parts.append(format_keys(CONFIG_CLASSES["sft"](), [k for k in shared if k != "method"]))
    for method, cls in CONFIG_CLASSES.items():
        own = [k for k in cls.field_names() if k not in shared]
        if own:
            parts.append(f"\nkeys of method {method!r} only:")
            parts.append(format_keys(cls(), own))
    return "\n".join(parts)


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
    if getattr(args, "list_keys", False):
        print(list_keys(args))
        return 0
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
        description="Train a judge with SFT, RAFT, TRACT, GRPO or REAL. " + LIST_KEYS_HINT,
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except ValueError as e:  # ConfigError, RunExistsError, InitFromError, DataError, ...
        raise SystemExit(f"realjudge train: error: {e}") from None
