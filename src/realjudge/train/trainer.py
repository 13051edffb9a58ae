"""The training loop, on HF accelerate: one readable loop for every method and every setup.

The same code runs on one CPU, under ``accelerate launch --cpu --num_processes 2``, and on GPUs
with DDP, DeepSpeed ZeRO or FSDP (chosen by the accelerate config the run is launched with;
see ``configs/accelerate/``). accelerate does the distributed work: it wraps the model and the
optimiser (``prepare``), scales and accumulates gradients (``accumulate`` / ``backward``),
writes and restores resumable checkpoints (``save_state`` / ``load_state``) and feeds the
trackers (``init_trackers`` / ``log``). Nothing here talks to ``torch.distributed`` directly.

One step::

    records of the step (deterministic in (seed, step), this process's share)
    -> objective.prepare: tokenise; RL: sample G rollouts per prompt (seeded by seed/step/rank)
    -> for each of objective.passes (RL: ppo_epochs):
         for each mini-batch (one optimiser update):
           for each of grad_accum micro-batches: loss = objective.loss(...); backward
           clip, step (skipped, and logged, when a loss or the gradient norm is not finite)
    -> metrics averaged over processes -> log; periodic eval; periodic checkpoint

Because the data order and every random draw are derived from ``(seed, step)``, a run that is
interrupted and resumed from a checkpoint ends with the same weights as one that was not.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from realjudge.data.loaders import load_records
from realjudge.scoring.vocab import ScoreVocab
from realjudge.train.config import CONFIG_FILE, TrainConfig, load_saved_config
from realjudge.train.evaluation import evaluate
from realjudge.train.examples import (
    Encoder,
    check_records,
    chunks,
    derive_seed,
    global_batch_indices,
    shard,
)
from realjudge.train.modeling import (
    CHECKPOINTS,
    META_FILE,
    STATE_FILE,
    export,
    latest_checkpoint,
    load_start,
    prepare_for_training,
)
from realjudge.train.objectives import Context, forward_examples
from realjudge.train.rl import GRPOObjective, REALObjective
from realjudge.train.supervised import RAFTObjective, SFTObjective, TRACTObjective

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
METRICS_FILE = "metrics.json"
# Keys whose change between a run and its resumption is expected.
_RESUMABLE_CHANGES = {
    "resume",
    "max_steps",
    "out",
    "overwrite",
    "report_to",
    "run_name",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "eval_steps",
}


class RunExistsError(ValueError):
    """``out`` already holds a run and neither ``resume`` nor ``overwrite`` is set."""


@dataclass
class TrainResult:
    """What :func:`train` returns: where the model is and the last numbers."""

    out: Path
    step: int
    interrupted: bool = False
    final_eval: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)


def make_objective(cfg: TrainConfig) -> Any:
    if cfg.method == "sft":
        return SFTObjective()
    if cfg.method == "raft":
        return RAFTObjective()
    if cfg.method == "tract":
        return TRACTObjective()
    if cfg.method == "grpo":
        return GRPOObjective(cfg)
    if cfg.method == "real":
        return REALObjective(cfg)
    raise ValueError(f"unknown method {cfg.method!r}")


def make_accelerator(cfg: TrainConfig) -> Any:
    from accelerate import Accelerator

    from realjudge.models import pick_mixed_precision

    mp = cfg.mixed_precision
    if mp == "auto":
        on_gpu = cfg.device != "cpu" and torch.cuda.is_available()
        mp = os.environ.get("ACCELERATE_MIXED_PRECISION") or pick_mixed_precision(on_gpu)
    return Accelerator(
        cpu=cfg.device == "cpu",
        mixed_precision=mp,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_dir=str(Path(cfg.out) / "logs"),
        # The scheduler steps once per optimiser update (our batch sizes are global).
        step_scheduler_with_optimizer=False,
    )


def check_sizes(cfg: TrainConfig, world: int) -> int:
    """Prompts per process per micro-batch; raises when the global sizes do not split."""
    mini = getattr(cfg, "mini_batch_size", None) or cfg.batch_size
    if cfg.batch_size % world or mini % world:
        raise ValueError(
            f"batch_size ({cfg.batch_size}) and mini_batch_size ({mini}) must divide by the "
            f"number of processes ({world})"
        )
    if (mini // world) % cfg.grad_accum:
        raise ValueError(
            f"each process's mini-batch ({mini // world} prompts) must divide into grad_accum "
            f"({cfg.grad_accum}) micro-batches"
        )
    return mini // world // cfg.grad_accum


def train(cfg: TrainConfig, *, stop_after: int | None = None) -> TrainResult:
    """Train ``cfg.method`` as configured; returns a :class:`TrainResult`.

    ``stop_after``: stop (without exporting) once this many steps are done, as if the run had
    been killed right after its checkpoint -- used to test resuming.
    """
    acc = make_accelerator(cfg)
    out = Path(cfg.out)
    world, rank = acc.num_processes, acc.process_index
    micro = check_sizes(cfg, world)
    _check_accumulation(acc, cfg)
    resume_from = _resume_point(cfg, acc)

    # ---- model, data, score vocabulary ----
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    model, tokenizer = load_start(cfg)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = prepare_for_training(model, cfg)
    train_records = load_records(
        cfg.data, cfg.data_split, limit=cfg.data_limit, seed=cfg.seed
    ).records
    scale = check_records(train_records, f"training data {cfg.data}")
    eval_records = []
    if cfg.eval_data and cfg.eval_limit:
        eval_records = load_records(
            cfg.eval_data, cfg.eval_split, limit=cfg.eval_limit, seed=cfg.seed
        ).records
        check_records(eval_records, f"eval data {cfg.eval_data}")
    vocab = ScoreVocab.from_tokenizer(tokenizer, cfg.fmt, scale)
    encoder = Encoder(tokenizer, vocab, cfg.fmt, cfg.max_prompt_tokens, cfg.max_new_tokens)
    objective = make_objective(cfg)

    ref_model = None
    if getattr(cfg, "kl_coef", 0.0) and not cfg.lora:  # frozen copy of the starting policy
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)

    # ---- optimiser, schedule, accelerate ----
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
    )
    mini = getattr(cfg, "mini_batch_size", None) or cfg.batch_size
    updates_per_step = objective.passes * (cfg.batch_size // mini)
    scheduler = get_scheduler(
        # transformers' "constant" ignores warm-up; its warm-up variant has another name
        "constant_with_warmup" if cfg.lr_scheduler == "constant" else cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=cfg.max_steps * updates_per_step,
    )
    _deepspeed_batch_hint(acc, micro)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    _check_accumulation(acc, cfg)  # DeepSpeed may impose its own value in prepare
    ctx = Context(cfg, acc, tokenizer, encoder, vocab, scale)
    ctx.ref_logprobs_fn = _reference_fn(ctx, model, ref_model)

    start = 0
    if resume_from is not None:
        acc.load_state(str(resume_from))
        start = int(json.loads((resume_from / STATE_FILE).read_text())["step"])
        acc.print(f"resumed from {resume_from} (step {start})")
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out)  # the settings of the latest (re)start; each checkpoint keeps its own
    _trim_log(acc, out / LOG_FILE, start)
    acc.wait_for_everyone()

    if hasattr(objective, "setup"):
        n_total = min(len(train_records), cfg.max_steps * cfg.batch_size)
        needed = (
            sorted(
                {
                    i
                    for s in range(cfg.max_steps)
                    for i in global_batch_indices(len(train_records), s, cfg.batch_size, cfg.seed)
                }
            )
            if n_total < len(train_records)
            else list(range(len(train_records)))
        )
        objective.setup(ctx, model, train_records, needed)

    acc.init_trackers("realjudge", config=_tracker_config(cfg), init_kwargs=_tracker_kwargs(cfg))

    # ---- the loop ----
    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.max_steps,
        initial=start,
        disable=not acc.is_main_process,
        desc=f"{cfg.method}",
        dynamic_ncols=True,
    )
    result = TrainResult(out=out, step=start)
    step = start
    for step in range(start, cfg.max_steps):
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed("step", cfg.seed, step, rank))  # dropout etc.
        indices = shard(
            global_batch_indices(len(train_records), step, cfg.batch_size, cfg.seed), rank, world
        )
        model.train()
        items, prep_metrics = objective.prepare(
            ctx, model, [(i, train_records[i]) for i in indices], step
        )
        t1 = time.perf_counter()
        metrics = run_updates(acc, ctx, model, optimizer, scheduler, objective, items, micro)
        t2 = time.perf_counter()
        metrics.update(prep_metrics)
        metrics["train/tokens"] = float(objective.passes * sum(item_tokens(x) for x in items))
        metrics["time/prepare_s"] = t1 - t0
        metrics["time/update_s"] = t2 - t1
        metrics = mean_over_processes(metrics)
        metrics["lr"] = float(scheduler.get_last_lr()[0])
        metrics["time/step_s"] = time.perf_counter() - t0
        done = step + 1
        result.step, result.last_metrics = done, metrics

        if done % cfg.logging_steps == 0 or done == cfg.max_steps:
            _log(acc, out, metrics, done)
        bar.update(1)
        bar.set_postfix({k: f"{metrics[k]:.4g}" for k in ("loss", "reward/mean") if k in metrics})
        if eval_records and cfg.eval_steps and done % cfg.eval_steps == 0 and done < cfg.max_steps:
            ev = evaluate(ctx, model, eval_records, cfg.resolved_eval_mode, step=done)
            _log(acc, out, {f"eval/{k}": v for k, v in ev.items()}, done)
        if cfg.save_steps and (done % cfg.save_steps == 0 or done == cfg.max_steps):
            save_checkpoint(acc, cfg, done)
        if stop_after is not None and done >= stop_after and done < cfg.max_steps:
            result.interrupted = True
            break
    bar.close()

    if not result.interrupted:
        if eval_records:
            result.final_eval = evaluate(
                ctx, model, eval_records, cfg.resolved_eval_mode, step=result.step
            )
            _log(acc, out, {f"eval/{k}": v for k, v in result.final_eval.items()}, result.step)
        summary = {
            "method": cfg.method,
            "steps": result.step,
            "final_eval": result.final_eval,
            "last_train_metrics": result.last_metrics,
        }
        meta = {
            "method": cfg.method,
            "format": cfg.fmt,
            "rail_normalize": cfg.rail_normalize,
            "scale": list(scale),
            "cue_text": vocab.cue_text,
            "base_model": cfg.model,
            "init_from": cfg.init_from,
            "steps": result.step,
            "final_eval": result.final_eval,
            "config": cfg.to_dict(),
        }
        if cfg.digest_params:
            summary["param_digests"] = param_digests(acc, model)
        if acc.is_main_process:
            (out / METRICS_FILE).write_text(json.dumps(_jsonable(summary), indent=2))
        export(acc, model, tokenizer, cfg, _jsonable(meta))
    acc.end_training()
    _release(acc)
    return result


# ---------------------------------------------------------------------------------------------
# updates
# ---------------------------------------------------------------------------------------------


def run_updates(
    acc: Any,
    ctx: Context,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    objective: Any,
    items: Sequence[Any],
    micro: int,
) -> dict[str, float]:
    """``objective.passes`` passes over ``items``; one optimiser update per mini-batch of
    ``micro * grad_accum`` items. Returns loss metrics of the first pass, averaged, plus
    update statistics."""
    cfg = ctx.cfg
    per_update = micro * cfg.grad_accum
    first_pass: list[dict[str, float]] = []
    grad_norms: list[float] = []
    skipped = 0
    last_losses: list[float] = []
    for p in range(objective.passes):
        for mini in chunks(items, per_update):
            poisoned = False
            for part in chunks(mini, micro):
                with acc.accumulate(model):
                    loss, m = objective.loss(ctx, model, part)
                    if not all_finite(acc, loss):
                        poisoned = True
                        loss = zero_loss(model)
                    acc.backward(loss)
                if p == 0:
                    first_pass.append(m)
                if p == objective.passes - 1:
                    last_losses.append(float(m.get("loss", float("nan"))))
            if not acc.sync_gradients:  # pragma: no cover - guarded by check_sizes
                raise RuntimeError("gradient accumulation out of step with the micro-batches")
            norm = grad_norm(acc, model, cfg.max_grad_norm)
            if norm is not None:
                grad_norms.append(norm)
            if poisoned or (norm is not None and not math.isfinite(norm)):
                skipped += 1
                acc.print(f"skipping an update: non-finite {'loss' if poisoned else 'gradient'}")
            else:
                optimizer.step()
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    metrics = average(first_pass)
    metrics["updates/skipped_nonfinite"] = float(skipped)
    if grad_norms:
        finite = [g for g in grad_norms if math.isfinite(g)]
        metrics["grad_norm"] = sum(finite) / len(finite) if finite else float("nan")
    if objective.passes > 1 and last_losses:
        metrics["loss/last_pass"] = sum(last_losses) / len(last_losses)
    return metrics


def item_tokens(item: Any) -> int:
    """Tokens one training item puts through the forward pass: prompt + target for a
    supervised :class:`~realjudge.train.examples.Example`, the prompt once per rollout plus
    the rollouts for an RL group."""
    rollouts = getattr(item, "rollouts", None)
    if rollouts is not None:
        return sum(len(item.prompt_ids) + len(r.response_ids) for r in rollouts)
    return len(item.prompt_ids) + len(item.response_ids)


def all_finite(acc: Any, loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (all must agree before backward)."""
    flag = torch.tensor(
        [1.0 if bool(torch.isfinite(loss.detach()).all()) else 0.0], device=acc.device
    )
    return bool(acc.gather(flag).min().item() == 1.0)


