"""Shared helpers of the training tests: a tiny synthetic data file and quick configs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from realjudge.data.loaders import write_jsonl
from realjudge.data.records import JudgeRecord
from realjudge.train import build_config


@pytest.fixture(autouse=True)
def one_thread():
    """Run the tiny model on one thread: its ops are too small to gain from more, and on a
    shared machine spinning OpenMP threads make every small op wait for a time slice."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_data(path: Path, n: int = 4, golds: tuple[float, ...] = (1, 2, 3, 4, 5)) -> Path:
    """``n`` short records with golds cycling through ``golds``, each with a two-word
    reference feedback."""
    records = [
        JudgeRecord(
            id=f"r{i}",
            instruction="Rate the answer.",
            response=f"answer number {i}",
            gold=float(golds[i % len(golds)]),
            reference_feedback="looks fine",
        )
        for i in range(n)
    ]
    return write_jsonl(records, path)


def quick_config(
    method: str,
    tmp_path: Path,
    name: str | None = None,
    golds: tuple[float, ...] | None = None,
    **over: Any,
):
    """A config for a few fast CPU steps of the tiny model on :func:`write_data` records
    (``golds``: a separate data file with those gold scores)."""
    data = tmp_path / (
        "data.jsonl" if golds is None else "data-" + "-".join(map(str, golds)) + ".jsonl"
    )
    if not data.is_file():
        write_data(data, golds=golds or (1, 2, 3, 4, 5))
    values: dict[str, Any] = dict(
        model="tiny",
        data=str(data),
        out=str(tmp_path / (name or method)),
        device="cpu",
        report_to="none",
        batch_size=4,
        max_steps=3,
        max_new_tokens=8,
        max_prompt_tokens=128,
        learning_rate=3e-3,
    )
    if method in ("grpo", "real"):
        values.update(num_generations=2, ppo_epochs=1)
    values.update(over)
    return build_config(method, overrides=values)


def weights_digest(model_dir: Path) -> str:
    """SHA-256 of an exported model's weight file."""
    return hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()
