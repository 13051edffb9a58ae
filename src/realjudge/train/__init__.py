"""Training: SFT, RAFT, TRACT, GRPO and REAL on HF accelerate.

:mod:`~realjudge.train.config` (one config dataclass per method, presets, file loading),
:mod:`~realjudge.train.trainer` (the loop), :mod:`~realjudge.train.supervised` and
:mod:`~realjudge.train.rl` (the objectives, built on :mod:`realjudge.methods`),
:mod:`~realjudge.train.modeling` (LoRA, warm starts, export), :mod:`~realjudge.train.entry`
(the command line). Importing this package is cheap; the heavy parts load on use.
"""

from realjudge.train.config import (
    CONFIG_CLASSES,
    PRESETS,
    ConfigError,
    GRPOConfig,
    RAFTConfig,
    REALConfig,
    SFTConfig,
    TRACTConfig,
    TrainConfig,
    build_config,
)


def train(cfg, **kwargs):
    """Run :func:`realjudge.train.trainer.train` (imported lazily)."""
    from realjudge.train.trainer import train as _train

    return _train(cfg, **kwargs)


__all__ = [
    "CONFIG_CLASSES",
    "PRESETS",
    "ConfigError",
    "GRPOConfig",
    "RAFTConfig",
    "REALConfig",
    "SFTConfig",
    "TRACTConfig",
    "TrainConfig",
    "build_config",
    "train",
]
