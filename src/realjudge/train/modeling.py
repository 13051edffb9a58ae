"""The model side of training: starting weights, LoRA, warm starts, and the final export.

A run's output dir is a normal transformers checkpoint once training ends (LoRA merged), plus
the tokenizer and ``realjudge.json`` (method, format, scale, config), so
``realjudge.models.load_model(out)`` and ``realjudge eval --model out`` read it directly.
``init_from`` accepts that dir, a ``checkpoints/step-*`` dir of any run (its adapters are
merged), or a run dir that was interrupted before exporting (its latest checkpoint).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from realjudge.models import JUDGE_META_FILE, load_model, load_tokenizer, pick_device, pick_dtype

log = logging.getLogger(__name__)

META_FILE = JUDGE_META_FILE  # read back by realjudge.models.read_judge_defaults
STATE_FILE = "trainer_state.json"
CHECKPOINTS = "checkpoints"
#: Name prefix of a checkpoint being written (renamed to ``step-N`` once complete).
PARTIAL_PREFIX = ".partial-"
_STEP_DIR = re.compile(r"step-(\d+)")


class InitFromError(ValueError):
    """``init_from`` does not point at anything a model can be built from."""


def _dtype(name: str) -> torch.dtype:
    return pick_dtype(pick_device("cpu"), name)


def load_base(spec: str, dtype: str, seed: int) -> tuple[Any, Any]:
    """Model (on CPU, not yet moved) and tokenizer of ``spec`` (``tiny``/``embedded``/dir/hub)."""
    if spec in ("tiny", "embedded"):
        lm = load_model(spec, device="cpu", dtype=dtype, seed=seed, pack=False)
        return lm.model, lm.tokenizer
    from transformers import AutoModelForCausalLM

    # from_pretrained directly (no .to()): under DeepSpeed ZeRO-3 it partitions while loading.
    model = AutoModelForCausalLM.from_pretrained(spec, dtype=_dtype(dtype))
    return model, load_tokenizer(spec)


def checkpoint_step(path: Path) -> int | None:
    """N of a ``step-N`` checkpoint dir name, else ``None``."""
    m = _STEP_DIR.fullmatch(path.name)
    return int(m.group(1)) if m else None


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run's complete ``checkpoints/step-N`` dirs, oldest first. Complete: renamed into
    place after its state file was written (``.partial-*`` dirs are writes cut short)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [
        p for p in root.iterdir() if checkpoint_step(p) is not None and (p / STATE_FILE).is_file()
    ]
    return sorted(done, key=lambda p: checkpoint_step(p) or 0)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (see :func:`complete_checkpoints`)."""
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def discard_incomplete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Remove what killed checkpoint writes left behind in ``run_dir/checkpoints``: partial
    dirs, and ``step-N`` dirs without their state file (written before checkpoints were
    atomic). Returns what was removed."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    gone = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and (
            p.name.startswith(PARTIAL_PREFIX)
            or (checkpoint_step(p) is not None and not (p / STATE_FILE).is_file())
        )
    ]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def load_start(cfg: Any) -> tuple[Any, Any]:
    """Starting model and tokenizer of a run: ``cfg.model``, or ``cfg.init_from``'s weights."""
    if not cfg.init_from:
        return load_base(cfg.model, cfg.dtype, cfg.seed)
    return load_init_from(cfg.init_from, cfg.dtype, fallback_tokenizer=cfg.model)


def load_init_from(
    path: str | Path, dtype: str, fallback_tokenizer: str = "embedded"
) -> tuple[Any, Any]:
    """Weights of ``path`` as a plain (merged) model, and its tokenizer."""
    path = Path(path)
    if not path.exists():
        raise InitFromError(f"init_from {path} does not exist")
    if (path / "config.json").is_file():
        model, tok = load_base(str(path), dtype, seed=0)
        if not (path / "tokenizer_config.json").is_file():
            tok = load_tokenizer(fallback_tokenizer)
        return model, tok
    ckpt = path if (path / STATE_FILE).is_file() else latest_checkpoint(path)
    if ckpt is None:
        raise InitFromError(
            f"init_from {path}: not a transformers checkpoint (no config.json), not a training "
            "checkpoint (no trainer_state.json) and holds no checkpoints/step-* to resume from"
        )
    return _model_from_checkpoint(ckpt, dtype)