def zero_loss(model: Any) -> torch.Tensor:
    """A loss with exactly zero gradient that touches every trainable parameter, so that
    collective backward passes (DDP, ZeRO) stay in step when a micro-batch is skipped."""
    return sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)


def grad_norm(acc: Any, model: Any, max_norm: float) -> float | None:
    if max_norm and max_norm > 0:
        norm = acc.clip_grad_norm_(model.parameters(), max_norm)
    else:
        grads = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
        norm = torch.stack(grads).norm() if grads else None
    if norm is None:
        return None
    return float(norm.item() if isinstance(norm, torch.Tensor) else norm)


def average(dicts: Sequence[dict[str, float]]) -> dict[str, float]:
    keys: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in d.items():
            keys.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in keys.items()}


def mean_over_processes(metrics: dict[str, float]) -> dict[str, float]:
    """Average each metric over the processes (every process holds an equal share); counts
    (``*_count``) are summed."""
    from accelerate.utils import gather_object

    every = gather_object([metrics])
    out = average(every)
    for k in out:
        if k.endswith("_count") or k == "updates/skipped_nonfinite":
            out[k] = sum(float(d.get(k, 0.0)) for d in every)
    return out


# ---------------------------------------------------------------------------------------------
# checkpoints, logging, helpers
# ---------------------------------------------------------------------------------------------


