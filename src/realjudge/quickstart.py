"""The main job: train a judge on the embedded default and show what it learned.

``realjudge quickstart`` evaluates the embedded model on the embedded task's in-domain test
split and its out-of-domain split, trains it in stages (each stage warm-starts from the one
before, as the paper starts REAL from a supervised checkpoint), evaluates after every stage and
prints Pearson/Spearman before and after. Everything runs on a CPU; the stages and their sizes
are fields of :class:`QuickstartConfig`.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Stage:
    """One training stage: a method, its step budget and any other config keys.

    ``freeze_fraction`` freezes that share of the starting model's decoder layers (rounded
    down; ``freeze_layers`` is derived from the model's own layer count, so every model
    works). An explicit ``freeze_layers`` in ``overrides`` wins, and must fit the model."""

    method: str
    max_steps: int
    overrides: dict[str, Any] = field(default_factory=dict)
    freeze_fraction: float = 0.0


WARM_STARTS = ("raft", "tract")
"""Methods the main job can warm-start REAL from (the paper starts from either); the first
is the default."""


RAFT_SELECTION: dict[str, Any] = {
    "eval_data": "embedded",
    "eval_split": "validation",
    "eval_limit": 60,
    "eval_mode": "score",
    "eval_steps": 25,
    "load_best_model_at_end": True,
    "metric_for_best_model": "pearson",
}
"""The RAFT stage keeps the weights of its best score-only evaluation on 60 items of the
embedded validation split (every 25 steps and at the end; a few seconds each): RAFT's
validation curve is not monotone at this budget (docs/results.md, "The good judge"), and
a run that ends in a dip would hand REAL a worse start. The test and OOD splits are never
read for it."""


def default_stages(start: str = WARM_STARTS[0]) -> list[Stage]:
    """A supervised warm start, then REAL from it (the paper's order), sized for two CPU
    cores: the lower half of the layers stay frozen (15 of the embedded model's 30), which
    halves the backward pass.

    ``start="raft"`` (250 steps, the default) trains the score alone, with no feedback: its
    score reads the response itself and carries over to the out-of-domain split, but the
    feedback it writes before the score checks nothing. It keeps its best weights on the
    validation split (:data:`RAFT_SELECTION`). ``start="tract"`` (200 steps) trains
    on the reference feedbacks, so the judge writes item-by-item checks in domain, and its
    score follows them, which out of domain it cannot do (README, "The main job")."""
    if start not in WARM_STARTS:
        raise ValueError(f"start must be one of {WARM_STARTS}, got {start!r}")
    supervised: dict[str, Any] = {"learning_rate": 1e-4, "batch_size": 8, "warmup_steps": 10}
    if start == "raft":
        supervised.update(RAFT_SELECTION)
    return [
        Stage(start, 200 if start == "tract" else 250, supervised, freeze_fraction=0.5),
        Stage(
            "real",
            6,
            {
                "learning_rate": 1e-5,
                "batch_size": 2,
                "num_generations": 4,
                "max_new_tokens": 64,
                "beta": 0.01,
            },
            freeze_fraction=0.5,
        ),
    ]


@dataclass
class QuickstartConfig:
    """The main job.

    Attributes:
        out: run directory (one sub-directory per stage and per evaluation).
        model: starting model: ``embedded``, ``tiny``, a checkpoint directory, a directory
            written by ``realjudge train`` or a hub id (checked by :func:`inspect_model` before
            any work; layers to freeze, output format and RAIL normalisation follow it).
        stages: training stages, run in order, each warm-started from the previous one.
        preset: the training preset every stage starts from (:mod:`realjudge.train.config`).
        eval_limit: items of each evaluation split (test and OOD). 80 items give the paired
            bootstrap of the change an interval of about +-0.23 Pearson; 50 gave +-0.29.
        eval_each_stage: also evaluate after every intermediate stage (a row per stage;
            ~2.5 min more on two CPU cores); by default only before and after training.
        eval_cot: evaluate with the judge's own feedback (CoT + RAIL) instead of score-only.
        max_new_tokens: feedback length limit for CoT evaluation and rollouts.
        eval_batch_size: items per generation batch of the evaluations (40: 80 items in
            two batches; decoding reads every weight once per step whatever the batch,
            so larger batches spend less time per item: 1.19x the examples/s of 16 on
            an avx512_bf16 CPU, README).
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ...
        seed: seed of the data, the sampling and the training.
    """

    out: str = "runs/quickstart"
    model: str = "embedded"
    stages: list[Stage] = field(default_factory=default_stages)
    preset: str = "cpu-embedded"
    eval_limit: int = 80
    eval_each_stage: bool = False
    eval_cot: bool = True
    max_new_tokens: int = 96
    eval_batch_size: int = 40
    device: str = "auto"
    seed: int = 0
    splits: tuple[tuple[str, str], ...] = (("test", "embedded"), ("ood", "embedded-ood"))


@dataclass(frozen=True)
class ModelFacts:
    """What the main job needs to know of its starting model, read without its weights."""

    layers: int
    fmt: str = "result"
    normalize: bool = True


def inspect_model(spec: str) -> ModelFacts:
    """Check a ``--model`` spec and read its layer count and judge settings from its config
    (no weights are loaded). Raises :class:`~realjudge.models.ModelNotFound` with a message
    naming what is wrong for a missing path, a directory that is not a checkpoint, a
    malformed hub id or a hub model whose config cannot be fetched."""
    from realjudge.models import ModelNotFound, build_tiny_model, read_judge_defaults

    kinds = "'embedded', 'tiny', a checkpoint directory or a hub id (owner/name)"
    if spec == "tiny":
        default = inspect.signature(build_tiny_model).parameters["layers"].default
        return ModelFacts(layers=int(default))
    if spec == "embedded":
        return ModelFacts(layers=_num_layers(_embedded_config(), spec))
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"--model {spec!r} is a directory without config.json: not a transformers "
                "checkpoint (give the output dir of 'realjudge train' or a saved model)"
            )
        defaults = read_judge_defaults(path)
        return ModelFacts(
            layers=_num_layers(_auto_config(str(path), spec), spec),
            fmt=defaults.get("fmt", "result"),
            normalize=defaults.get("normalize", True),
        )
    if path.exists():
        raise ModelNotFound(f"--model {spec!r} is a file; it takes {kinds}")
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec
    if looks_local or "/" not in spec:
        raise ModelNotFound(f"--model {spec!r}: no such directory; --model takes {kinds}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError as e:
        raise ModelNotFound(f"--model {spec!r} is not a valid hub id: {e}") from None
    return ModelFacts(layers=_num_layers(_auto_config(spec, spec), spec))


def _embedded_config() -> Any:
    """The embedded model's config: from its cached checkpoint, else from the GGUF header."""
    from transformers import AutoConfig

    from realjudge.models import EMBEDDED_NAME, cache_dir, embedded_gguf_path

    cached = cache_dir() / EMBEDDED_NAME / "config.json"
    if cached.is_file():
        return AutoConfig.from_pretrained(cached.parent)
    gguf = embedded_gguf_path()  # ModelNotFound when the wheel is missing
    return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _auto_config(where: str, spec: str) -> Any:
    from transformers import AutoConfig

    from realjudge.models import ModelNotFound

    try:
        return AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as e:
        raise ModelNotFound(f"--model {spec!r}: cannot read its config: {e}") from None


def _num_layers(config: Any, spec: str) -> int:
    from realjudge.models import ModelNotFound

    text = getattr(config, "get_text_config", lambda: config)()
    n = getattr(text, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 1:
        raise ModelNotFound(f"--model {spec!r}: its config names no decoder layers")
    return n


def stage_overrides(
    cfg: QuickstartConfig, facts: ModelFacts, i: int, init_from: str | None
) -> dict[str, Any]:
    """The config keys of stage ``i`` (on top of ``cfg.preset``), following the model."""
    stage = cfg.stages[i]
    over: dict[str, Any] = {
        "model": cfg.model,
        "out": str(Path(cfg.out) / f"stage{i + 1}-{stage.method}"),
        "max_steps": stage.max_steps,
        "seed": cfg.seed,
        "max_new_tokens": cfg.max_new_tokens,
        "device": cfg.device,
        "fmt": facts.fmt,
        "rail_normalize": facts.normalize,
        "overwrite": True,
        "eval_limit": 0,  # test and OOD are evaluated here (a stage may add a validation one)
        "save_steps": 0,
    }
    if stage.freeze_fraction and not stage.overrides.get("lora"):
        over["freeze_layers"] = int(facts.layers * stage.freeze_fraction)
    over.update(stage.overrides)
    if over.get("freeze_layers", 0) > facts.layers:
        raise ValueError(
            f"stage {i + 1} ({stage.method}): freeze_layers={over['freeze_layers']} but "
            f"--model {cfg.model!r} has {facts.layers} layers"
        )
    if init_from is not None:
        over["init_from"] = init_from
    return over


def plan(cfg: QuickstartConfig) -> tuple[ModelFacts, list[Any]]:
    """Check everything before any work: the model spec, then every stage's config."""
    from realjudge.train.config import build_config

    facts = inspect_model(cfg.model)
    configs = []
    for i, stage in enumerate(cfg.stages):
        previous = None if i == 0 else "<previous stage>"
        configs.append(
            build_config(
                stage.method, preset=cfg.preset, overrides=stage_overrides(cfg, facts, i, previous)
            )
        )
    return facts, configs


def _evaluate(
    cfg: QuickstartConfig, facts: ModelFacts, model: str, tag: str
) -> dict[str, dict[str, Any]]:
    from realjudge.evaluate.run import EvalConfig, run_eval

    results: dict[str, dict[str, Any]] = {}
    for name, data in cfg.splits:
        metrics = run_eval(
            EvalConfig(
                model=model,
                data=data,
                split="ood" if data == "embedded-ood" else "test",
                limit=cfg.eval_limit,
                cot=cfg.eval_cot,
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.eval_batch_size,
                out=str(Path(cfg.out) / f"eval-{tag}-{name}"),
                seed=cfg.seed,
                n_boot=200,
                device=cfg.device,
                fmt=facts.fmt,
                normalize=facts.normalize,
            )
        )
        results[name] = metrics
    return results


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    """Evaluate, train every stage (evaluating after the last, or after each with
    ``eval_each_stage``); return and write the summary."""
    from realjudge.evaluate.report import comparison_table, rich_table
    from realjudge.train.config import build_config
    from realjudge.train.trainer import train

    facts, _ = plan(cfg)  # a bad model spec or stage config stops here, before any work
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table: dict[str, dict[str, dict[str, Any]]] = {
        "before": _evaluate(cfg, facts, cfg.model, "before")
    }
    timings = {"eval-before": time.perf_counter() - t0}
    start = cfg.model
    for i, stage in enumerate(cfg.stages):
        t = time.perf_counter()
        init_from = None if start == cfg.model else start
        overrides = stage_overrides(cfg, facts, i, init_from)
        result = train(build_config(stage.method, preset=cfg.preset, overrides=overrides))
        start = str(result.out)
        timings[f"train-{stage.method}"] = time.perf_counter() - t
        if not (cfg.eval_each_stage or i == len(cfg.stages) - 1):
            continue
        t = time.perf_counter()
        table[f"after {stage.method}"] = _evaluate(cfg, facts, start, f"stage{i + 1}")
        timings[f"eval-{stage.method}"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    from realjudge.evaluate.compare import paired_change

    last = f"stage{len(cfg.stages)}" if cfg.stages else "before"
    change = {
        name: paired_change(out / f"eval-before-{name}", out / f"eval-{last}-{name}", seed=cfg.seed)
        for name, _ in cfg.splits
    }

    from realjudge.models import runtime_environment

    summary = {
        "config": asdict(cfg),
        "results": {
            row: {
                split: {k: m.get(k) for k in ("pearson", "spearman", "rmse", "n")}
                for split, m in cols.items()
            }
            for row, cols in table.items()
        },
        "change": change,
        "timings_s": timings,
        "final_model": start,
        # the machine the timings (and, through precision, the numbers) belong to
        "environment": runtime_environment(cfg.device),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    md = comparison_table(summary["results"], metrics=("pearson", "spearman"))
    from rich.console import Console

    Console().print(
        rich_table(
            summary["results"],
            metrics=("pearson", "spearman"),
            title="embedded judge: in-domain test and out-of-domain",
        )
    )
    for line in change_lines(change):
        print(line)
    (out / "summary.md").write_text(md + "\n\n" + "\n".join(change_lines(change)) + "\n")
    print(f"total {timings['total'] / 60:.1f} min; final model: {start}")
    return summary


def change_lines(change: dict[str, dict[str, Any]]) -> list[str]:
    """One line per split: the change of Pearson and Spearman with its paired 95% interval."""

    def one(d: dict[str, Any]) -> str:
        if d.get("delta") is None:
            return "n/a"
        ci = d.get("ci") or [float("nan")] * 2
        return f"{d['delta']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"

    return [
        f"change after training, {split} ({c['n']} items, paired bootstrap 95%): "
        f"Pearson {one(c['pearson'])}, Spearman {one(c['spearman'])}"
        for split, c in change.items()
    ]