def _model_from_checkpoint(ckpt: Path, dtype: str) -> tuple[Any, Any]:
    """Rebuild the model a run trained (its start + adapters) and load a checkpoint's weights."""
    from realjudge.train.config import load_saved_config

    saved = load_saved_config(ckpt)
    model, tok = load_start(saved)
    if saved.lora:
        model = apply_lora(model, saved)
    state = _read_model_state(ckpt)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied weights are stored once; anything else missing means a wrong checkpoint.
    tied = {k for k in missing if "lm_head" in k or "embed_tokens" in k}
    if unexpected or set(missing) - tied:
        raise InitFromError(
            f"{ckpt}: weights do not fit the model of its run "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    if saved.lora:
        model = model.merge_and_unload()
    model.to(_dtype(dtype))
    return model, tok


def _read_model_state(ckpt: Path) -> dict[str, torch.Tensor]:
    safe = ckpt / "model.safetensors"
    if safe.is_file():
        from safetensors.torch import load_file

        return load_file(str(safe))
    binf = ckpt / "pytorch_model.bin"
    if binf.is_file():
        return torch.load(binf, map_location="cpu", weights_only=True)
    raise InitFromError(
        f"{ckpt} holds no single-file model state (model.safetensors); sharded FSDP/DeepSpeed "
        "checkpoints must be exported first: finish or resume that run, then use its output dir"
    )


def apply_lora(model: Any, cfg: Any) -> Any:
    """Wrap ``model`` with fresh LoRA adapters (initialised from ``cfg.seed``)."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules
    target: Any = "all-linear" if list(targets) == ["all-linear"] else list(targets)
    torch.manual_seed(cfg.seed)
    lcfg = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lcfg)


def decoder_layers(model: Any) -> Any:
    """The list of transformer blocks of a causal LM (``model.model.layers`` for Llama-style
    models, found through ``get_decoder()``)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    return layers


def freeze_lower_layers(model: Any, n: int) -> int:
    """Freeze the input embeddings and the first ``n`` decoder layers; return the number of
    parameters left trainable. With tied input/output embeddings the LM head is frozen too."""
    layers = decoder_layers(model)
    if n > len(layers):
        raise ValueError(f"freeze_layers={n} but the model has {len(layers)} layers")
    model.get_input_embeddings().requires_grad_(False)
    for layer in layers[:n]:
        layer.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def prepare_for_training(model: Any, cfg: Any) -> Any:
    """Partial freezing or LoRA (if asked), gradient checkpointing, dropout off (if asked),
    train mode."""
    if cfg.freeze_layers:
        if cfg.lora:
            raise ValueError("freeze_layers and lora are alternatives: set one of them")
        freeze_lower_layers(model, cfg.freeze_layers)
    if cfg.gradient_checkpointing:
        # (the training forward passes use_cache=False itself; generation keeps its KV cache)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora:
        model = apply_lora(model, cfg)
    if getattr(cfg, "disable_dropout", False):  # the RL methods' knob (RolloutConfig)
        # every nn.Dropout's p = 0, LoRA's included (what TRL's disable_dropout_in_model does;
        # not imported from it: the GPU check runs where TRL is not installed)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    model.train()
    return model


def is_peft(model: Any) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def export(accelerator: Any, model: Any, tokenizer: Any, cfg: Any, meta: dict[str, Any]) -> Path:
    """Write the final model to ``cfg.out`` as a transformers checkpoint (LoRA merged).

    Collective: every process must call it (sharded states are gathered on the main one).
    Destroys LoRA wrapping of ``model``: call it last.
    """
    out = Path(cfg.out)
    sharded = accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")
    state = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if is_peft(unwrapped):
            if sharded:  # the live modules hold shards: rebuild on CPU, load, merge
                base, _ = load_start(cfg)
                unwrapped = apply_lora(base, cfg)
                unwrapped.load_state_dict(state, strict=False)
                state = None
            merged = unwrapped.merge_and_unload()
            merged.save_pretrained(out, state_dict=state, safe_serialization=True)
        else:
            unwrapped.save_pretrained(out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out)
        (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    accelerator.wait_for_everyone()
    return out
