"""What ``accelerate launch --config_file A -m realjudge.train --config C`` would run, checked
before any process starts (``realjudge check-launch``).

``accelerate launch`` turns the accelerate config into environment variables
(``ACCELERATE_MIXED_PRECISION``, ``ACCELERATE_GRADIENT_ACCUMULATION_STEPS``,
``ACCELERATE_USE_DEEPSPEED``, ``FSDP_*``, ...) that ``Accelerator`` reads in every process, some
of them over the values the training code passes. This module runs accelerate's own launcher
code for that step (its argument parser, ``_validate_launch_command`` and the
``prepare_*_env`` function of the chosen launcher), builds accelerate's ``DeepSpeedPlugin``
from the exported environment the way each process would, and compares the result with the
run's :class:`~realjudge.train.config.TrainConfig`. Nothing is launched, no model is loaded and
DeepSpeed itself need not be installed (the plugin is accelerate's; the engine is never built).

One source of truth: the run config decides gradient accumulation (``grad_accum``) and gradient
clipping (``max_grad_norm``). The accelerate configs in ``configs/accelerate/`` leave both out,
so DeepSpeed's config holds ``"auto"`` and the trainer fills it from the run config before
``prepare`` (:func:`realjudge.train.trainer.deepspeed_mismatches`). An accelerate config (or
environment) that sets either to another value is a conflict.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shlex
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from realjudge.train.config import TrainConfig

#: The variable through which ``accelerate launch`` passes gradient accumulation.
GAS_ENV = "ACCELERATE_GRADIENT_ACCUMULATION_STEPS"


@dataclass(frozen=True)
class Conflict:
    """A setting that differs between the launch and the run config (or that makes the run
    fail at start-up). ``launch_key``/``run_key`` name the two sides."""

    launch_key: str
    launch_value: Any
    run_key: str
    run_value: Any
    why: str = ""

    def __str__(self) -> str:
        text = (
            f"{self.launch_key}={self.launch_value!r} (launch) vs "
            f"{self.run_key}={self.run_value!r} (run config)"
        )
        return f"{text}: {self.why}" if self.why else text


@dataclass
class LaunchPlan:
    """The resolved launch: the settings every process would start with, and the conflicts."""

    accelerate_config: str
    distributed_type: str
    num_processes: int
    num_machines: int
    mixed_precision: str
    grad_accum: int | str
    gradient_clipping: float | str
    batch_size: int
    mini_batch_size: int
    micro_batch_size: int | None
    deepspeed: dict[str, Any] = field(default_factory=dict)
    fsdp: dict[str, str] = field(default_factory=dict)
    exported_env: dict[str, str] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.conflicts

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["conflicts"] = [str(c) for c in self.conflicts]
        out["ok"] = self.ok
        return out

    def summary(self) -> str:
        """Human-readable lines: the key settings, then the conflicts (or ``ok``)."""
        world = self.num_processes
        rows = [
            ("accelerate config", self.accelerate_config),
            ("distributed type", self.distributed_type),
            ("processes", f"{world} over {self.num_machines} machine(s)"),
            ("mixed precision", self.mixed_precision),
            ("grad accumulation", str(self.grad_accum)),
            ("gradient clipping", str(self.gradient_clipping)),
        ]
        if self.deepspeed:
            rows.append(("deepspeed", ", ".join(f"{k}={v}" for k, v in self.deepspeed.items())))
        if self.fsdp:
            rows.append(("fsdp", ", ".join(f"{k}={v}" for k, v in self.fsdp.items())))
        micro = "-" if self.micro_batch_size is None else self.micro_batch_size
        rows.append(
            (
                "batch (prompts)",
                f"global {self.batch_size} per step, mini-batch {self.mini_batch_size} per "
                f"update, micro-batch {micro} per process x {self.grad_accum} accumulation "
                f"x {world} processes",
            )
        )
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"note: {n}" for n in self.notes]
        if self.conflicts:
            lines += [f"CONFLICT: {c}" for c in self.conflicts]
        else:
            lines.append("ok: the run starts with these settings")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# accelerate's side
# ---------------------------------------------------------------------------------------------


@dataclass
class AccelerateLaunch:
    """What ``accelerate launch`` resolved from its config file and flags."""

    args: Any  # accelerate's argparse namespace, after its validation
    distributed_type: str
    mixed_precision_from_config: bool
    env: dict[str, str]  # the environment each process gets
    exported: dict[str, str]  # the part of ``env`` that differs from this process's


def accelerate_launch_env(
    config_file: str | Path, launch_args: list[str] | None = None
) -> AccelerateLaunch:
    """Run accelerate's own resolution of ``accelerate launch --config_file config_file
    *launch_args -m realjudge.train``: its parser, ``_validate_launch_command`` and the
    environment builder of the launcher ``launch_command`` would pick. Raises what accelerate
    raises for an invalid config (``ValueError``, ``FileNotFoundError``, ...)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_multi_gpu_env,
        prepare_simple_launcher_cmd_env,
    )

    if not Path(config_file).is_file():
        raise FileNotFoundError(f"accelerate config {config_file} not found")
    parser = launch_command_parser()
    argv = ["--config_file", str(config_file), *(launch_args or []), "-m", "realjudge.train"]
    with contextlib.redirect_stderr(io.StringIO()):  # argparse errors -> SystemExit below
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            raise ValueError(f"accelerate launch does not accept {shlex.join(argv)}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # defaults used, port in use, ...
        args, defaults, mp_from_config = _validate_launch_command(args)
        # the dispatch of accelerate.commands.launch.launch_command
        if args.use_deepspeed and not args.cpu:
            kind = "DEEPSPEED"
            fields = list(defaults.deepspeed_config.keys()) if defaults else []
            if mp_from_config:
                fields.append("mixed_precision")
            args.deepspeed_fields_from_accelerate_config = ",".join(fields)
            _, env = prepare_deepspeed_cmd_env(args)
        elif (args.use_fsdp or args.use_megatron_lm or args.multi_gpu) and not args.cpu:
            kind = (
                "FSDP" if args.use_fsdp else "MEGATRON_LM" if args.use_megatron_lm else "MULTI_GPU"
            )
            env = prepare_multi_gpu_env(args)
        elif args.tpu and not args.cpu:
            raise ValueError("TPU launches are not supported by realjudge")
        else:
            if (args.num_processes or 1) > 1 and not getattr(args, "mpirun_hostfile", None):
                # accelerate's simple launcher starts ONE process unless mpirun runs it
                # (--mpirun_hostfile): --cpu --num_processes N alone is one process
                args.num_processes = 1
            kind = "NO" if (args.num_processes or 1) == 1 else "MULTI_CPU"
            _, env = prepare_simple_launcher_cmd_env(args)
    exported = {k: v for k, v in env.items() if os.environ.get(k) != v}
    return AccelerateLaunch(args, kind, bool(mp_from_config), dict(env), exported)


def deepspeed_plugin(env: dict[str, str], mixed_precision: str | None = None) -> Any:
    """accelerate's ``DeepSpeedPlugin`` as a process started with ``env`` builds it (its
    ``deepspeed_config`` still holds ``"auto"`` entries that ``prepare`` fills), for the
    Accelerator's ``mixed_precision`` (default: the launcher's). Needs no DeepSpeed install:
    the plugin is accelerate's own."""
    from accelerate.utils import DeepSpeedPlugin, patch_environment

    keep = {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}
    with patch_environment(**keep):
        plugin = DeepSpeedPlugin()
        plugin.set_mixed_precision(mixed_precision or env.get("ACCELERATE_MIXED_PRECISION", "no"))
    return plugin


# ---------------------------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------------------------


def resolve_launch(
    cfg: TrainConfig, accelerate_config: str | Path, launch_args: list[str] | None = None
) -> LaunchPlan:
    """Resolve the launch of ``cfg`` with ``accelerate_config`` (plus ``launch_args``, extra
    ``accelerate launch`` flags) and list every conflict that would stop or silently change the
    run. An accelerate config that accelerate's launcher rejects becomes a conflict; a missing
    file raises ``FileNotFoundError``."""
    from realjudge.train.trainer import check_sizes

    mini = getattr(cfg, "mini_batch_size", None) or cfg.batch_size
    plan = LaunchPlan(
        accelerate_config=str(accelerate_config),
        distributed_type="?",
        num_processes=1,
        num_machines=1,
        mixed_precision=cfg.mixed_precision,
        grad_accum=cfg.grad_accum,
        gradient_clipping=cfg.max_grad_norm,
        batch_size=cfg.batch_size,
        mini_batch_size=mini,
        micro_batch_size=None,
    )
    try:
        launch = accelerate_launch_env(accelerate_config, launch_args)
    except (ValueError, AssertionError, RuntimeError, ImportError) as e:
        plan.conflicts.append(
            Conflict("accelerate config", str(accelerate_config), "-", "-", str(e))
        )
        return plan
    args, env = launch.args, launch.env
    world = int(args.num_processes or 1)
    plan.distributed_type = launch.distributed_type
    plan.num_processes, plan.num_machines = world, int(args.num_machines or 1)
    plan.exported_env = launch.exported

    # -- batch sizes (what check_sizes raises at start-up) --
    try:
        plan.micro_batch_size = check_sizes(cfg, world)
    except ValueError as e:
        plan.conflicts.append(
            Conflict(
                "num_processes",
                world,
                "batch_size/mini_batch_size/grad_accum",
                f"{cfg.batch_size}/{mini}/{cfg.grad_accum}",
                str(e),
            )
        )

    # -- mixed precision: Accelerator takes the run config's unless it is 'auto' --
    launched_mp = env.get("ACCELERATE_MIXED_PRECISION", "no")
    plan.mixed_precision = launched_mp if cfg.mixed_precision == "auto" else cfg.mixed_precision
    if (
        cfg.mixed_precision != "auto"
        and launch.mixed_precision_from_config
        and cfg.mixed_precision != launched_mp
    ):
        plan.conflicts.append(
            Conflict(
                "mixed_precision",
                launched_mp,
                "mixed_precision",
                cfg.mixed_precision,
                "set one of them (mixed_precision=auto takes the accelerate config's)",
            )
        )

    # -- gradient accumulation as the Accelerator reads it (the environment wins) --
    gas_env = env.get(GAS_ENV)
    if gas_env is not None:
        try:
            gas: int | str = int(gas_env)
        except ValueError:
            gas = gas_env
        plan.grad_accum = gas
        if gas != cfg.grad_accum:
            plan.conflicts.append(
                Conflict(
                    f"gradient_accumulation_steps (accelerate config -> {GAS_ENV})",
                    gas_env,
                    "grad_accum",
                    cfg.grad_accum,
                    "Accelerator takes the launcher's value over the run's; leave "
                    "gradient_accumulation_steps out of the accelerate config",
                )
            )

    if launch.distributed_type == "DEEPSPEED":
        _check_deepspeed(plan, cfg, env, world)
    elif launch.distributed_type == "FSDP":
        _check_fsdp(plan, cfg, env)
    if not _has_module("deepspeed") and launch.distributed_type == "DEEPSPEED":
        plan.notes.append("deepspeed is not installed here; the launch machine needs it")
    return plan


def _check_deepspeed(plan: LaunchPlan, cfg: TrainConfig, env: dict[str, str], world: int) -> None:
    from realjudge.train.trainer import deepspeed_mismatches
    from realjudge.train.trainer import deepspeed_run_values as run_values

    try:
        ds = deepspeed_plugin(env, plan.mixed_precision).deepspeed_config
    except ValueError as e:  # e.g. a DeepSpeed config file plus accelerate-config DS fields
        mp = "mixed_precision" in str(e)
        plan.conflicts.append(
            Conflict(
                "deepspeed_config",
                "-",
                "mixed_precision" if mp else "-",
                plan.mixed_precision if mp else "-",
                str(e),
            )
        )
        return
    zero = ds.get("zero_optimization", {})
    offload_opt = (zero.get("offload_optimizer") or {}).get("device", "none")
    plan.deepspeed = {
        "zero_stage": zero.get("stage"),
        "offload_optimizer": offload_opt,
        "offload_param": (zero.get("offload_param") or {}).get("device", "none"),
        "zero3_init": env.get("ACCELERATE_DEEPSPEED_ZERO3_INIT", "-"),
    }
    micro = plan.micro_batch_size or 1
    for key, (want, _) in run_values(cfg, micro, world).items():
        have = ds.get(key, "auto")
        plan.deepspeed[key] = f"auto->{want}" if have in (None, "auto") else have
    clip_env = env.get("ACCELERATE_GRADIENT_CLIPPING")
    if clip_env not in (None, "auto") and not _same_number(clip_env, cfg.max_grad_norm):
        plan.conflicts.append(
            Conflict(
                "gradient_clipping (accelerate config -> ACCELERATE_GRADIENT_CLIPPING)",
                clip_env,
                "max_grad_norm",
                cfg.max_grad_norm,
                "DeepSpeed clips by itself with its own value; leave gradient_clipping out of "
                "the accelerate config",
            )
        )
    for key, have, run_key, run_value in deepspeed_mismatches(ds, cfg, micro, world):
        if any(c.run_key == run_key for c in plan.conflicts):
            continue  # already named through the launcher's environment
        plan.conflicts.append(
            Conflict(
                f"deepspeed_config.{key}",
                have,
                run_key,
                run_value,
                "the run config decides it; leave it out of the accelerate config (or 'auto' "
                "in a DeepSpeed config file)",
            )
        )
    clip = ds.get("gradient_clipping", "auto")
    plan.gradient_clipping = cfg.max_grad_norm if clip in (None, "auto") else clip
    if offload_opt not in (None, "none") and ds.get("zero_force_ds_cpu_optimizer", True):
        plan.conflicts.append(
            Conflict(
                "deepspeed_config.offload_optimizer_device",
                offload_opt,
                "optimizer",
                "torch.optim.AdamW",
                "DeepSpeed refuses a client optimizer with ZeRO-Offload unless "
                "zero_force_ds_cpu_optimizer is false (set it in a DeepSpeed config file)",
            )
        )


def _check_fsdp(plan: LaunchPlan, cfg: TrainConfig, env: dict[str, str]) -> None:
    keys = {
        "FSDP_VERSION": "version",
        "FSDP_SHARDING_STRATEGY": "sharding_strategy",
        "FSDP_RESHARD_AFTER_FORWARD": "reshard_after_forward",
        "FSDP_OFFLOAD_PARAMS": "offload_params",
        "FSDP_AUTO_WRAP_POLICY": "auto_wrap_policy",
        "FSDP_STATE_DICT_TYPE": "state_dict_type",
        "FSDP_USE_ORIG_PARAMS": "use_orig_params",
        "FSDP_SYNC_MODULE_STATES": "sync_module_states",
        "FSDP_CPU_RAM_EFFICIENT_LOADING": "cpu_ram_efficient_loading",
        "FSDP_ACTIVATION_CHECKPOINTING": "activation_checkpointing",
    }
    plan.fsdp = {name: env[k] for k, name in keys.items() if k in env}
    partial = cfg.lora or cfg.freeze_layers
    if (
        partial
        and env.get("FSDP_VERSION", "1") == "1"
        and env.get("FSDP_USE_ORIG_PARAMS", "true").lower() != "true"
    ):
        run_key = "lora" if cfg.lora else "freeze_layers"
        plan.conflicts.append(
            Conflict(
                "fsdp_config.fsdp_use_orig_params",
                "false",
                run_key,
                getattr(cfg, run_key),
                "FSDP1 flattens frozen and trainable weights together only with "
                "use_orig_params true",
            )
        )
    if cfg.gradient_checkpointing and env.get("FSDP_ACTIVATION_CHECKPOINTING") == "true":
        plan.notes.append(
            "both fsdp_activation_checkpointing and gradient_checkpointing are on; one is enough"
        )


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _same_number(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b))
    except (TypeError, ValueError):
        return False