def save_checkpoint(acc: Any, cfg: TrainConfig, done: int) -> Path:
    """``out/checkpoints/step-N``: accelerate state (model, optimiser, scheduler, RNG), the
    config, and -- written last, marking the checkpoint complete -- ``trainer_state.json``."""
    root = Path(cfg.out) / CHECKPOINTS
    path = root / f"step-{done:06d}"
    acc.save_state(str(path))
    if acc.is_main_process:
        cfg.save(path)
        (path / STATE_FILE).write_text(json.dumps({"step": done, "method": cfg.method}))
        if cfg.save_total_limit:
            done_dirs = sorted(
                (p for p in root.glob("step-*") if (p / STATE_FILE).is_file()),
                key=lambda p: int(p.name.split("-")[1]),
            )
            for old in done_dirs[: -cfg.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return path


def _resume_point(cfg: TrainConfig, acc: Any) -> Path | None:
    out = Path(cfg.out)
    existing = (
        (out / CHECKPOINTS).is_dir() or (out / META_FILE).is_file() or (out / CONFIG_FILE).is_file()
    )
    if cfg.resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            if existing and not cfg.overwrite:
                raise RunExistsError(
                    f"resume: {out} holds a run but no complete checkpoint to resume from "
                    "(save_steps=0, or killed before the first one); pass overwrite=true to "
                    "start over"
                )
            acc.print(f"resume: no checkpoint in {out}; starting from step 0")
            cfg.resume = False
            return _resume_point(cfg, acc)
        saved = load_saved_config(ckpt).to_dict()
        changed = sorted(
            k for k, v in cfg.to_dict().items() if k not in _RESUMABLE_CHANGES and saved.get(k) != v
        )
        if changed:
            acc.print(f"warning: resuming with changed settings {changed}")
        return ckpt
    if existing and not cfg.overwrite:
        raise RunExistsError(
            f"{out} already holds a training run; pass resume=true to continue it, "
            "overwrite=true to start over, or another out"
        )
    if existing and acc.is_main_process:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        for name in (LOG_FILE, METRICS_FILE, META_FILE, TRACTObjective.CACHE):
            (out / name).unlink(missing_ok=True)
    acc.wait_for_everyone()
    return None


def _reference_fn(ctx: Context, model: Any, ref_model: Any) -> Any:
    """Token log-probs of the starting policy (for the KL penalty), or ``None``."""
    if not getattr(ctx.cfg, "kl_coef", 0.0):
        return None
    if ref_model is not None:
        ref_model.to(ctx.device)

        def from_copy(rows):
            return forward_examples(ctx, ref_model, rows)[1].token_logprobs

        return from_copy
    unwrapped = ctx.accelerator.unwrap_model(model)

    def adapters_off(rows):
        with unwrapped.disable_adapter():
            return forward_examples(ctx, unwrapped, rows)[1].token_logprobs

    return adapters_off


def param_digests(acc: Any, model: Any) -> list[str]:
    """SHA-256 of each process's weights, in process order (collective)."""
    from accelerate.utils import gather_object

    h = hashlib.sha256()
    for name, p in acc.unwrap_model(model).named_parameters():
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return list(gather_object([h.hexdigest()]))


def _check_accumulation(acc: Any, cfg: TrainConfig) -> None:
    if acc.gradient_accumulation_steps != cfg.grad_accum:
        raise ValueError(
            f"the accelerate config sets gradient_accumulation_steps="
            f"{acc.gradient_accumulation_steps} but the run has grad_accum={cfg.grad_accum}; "
            "make them equal"
        )


def _deepspeed_batch_hint(acc: Any, micro: int) -> None:
    """DeepSpeed wants a micro-batch size before ``prepare`` when no dataloader is prepared."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is not None:
        ds = plugin.deepspeed_config
        if not isinstance(ds.get("train_micro_batch_size_per_gpu"), int):
            ds["train_micro_batch_size_per_gpu"] = micro


def _log(acc: Any, out: Path, metrics: dict[str, float], step: int) -> None:
    acc.log(metrics, step=step)
    if acc.is_main_process:
        with (out / LOG_FILE).open("a") as f:
            f.write(json.dumps(_jsonable({"step": step, **metrics})) + "\n")


def _trim_log(acc: Any, path: Path, start: int) -> None:
    """On resume, drop log lines of steps after the checkpoint (they will be redone)."""
    if not acc.is_main_process or not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
    path.write_text("".join(ln + "\n" for ln in keep))


def _tracker_config(cfg: TrainConfig) -> dict[str, Any]:
    """Trackers (TensorBoard hparams) take scalars and strings only."""
    out: dict[str, Any] = {}
    for k, v in cfg.to_dict().items():
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif isinstance(v, list):
            out[k] = ",".join(map(str, v))
        else:
            out[k] = str(v)
    return out


def _tracker_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    name = cfg.run_name or Path(cfg.out).name
    if cfg.report_to == "wandb":
        return {"wandb": {"name": name}}
    return {}


def _jsonable(obj: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _release(acc: Any) -> None:
    """Let a later :func:`train` in the same (single) process build a fresh Accelerator."""
    if acc.num_processes == 1:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
