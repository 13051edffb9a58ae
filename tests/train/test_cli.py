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
