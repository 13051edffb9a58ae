"""``realjudge check-launch``: every launch the docs and configs name starts; a conflicting
pair fails and names its keys; the trainer fills DeepSpeed's accumulation and clipping from the
run config. No GPU and no DeepSpeed install needed."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from realjudge.cli import main as cli
from realjudge.train.config import build_config
from realjudge.train.launch import accelerate_launch_env, deepspeed_plugin, resolve_launch
from realjudge.train.trainer import _deepspeed_batch_hint, check_sizes

ROOT = Path(__file__).resolve().parents[2]
ACC = ROOT / "configs" / "accelerate"
QWEN_REAL = "configs/methods/real-qwen3-32b.yaml"


# ---------------------------------------------------------------------------------------------
# finding the documented launches
# ---------------------------------------------------------------------------------------------


def _documented_files() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "configs").rglob("*.yaml")),
    ]


def _logical_lines(path: Path) -> list[str]:
    """Lines of a file with backslash continuations joined; YAML files contribute their
    comments (where the launch commands are written)."""
    raw = path.read_text().splitlines()
    if path.suffix == ".yaml":
        raw = [ln.split("#", 1)[1] for ln in raw if "#" in ln]
    out: list[str] = []
    buf = ""
    for ln in raw:
        stripped = ln.rstrip()
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        out.append(buf + ln)
        buf = ""
    if buf:
        out.append(buf)
    return out


def parse_launch(line: str) -> tuple[str, list[str], list[str]] | None:
    """``accelerate launch [flags] --config_file A [flags] -m realjudge.train ARGS`` in a line
    -> ``(A, other launch flags, ARGS)``; ``None`` if the line has no such command."""
    m = re.search(r"accelerate launch ([^`\"'\n]*)", line)
    if not m:
        return None
    tokens = shlex.split(m.group(1))
    for module in (["-m", "realjudge.train"], ["-m", "realjudge", "train"]):
        n = len(module)
        at = next((i for i in range(len(tokens)) if tokens[i : i + n] == module), None)
        if at is not None:
            launch, train = tokens[:at], tokens[at + n :]
            break
    else:
        return None
    if "--config_file" not in launch:
        return None
    i = launch.index("--config_file")
    return launch[i + 1], launch[:i] + launch[i + 2 :], train


def documented_launches() -> list[tuple[str, str, list[str], list[str]]]:
    """Every concrete ``accelerate launch --config_file A ... -m realjudge.train --config C``
    in README.md, docs/*.md and configs/ (placeholders like ``--config ...`` skipped):
    ``(where, A, launch flags, train args)``."""
    found = []
    for path in _documented_files():
        for line in _logical_lines(path):
            parsed = parse_launch(line)
            if parsed is None:
                continue
            acc, flags, train = parsed
            if "--config" not in train or "..." in train:
                continue
            found.append((str(path.relative_to(ROOT)), acc, flags, train))
    return found


def documented_reproduce_launchers() -> list[tuple[str, str, str]]:
    """``realjudge reproduce --preset P ... --launcher "accelerate launch --config_file A"``
    in the docs: ``(where, P, A)`` (each of P's training runs is launched with A)."""
    found = []
    for path in _documented_files():
        for line in _logical_lines(path):
            if "realjudge reproduce" not in line or "--launcher" not in line:
                continue
            tokens = shlex.split(line)
            preset = tokens[tokens.index("--preset") + 1]
            launcher = shlex.split(tokens[tokens.index("--launcher") + 1])
            acc = launcher[launcher.index("--config_file") + 1]
            found.append((str(path.relative_to(ROOT)), preset, acc))
    return found


DOCUMENTED = documented_launches()


def test_the_parser_finds_every_method_config_the_docs_launch():
    """Cross-check of the parser: every method config named after ``--config`` next to an
    ``accelerate launch`` in those files is in a parsed pair, multi-line commands included."""
    named = set()
    for path in _documented_files():
        command = r"accelerate launch(?:[^\n]|\\\n)*?--config\s+(configs/methods/\S+?\.yaml)"
        named |= set(re.findall(command, path.read_text()))
    parsed = {train[train.index("--config") + 1] for _, _, _, train in DOCUMENTED}
    assert named and named <= parsed
    assert any(where == "README.md" for where, *_ in DOCUMENTED)
    assert len({acc for _, acc, _, _ in DOCUMENTED}) >= 2


def test_parse_launch_joins_continuations_and_keeps_flags(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "    accelerate launch --config_file a.yaml --machine_rank 1 \\\n"
        "        -m realjudge.train --config c.yaml lora=true\n"
    )
    (line,) = _logical_lines(doc)
    assert parse_launch(line) == (
        "a.yaml",
        ["--machine_rank", "1"],
        ["--config", "c.yaml", "lora=true"],
    )
    assert parse_launch("`accelerate launch --multi_gpu -m realjudge.train ... device=cpu`") is None


@pytest.mark.parametrize(
    "where,acc,flags,train", DOCUMENTED, ids=[f"{w}:{Path(t[1]).stem}" for w, _, _, t in DOCUMENTED]
)
def test_every_documented_launch_passes_check_launch(where, acc, flags, train, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rc = cli(
        ["check-launch", "--accelerate-config", acc, "--launch-args", shlex.join(flags), *train]
    )
    out = capsys.readouterr().out
    assert rc == 0, f"{where}: {out}"
    assert "ok: the run starts" in out and "CONFLICT" not in out


def documented_checks() -> list[tuple[str, list[str]]]:
    """The ``realjudge check-launch ...`` commands the docs show: ``(where, arguments)``."""
    found = []
    for path in _documented_files():
        for line in _logical_lines(path):
            m = re.search(r"realjudge check-launch ([^`\"'\n]*)", line)
            if m and "..." not in m.group(1):
                found.append((str(path.relative_to(ROOT)), shlex.split(m.group(1))))
    return found


def test_the_check_launch_commands_the_docs_show_pass(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    shown = documented_checks()
    assert shown
    for where, argv in shown:
        assert cli(["check-launch", *argv]) == 0, f"{where}: {capsys.readouterr().out}"
        assert "ok: the run starts" in capsys.readouterr().out


@pytest.mark.parametrize("where,preset,acc", documented_reproduce_launchers())
def test_documented_reproduce_launcher_passes_for_every_run(where, preset, acc, tmp_path):
    from realjudge.reproduce.presets import get_preset
    from realjudge.reproduce.runner import train_overrides

    exp = get_preset(preset)
    runs = [r for r in exp.runs if r.method]
    assert runs
    for run in runs:
        over = train_overrides(exp, run, 0, tmp_path / run.name, None, tmp_path)
        cfg = build_config(run.method, preset=exp.train_preset, overrides=over)
        plan = resolve_launch(cfg, ROOT / acc)
        assert plan.ok, f"{where}: {preset} {run.name}: {plan.summary()}"


# ---------------------------------------------------------------------------------------------
# conflicts are named
# ---------------------------------------------------------------------------------------------


def _yaml_with(tmp_path: Path, base: str, name: str = "acc.yaml", **changes) -> Path:
    """A copy of ``configs/accelerate/<base>`` with top-level or ``deepspeed_config``/
    ``fsdp_config`` keys changed (``deepspeed_config={...}`` merges)."""
    data = yaml.safe_load((ACC / base).read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _check(capsys, acc: Path, *train: str) -> tuple[int, str]:
    rc = cli(
        ["check-launch", "--accelerate-config", str(acc), "--config", str(ROOT / QWEN_REAL), *train]
    )
    return rc, capsys.readouterr().out


def test_the_old_zero3_yaml_fails_naming_accumulation_with_both_values(tmp_path, capsys):
    """The yaml as it was (gradient_accumulation_steps: 1) against a recipe with
    grad_accum: 4 -- the start-up failure of the README's ZeRO-3 command."""
    acc = _yaml_with(
        tmp_path, "deepspeed_zero3.yaml", deepspeed_config={"gradient_accumulation_steps": 1}
    )
    rc, out = _check(capsys, acc)
    assert rc == 1
    (line,) = [ln for ln in out.splitlines() if ln.startswith("CONFLICT") and "grad_accum" in ln]
    assert "gradient_accumulation_steps" in line and "'1'" in line and "grad_accum=4" in line


def test_gradient_accumulation_auto_in_an_accelerate_yaml_is_a_conflict(tmp_path):
    """'auto' in the yaml is exported as is and Accelerator cannot read it as a number."""
    acc = _yaml_with(
        tmp_path, "deepspeed_zero2.yaml", deepspeed_config={"gradient_accumulation_steps": "auto"}
    )
    plan = resolve_launch(build_config(file=ROOT / QWEN_REAL), acc)
    assert [c.run_key for c in plan.conflicts] == ["grad_accum"]


def test_clipping_in_the_yaml_must_equal_max_grad_norm(tmp_path, capsys):
    acc = _yaml_with(tmp_path, "deepspeed_zero3.yaml", deepspeed_config={"gradient_clipping": 1.0})
    assert _check(capsys, acc)[0] == 0  # the same value is no conflict
    rc, out = _check(capsys, acc, "max_grad_norm=0.5")
    assert rc == 1
    assert re.search(r"CONFLICT: gradient_clipping.*'1.0'.*max_grad_norm=0.5", out)


def test_mixed_precision_of_yaml_and_run_config(tmp_path, capsys):
    acc = ACC / "multi_gpu_ddp.yaml"
    rc, out = _check(capsys, acc, "mixed_precision=fp16")
    assert rc == 1 and re.search(r"CONFLICT: mixed_precision='bf16'.*mixed_precision='fp16'", out)
    assert _check(capsys, acc, "mixed_precision=bf16")[0] == 0
    plan = resolve_launch(build_config(file=ROOT / QWEN_REAL), acc)
    assert plan.mixed_precision == "bf16"  # 'auto' takes the accelerate config's
    no_mp = _yaml_with(tmp_path, "multi_gpu_ddp.yaml", mixed_precision=None)
    assert _check(capsys, no_mp, "mixed_precision=fp16")[0] == 0  # the yaml does not set it


def test_batch_sizes_must_split_over_the_processes(capsys):
    """16 processes x grad_accum 4 does not divide REAL's 32-prompt mini-batch: the reason
    check_sizes gives is printed with num_processes."""
    rc, out = _check(capsys, ACC / "multi_node.yaml")
    assert rc == 1
    with pytest.raises(ValueError) as e:
        check_sizes(build_config(file=ROOT / QWEN_REAL), 16)
    assert "CONFLICT: num_processes=16 (launch) vs batch_size/mini_batch_size/grad_accum" in out
    assert str(e.value) in out
    assert _check(capsys, ACC / "multi_node.yaml", "grad_accum=2")[0] == 0


def test_launch_flags_take_part(capsys):
    rc = cli(
        [
            "check-launch",
            "--accelerate-config",
            str(ACC / "multi_gpu_ddp.yaml"),
            "--launch-args",
            "--num_processes 3",
            "--config",
            str(ROOT / QWEN_REAL),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["num_processes"] == 3 and not out["ok"]
    assert any("num_processes=3" in c for c in out["conflicts"])


def test_fsdp1_without_orig_params_cannot_train_lora(tmp_path):
    acc = _yaml_with(tmp_path, "fsdp.yaml", fsdp_config={"fsdp_use_orig_params": False})
    cfg = build_config(file=ROOT / QWEN_REAL, overrides={"lora": True})
    plan = resolve_launch(cfg, acc)
    assert [(c.launch_key, c.run_key) for c in plan.conflicts] == [
        ("fsdp_config.fsdp_use_orig_params", "lora")
    ]
    assert resolve_launch(cfg, ACC / "fsdp.yaml").ok


def test_accelerates_own_validation_errors_are_conflicts(tmp_path):
    """fsdp_cpu_ram_efficient_loading without sync_module_states: accelerate's launcher
    raises; check-launch reports it instead of crashing."""
    acc = _yaml_with(tmp_path, "fsdp.yaml", fsdp_config={"fsdp_sync_module_states": False})
    plan = resolve_launch(build_config(file=ROOT / QWEN_REAL), acc)
    assert not plan.ok and "fsdp_sync_module_states" in str(plan.conflicts[0])


def test_zero_offload_with_our_torch_optimizer_is_a_conflict(tmp_path):
    acc = _yaml_with(
        tmp_path, "deepspeed_zero3.yaml", deepspeed_config={"offload_optimizer_device": "cpu"}
    )
    plan = resolve_launch(build_config(file=ROOT / QWEN_REAL), acc)
    assert [c.launch_key for c in plan.conflicts] == ["deepspeed_config.offload_optimizer_device"]


def test_a_deepspeed_json_file_is_read(tmp_path):
    ds = {
        "zero_optimization": {"stage": 3},
        "gradient_accumulation_steps": 2,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_clipping": "auto",
    }
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    acc = _yaml_with(
        tmp_path,
        "deepspeed_zero3.yaml",
        mixed_precision=None,  # accelerate forbids it beside a DeepSpeed file
        deepspeed_config={"deepspeed_config_file": str(tmp_path / "ds.json")},
    )
    data = yaml.safe_load(acc.read_text())
    data["deepspeed_config"] = {
        "deepspeed_config_file": str(tmp_path / "ds.json"),
        "zero3_init_flag": True,
    }
    acc.write_text(yaml.safe_dump(data))
    plan = resolve_launch(build_config(file=ROOT / QWEN_REAL), acc)
    assert [(c.launch_key, c.launch_value, c.run_value) for c in plan.conflicts] == [
        ("deepspeed_config.gradient_accumulation_steps", 2, 4)
    ]
    ds["gradient_accumulation_steps"] = "auto"
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    assert resolve_launch(build_config(file=ROOT / QWEN_REAL), acc).ok
    del ds["gradient_accumulation_steps"]  # accelerate reads an absent value as 1
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    plan = resolve_launch(build_config(file=ROOT / QWEN_REAL), acc)
    assert [(c.launch_value, c.run_value) for c in plan.conflicts] == [(1, 4)]


def test_check_launch_works_without_deepspeed():
    import importlib.util

    plan = resolve_launch(build_config(file=ROOT / QWEN_REAL), ACC / "deepspeed_zero3.yaml")
    assert plan.ok and plan.distributed_type == "DEEPSPEED"
    assert plan.deepspeed["zero_stage"] == 3
    if importlib.util.find_spec("deepspeed") is None:
        assert any("deepspeed is not installed" in n for n in plan.notes)


# ---------------------------------------------------------------------------------------------
# the trainer: one source of truth for accumulation and clipping under DeepSpeed
# ---------------------------------------------------------------------------------------------


def _fake_acc(acc_yaml: Path, world: int = 8):
    """What ``train`` sees before ``prepare``: accelerate's DeepSpeedPlugin as a launched
    process builds it from the yaml (the engine itself is never built)."""
    env = accelerate_launch_env(acc_yaml).env
    plugin = deepspeed_plugin(env)
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=world)


def _as_prepare_resolves(plugin, acc_gas: int, micro: int, world: int) -> dict:
    """accelerate's ``_prepare_deepspeed`` fill-in of the "auto" entries (no dataloader):
    accumulation from the Accelerator, clipping 1.0, batch sizes from the micro-batch."""
    plugin.fill_match(
        "gradient_accumulation_steps", must_match=False, gradient_accumulation_steps=acc_gas
    )
    gas = plugin.get_value("gradient_accumulation_steps")
    plugin.deepspeed_config_process(
        must_match=False,
        gradient_clipping=1.0,
        train_micro_batch_size_per_gpu=micro,
        train_batch_size=micro * gas * world,
    )
    return plugin.deepspeed_config


@pytest.mark.parametrize("base", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_trainer_fills_deepspeed_from_the_run_config(base):
    cfg = build_config(file=ROOT / QWEN_REAL, overrides={"max_grad_norm": 0.25})
    micro = check_sizes(cfg, 8)
    acc = _fake_acc(ACC / base)
    _deepspeed_batch_hint(acc, cfg, micro)
    ds = _as_prepare_resolves(acc.state.deepspeed_plugin, cfg.grad_accum, micro, 8)
    assert ds["gradient_accumulation_steps"] == cfg.grad_accum
    assert ds["gradient_clipping"] == cfg.max_grad_norm  # not accelerate's default 1.0
    assert ds["train_micro_batch_size_per_gpu"] == micro
    assert ds["train_batch_size"] == micro * cfg.grad_accum * 8


def test_trainer_refuses_a_deepspeed_value_that_differs(tmp_path):
    acc_yaml = _yaml_with(
        tmp_path, "deepspeed_zero3.yaml", deepspeed_config={"gradient_clipping": 1.0}
    )
    cfg = build_config(file=ROOT / QWEN_REAL, overrides={"max_grad_norm": 0.5})
    with pytest.raises(ValueError, match=r"gradient_clipping=1.0 vs max_grad_norm=0.5"):
        _deepspeed_batch_hint(_fake_acc(acc_yaml), cfg, check_sizes(cfg, 8))
    same = build_config(file=ROOT / QWEN_REAL)
    _deepspeed_batch_hint(_fake_acc(acc_yaml), same, check_sizes(same, 8))


def test_check_accumulation_names_the_launch_value(monkeypatch):
    from realjudge.train.trainer import _check_accumulation

    cfg = build_config(file=ROOT / QWEN_REAL)
    with pytest.raises(ValueError, match=r"gradient_accumulation_steps=1 .* grad_accum=4"):
        _check_accumulation(SimpleNamespace(gradient_accumulation_steps=1), cfg)
    _check_accumulation(SimpleNamespace(gradient_accumulation_steps=4), cfg)


def test_a_deepspeed_file_with_bf16_refuses_an_fp16_run(tmp_path):
    """accelerate's own mixed-precision check of a DeepSpeed file, with the run's precision."""
    ds = {
        "zero_optimization": {"stage": 2},
        "bf16": {"enabled": True},
        "gradient_accumulation_steps": "auto",
    }
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    data = yaml.safe_load((ACC / "deepspeed_zero2.yaml").read_text())
    data.pop("mixed_precision")
    data["deepspeed_config"] = {"deepspeed_config_file": str(tmp_path / "ds.json")}
    acc = tmp_path / "acc.yaml"
    acc.write_text(yaml.safe_dump(data))
    cfg = build_config(file=ROOT / QWEN_REAL)
    assert resolve_launch(cfg, acc).ok
    plan = resolve_launch(
        build_config(file=ROOT / QWEN_REAL, overrides={"mixed_precision": "fp16"}), acc
    )
    assert [c.run_key for c in plan.conflicts] == ["mixed_precision"]
    assert "bf16" in str(plan.conflicts[0])


def test_cpu_num_processes_without_mpirun_is_one_process(capsys):
    """accelerate's simple launcher runs one process for `--cpu --num_processes N` unless
    mpirun runs it (--mpirun_hostfile): the plan says so, and no batch conflict is invented."""
    rc = cli(
        [
            "check-launch",
            "--accelerate-config",
            str(ACC / "single_gpu.yaml"),
            "--launch-args",
            "--cpu --num_processes 2",
            "--method",
            "sft",
            "batch_size=3",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["num_processes"] == 1 and out["distributed_type"] == "NO"


def test_check_launch_lists_the_keys_as_train_does(capsys):
    acc = str(ACC / "single_gpu.yaml")
    assert cli(["check-launch", "--accelerate-config", acc, "--method", "real", "--list-keys"]) == 0
    listed = capsys.readouterr().out
    assert cli(["train", "--method", "real", "--list-keys"]) == 0
    assert listed == capsys.readouterr().out and "disable_dropout" in listed
