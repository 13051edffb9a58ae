"""Two CPU processes (DDP over gloo) through ``accelerate launch -m realjudge.train``: both
processes must end with identical weights.

``accelerate launch --cpu --num_processes 2`` starts a single process unless MPI is set up, so
the test takes the torchrun path (``--multi_gpu``) with ``device=cpu``; on a machine without
GPUs that is plain multi-process CPU training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._helpers import write_data

pytestmark = pytest.mark.integration


def _accelerate() -> list[str]:
    exe = Path(sys.executable).with_name("accelerate")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("accelerate")
    if found is None:
        pytest.skip("the accelerate launcher is not installed")
    return [found]


@pytest.mark.parametrize(
    "method,extra",
    [
        ("real", ["beta=0.01", "ppo_epochs=2"]),
        # a random model writes no score, so rewards are all 0: the entropy bonus makes sure
        # there is a gradient to synchronise
        ("grpo", ["advantage=rloo", "entropy_coef=0.01"]),
    ],
)
def test_two_processes_end_with_identical_weights(tmp_path, method, extra):
    data = write_data(tmp_path / "data.jsonl")
    out = tmp_path / "out"
    cmd = [
        *_accelerate(),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "realjudge.train",
        "--method",
        method,
        "--model",
        "tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "batch_size=4",
        "num_generations=2",
        "max_new_tokens=6",
        "max_prompt_tokens=96",
        "report_to=none",
        "device=cpu",
        "digest_params=true",
        "learning_rate=1e-3",
        *extra,
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    digests = metrics["param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert metrics["last_train_metrics"]["grad_norm"] > 0
    assert (out / "model.safetensors").is_file()
