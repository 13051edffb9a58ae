"""``realjudge train`` and ``python -m realjudge.train``."""

from __future__ import annotations

import json
import subprocess
import sys

from realjudge.cli import main as cli_main
from realjudge.models import load_model
from realjudge.train.entry import main as train_main

from ._helpers import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quick_config,
    write_data,
)


def test_cli_train_writes_a_loadable_model(tmp_path):
    data = write_data(tmp_path / "data.jsonl")
    out = tmp_path / "out"
    rc = cli_main(
        [
            "train",
            "--method",
            "raft",
            "--model",
            "tiny",
            "--data",
            str(data),
            "--out",
            str(out),
            "--max-steps",
            "1",
            "--seed",
            "3",
            "report_to=none",
            "device=cpu",
            "batch_size=2",
            "max_prompt_tokens=96",
        ]
    )
    assert rc == 0
    assert load_model(str(out), device="cpu").model is not None
    meta = json.loads((out / "realjudge.json").read_text())
    assert meta["method"] == "raft" and meta["config"]["seed"] == 3 and meta["steps"] == 1
    # a second run into the same dir is refused with a one-line error (status 2)
    assert (
        cli_main(
            [
                "train",
                "--method",
                "raft",
                "--model",
                "tiny",
                "--data",
                str(data),
                "--out",
                str(out),
                "report_to=none",
            ]
        )
        == 2
    )


