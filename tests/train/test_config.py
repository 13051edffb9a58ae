"""Config classes, presets, file loading, overrides and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realjudge.train.config import (
    CONFIG_CLASSES,
    METHODS,
    PRESETS,
    ConfigError,
    GRPOConfig,
    REALConfig,
    TRACTConfig,
    build_config,
    load_saved_config,
    parse_overrides,
)

REPO = Path(__file__).resolve().parents[2]


def test_one_class_per_method_with_its_own_fields():
    assert set(CONFIG_CLASSES) == set(METHODS)
    for method, cls in CONFIG_CLASSES.items():
        cfg = cls()
        assert cfg.method == method
        assert cls.__doc__  # documented
    assert "beta" in REALConfig.field_names() and "beta" not in GRPOConfig.field_names()
    assert "tract_stage" in TRACTConfig.field_names()
    assert "advantage" in GRPOConfig.field_names()


def test_real_defaults_are_the_authors():
    cfg = REALConfig()
    assert (cfg.temperature, cfg.top_p, cfg.baseline, cfg.normalize_std) == (1.0, 0.9, "loo", True)
    assert (cfg.adv_clip, cfg.lambda_p, cfg.beta, cfg.kl_coef, cfg.entropy_coef) == (
        1.0,
        1.0,
        0.0,
        0.0,
        0.0,
    )
    assert cfg.ppo_epochs == 3 and cfg.clip_eps is None and cfg.pg_agg == "token-mean"
    assert cfg.std_eps == 1e-4  # ours, not theirs: see the field's documentation
    with pytest.raises(ConfigError, match="std_eps"):
        REALConfig(std_eps=0.0)


def test_layers_defaults_preset_file_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: real\npreset: authors\nnum_generations: 8\nbeta: 0.01\n")
    cfg = build_config(file=f, overrides={"beta": "0.02", "lora": "true", "clip_eps": "null"})
    assert cfg.method == "real"
    assert cfg.batch_size == 256 and cfg.mini_batch_size == 32  # preset
    assert cfg.num_generations == 8  # file over preset (authors: 16)
    assert cfg.beta == 0.02 and cfg.lora is True and cfg.clip_eps is None  # overrides
    assert cfg.rail_normalize is False and cfg.fmt == "overall"  # authors' variant


def test_unquoted_mixed_precision_no_in_yaml_means_no(tmp_path):
    # YAML 1.1 reads `no` as false; accelerate's own yaml quotes it, users often do not
    f = tmp_path / "c.yaml"
    f.write_text("method: sft\nmixed_precision: no\n")
    assert build_config(file=f).mixed_precision == "no"
    f.write_text("method: sft\nmixed_precision: true\n")
    with pytest.raises(ConfigError, match="mixed_precision"):
        build_config(file=f)


def test_json_file_and_cli_style_overrides(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(
        json.dumps({"method": "sft", "learning_rate": 1e-4, "lora_target_modules": ["q_proj"]})
    )
    over = parse_overrides(["max_steps=7", "lora_target_modules=[q_proj,v_proj]", "init-from=x"])
    cfg = build_config(file=f, overrides=over)
    assert cfg.learning_rate == 1e-4 and cfg.max_steps == 7 and cfg.init_from == "x"
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    "source",
    ["file", "override"],
)
def test_unknown_key_is_an_error_with_a_hint(tmp_path, source):
    if source == "file":
        f = tmp_path / "c.yaml"
        f.write_text("method: real\nlearning_rat: 1e-5\n")
        with pytest.raises(ConfigError, match="learning_rat.*did you mean 'learning_rate'"):
            build_config(file=f)
    else:
        with pytest.raises(ConfigError, match="unknown config key 'beta'.*real"):
            build_config("sft", overrides={"beta": 0.1})  # a REAL key in an SFT config


def test_bad_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="max_steps"):
        build_config("sft", overrides={"max_steps": "many"})
    with pytest.raises(ConfigError, match="baseline"):
        build_config("real", overrides={"baseline": "median"})
    with pytest.raises(ConfigError, match="report_to"):
        build_config("raft", overrides={"report_to": "mlflow"})
    with pytest.raises(ConfigError, match="mini_batch_size"):
        build_config("real", overrides={"batch_size": 8, "mini_batch_size": 3})
    with pytest.raises(ConfigError, match="unknown method"):
        build_config("dpo")
    with pytest.raises(ConfigError, match="no method"):
        build_config()
    f = tmp_path / "c.yaml"
    f.write_text("method: raft\n")
    with pytest.raises(ConfigError, match="for method 'raft'"):
        build_config("real", file=f)
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config("real", file=f)


def test_every_preset_builds_for_every_method():
    for preset in PRESETS:
        for method in METHODS:
            cfg = build_config(method, preset=preset)
            assert cfg.method == method


def test_saved_config_round_trips(tmp_path):
    cfg = build_config("grpo", preset="cpu-embedded", overrides={"advantage": "rloo", "seed": 3})
    path = cfg.save(tmp_path)
    assert path.name == "train_config.yaml"
    assert load_saved_config(tmp_path) == cfg


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs" / "methods").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_method_configs_load(path):
    cfg = build_config(file=path)
    assert cfg.method in METHODS


def test_shipped_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    files = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
    names = {p.stem for p in files}
    assert {
        "single_gpu",
        "multi_gpu_ddp",
        "fsdp",
        "deepspeed_zero2",
        "deepspeed_zero3",
        "multi_node",
    } <= names
    for f in files:
        assert load_config_from_file(str(f)).num_processes >= 1


def test_raft_lambda_p_defaults_to_raft_as_published():
    assert build_config("raft").raft_lambda_p == 0.0
    assert build_config("raft", overrides={"raft_lambda_p": 0.5}).raft_lambda_p == 0.5
    with pytest.raises(ConfigError, match="raft_lambda_p must be >= 0"):
        build_config("raft", overrides={"raft_lambda_p": -1})
    with pytest.raises(ConfigError, match="raft_lambda_p"):
        build_config("tract", overrides={"raft_lambda_p": 0.5})  # RAFT's knob only


def test_rl_methods_run_without_dropout_supervised_ones_keep_lora_dropout():
    """The RL update passes must score the policy that sampled (eval mode, no dropout): with
    ``disable_dropout`` (the RL default) every dropout layer, LoRA's included, has p = 0."""
    import torch

    from realjudge.train.trainer import build_model

    def dropout_ps(method: str, **over: object) -> set[float]:
        cfg = build_config(method, overrides={"model": "tiny", "lora": True, **over})
        model, _ = build_model(cfg)
        return {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}

    assert dropout_ps("sft") == {0.05}  # lora_dropout, as configured
    assert dropout_ps("real") == {0}
    assert dropout_ps("grpo") == {0}
    assert dropout_ps("real", disable_dropout=False) == {0.05}
    assert build_config("real").disable_dropout is True
