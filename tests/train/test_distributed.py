"""Two CPU processes (DDP over gloo) through ``accelerate launch -m realjudge.train`` end with
the weights of one process trained on the same global batch, for SFT, RAFT, GRPO and REAL.

Each process trains on its own half of every batch (2 prompts, micro-batch 2); the reference
is one in-process run (micro-batch 4). The losses are normalised by the global token /
sequence count, so both compute the gradient of the same mean -- and a run whose processes
do not train on their own shares (broken sharding) ends elsewhere. Identical weights on the
two ranks alone would prove nothing: DDP makes them identical by construction.

``accelerate launch --cpu --num_processes 2`` starts a single process unless MPI is set up, so
the test takes the torchrun path (``--multi_gpu``) with ``device=cpu``; on a machine without
GPUs that is plain multi-process CPU training.

RL rollouts are seeded per process, so the two launches would sample different rollouts; the
test samples with ``top_p`` near 0 (the most likely token), which makes them the same in both.
Then the G rollouts of a prompt are equal, their advantages 0: GRPO trains through its entropy
bonus (a token-level term), REAL through its refinement term (a sequence-level term).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from realjudge.train import train

from ._helpers import one_thread  # noqa: F401  (autouse: one torch thread)
from .test_normalization import ATOL, exported, max_difference, run_config

pytestmark = pytest.mark.integration

#: 2-process vs 1-process weights: float32 sums in another order (gloo's all-reduce).
DIST_ATOL = ATOL

RL = {"top_p": 1e-6}


def _accelerate() -> list[str]:
    exe = Path(sys.executable).with_name("accelerate")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("accelerate")
    if found is None:
        pytest.skip("the accelerate launcher is not installed")
    return [found]


def _launch(method: str, cfg, out: Path) -> subprocess.CompletedProcess:
    skip = {"method", "model", "data", "out", "max_steps"}
    overrides = [
        f"{k}={json.dumps(v) if isinstance(v, (bool, list)) else v}"
        for k, v in cfg.to_dict().items()
        if k not in skip and v is not None
    ]
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
        cfg.data,
        "--out",
        str(out),
        "--max-steps",
        str(cfg.max_steps),
        *overrides,
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


@pytest.mark.parametrize("method", ["sft", "raft", "grpo", "real"])
def test_two_processes_equal_one_process(tmp_path, method):
    extra = {**(RL if method in ("grpo", "real") else {}), "digest_params": True}
    single = train(run_config(method, tmp_path, "single", **extra))
    cfg = run_config(method, tmp_path, "dist", **extra)
    proc = _launch(method, cfg, tmp_path / "dist")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "dist" / "metrics.json").read_text())
    digests = metrics["param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    start = train(run_config(method, tmp_path, "start", max_steps=1, learning_rate=1e-12))
    one, two = exported(single.out), exported(tmp_path / "dist")
    assert max_difference(one, exported(start.out)) > 100 * DIST_ATOL  # the runs train
    assert max_difference(one, two) < DIST_ATOL
    assert metrics["last_train_metrics"]["loss"] == pytest.approx(
        single.last_metrics["loss"], rel=1e-4
    )