def test_eval_and_score_default_to_the_trained_format_and_normalisation(tmp_path):
    from realjudge.evaluate.run import score_file
    from realjudge.inference.judge import JudgeConfig, load_judge
    from realjudge.models import read_judge_defaults
    from realjudge.train import train

    res = train(quick_config("raft", tmp_path, max_steps=1, fmt="overall", rail_normalize=False))
    model = str(res.out)
    assert read_judge_defaults(model) == {"fmt": "overall", "normalize": False}
    assert load_model(model, device="cpu").judge_defaults == read_judge_defaults(model)
    assert read_judge_defaults("tiny") == {} and read_judge_defaults(tmp_path) == {}

    data = str(tmp_path / "data.jsonl")
    ev = tmp_path / "eval"
    flags = ["--device", "cpu", "--cot", "--max-new-tokens", "3", "--quiet", "--n-boot", "10"]
    # no --format, no --raw-probs: the model's own settings
    rc = cli_main(["eval", "--model", model, "--data", data, "--out", str(ev), *flags])
    assert rc == 0
    config = json.loads((ev / "metrics.json").read_text())["config"]
    assert config["fmt"] == "overall" and config["normalize"] is False
    rows = [json.loads(line) for line in (ev / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(r["feedback"].endswith("So the overall score is ") for r in rows), rows
    assert all(sum(r["distribution"]) < 1.0 - 1e-6 for r in rows)  # raw probabilities

    # explicit settings win, on the command line and in the Python API
    out = tmp_path / "scored.jsonl"
    rc = cli_main(
        ["score", "--model", model, "--input", data, "--output", str(out), *flags[:-2]]
        + ["--format", "result", "--no-raw-probs"]
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all("[RESULT]" in r["feedback"] for r in rows)
    assert all(abs(sum(r["distribution"]) - 1.0) < 1e-5 for r in rows)
    judge = load_judge(model, JudgeConfig(progress=False, normalize=True), device="cpu")
    assert judge.config.fmt == "overall" and judge.config.normalize is True
    api = tmp_path / "api.jsonl"
    summary = score_file(model, data, api, JudgeConfig(progress=False, cot=True, max_new_tokens=3))
    assert summary["n_scored"] == 4
    rows = [json.loads(line) for line in api.read_text().splitlines()]
    assert all(r["feedback"].endswith("So the overall score is ") for r in rows)


def test_cli_reports_bad_keys_as_user_errors(capsys):
    assert cli_main(["train", "--method", "sft", "--print-config", "beta=1"]) == 2
    assert "unknown config key 'beta'" in capsys.readouterr().err


def test_print_config_shows_the_resolved_layers(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("method: real\npreset: authors\nbeta: 0.01\n")
    assert train_main(["--config", str(f), "--lora", "--print-config", "num_generations=4"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["method"] == "real" and cfg["lora"] is True
    assert cfg["beta"] == 0.01 and cfg["num_generations"] == 4 and cfg["mini_batch_size"] == 32


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "realjudge.train", "--method", "grpo", "--print-config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["method"] == "grpo"
    bad = subprocess.run(
        [sys.executable, "-m", "realjudge.train", "--method", "grpo", "--print-config", "bta=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "did you mean 'beta'" not in bad.stderr  # grpo has no beta
    assert "unknown config key 'bta'" in bad.stderr


def test_every_config_key_is_documented_for_list_keys():
    from realjudge.train.config import CONFIG_CLASSES
    from realjudge.train.entry import key_docs

    for method, cls in CONFIG_CLASSES.items():
        docs = key_docs(cls)
        missing = [k for k in cls.field_names() if not docs.get(k)]
        assert not missing, f"{method}: {missing}"
    docs = key_docs(CONFIG_CLASSES["real"])
    # "a, b, c: text" documents each key; continuation lines are joined
    assert docs["lora_alpha"] == docs["lora_r"] == "LoRA rank, scaling and dropout."
    assert docs["beta"].startswith("weight of the refinement term")
    assert docs["freeze_layers"].endswith("the LM head is frozen with them.")


def test_list_keys_shows_values_after_the_preset_and_their_meaning(capsys):
    assert cli_main(["train", "--list-keys", "--method", "real", "--preset", "cpu-embedded"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config keys of method 'real', values after --preset cpu-embedded")
    assert "\nbeta: float = 0.01\n    weight of the refinement term" in out  # preset's value
    assert "\nnum_generations: int = 4\n" in out and "\nseed: int = 0\n" in out
    assert (
        cli_main(["train", "--list-keys", "--method", "sft", "--seed", "3", "lr_scheduler=cosine"])
        == 0
    )
    out = capsys.readouterr().out
    assert "\nseed: int = 3\n" in out and '\nlr_scheduler: str = "cosine"\n' in out
    assert "beta:" not in out


def test_list_keys_without_a_method_lists_shared_then_per_method_keys(capsys):
    assert cli_main(["train", "--list-keys"]) == 0
    out = capsys.readouterr().out
    shared, _, rest = out.partition("\nkeys of method 'tract' only:\n")
    assert "\nlearning_rate: float = 1e-05\n" in shared and "tract_lambda" not in shared
    assert "tract_lambda: float = 1.0" in rest and "\nkeys of method 'real' only:\n" in rest
    assert "keys of method 'sft' only" not in out  # SFT adds no keys
    assert cli_main(["train", "--list-keys", "--preset", "authors"]) == 2
    assert "needs --method" in capsys.readouterr().err


def test_train_help_says_how_to_list_keys_and_which_presets_it_takes(capsys):
    import pytest

    from realjudge.cli import build_parser

    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    assert "realjudge train --list-keys [--method M] [--preset P]" in " ".join(
        capsys.readouterr().out.split()
    )
    commands = build_parser()._subparsers._group_actions[0].choices
    helps = {
        name: next(a.help for a in commands[name]._actions if "--preset" in a.option_strings)
        for name in ("train", "reproduce")
    }
    assert "method preset of realjudge.train.config: authors, cpu-embedded (" in helps["train"]
    assert "'realjudge reproduce --preset', which takes experiment presets" in helps["train"]
    assert (
        "cpu-embedded, cpu-powered, cpu-raft-start, cpu-raft-tract, cpu-vicuna, gpu-small, "
        "paper-qwen3-32b, "
        "paper-qwen3-8b." in helps["reproduce"]
    )
    assert "'realjudge train --preset', which takes method presets" in helps["reproduce"]


def test_train_names_every_unusable_row_before_loading_the_model(tmp_path, capsys):
    import json

    rows = [
        {"id": f"r{i}", "instruction": "q", "response": "a", "gold": 3, "reference_feedback": "ok"}
        for i in range(40)
    ]
    rows[2]["gold"] = None
    for i in (30, 31, 37):
        del rows[i]["reference_feedback"]  # late rows: SFT used to stop mid-run on them
    data = tmp_path / "late.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["train", "--method", "sft", "--model", "tiny", "--data", str(data)]
    rc = cli_main([*argv, "--out", str(out), "--max-steps", "30", "report_to=none", "device=cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "4 bad rows" in err
    assert f"{data}, line 3 (1-based), field 'gold'" in err
    assert f"{data}, lines 31-32, 38 (1-based), field 'reference_feedback'" in err
    assert not out.exists()  # refused before any work
    # RAFT does not train on the feedback: only the row without a gold is in its way
    assert cli_main(["train", "--method", "raft", *argv[3:], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 bad row " in err and "reference_feedback" not in err
