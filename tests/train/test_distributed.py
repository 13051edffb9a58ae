"""Two CPU processes (DDP over gloo) through ``accelerate launch -m realjudge.train`` end with
the weights of one process trained on the same global batch, for SFT, RAFT, GRPO and REAL.

Each process trains on its own half of every batch (2 prompts, micro-batch 2); the reference
is one in-process run (micro-batch 4). The losses are normalised by the global token /
sequence count, so both compute the gradient of the same mean -- and a run whose processes
do not train on their own shares (broken sharding) ends elsewhere. Identical weights on the
two ranks alone would prove nothing: DDP makes them identical by construction.

``accelerate launch --cpu --num_processes 2`` starts a single process unless MPI is set up, so
the test takes the torchrun path (``--multi_gpu``, or ``--use_fsdp``) with ``device=cpu``; on
a machine without GPUs that is plain multi-process CPU training (gloo).

RL rollouts are sampled with the default settings (temperature 1, top-p 1): each prompt's
rollouts are drawn from its own seed, derived from its position in the run's stream of prompts,
so the two launches sample the same rollouts whichever process holds the prompt.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
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

RL = {"temperature": 1.0, "top_p": 1.0}

#: ``accelerate launch`` flags of the two ways to shard: DDP, and FSDP (full sharding of each
#: decoder layer; on CPU ``sync_module_states`` must be off: accelerate looks for a GPU to
#: broadcast from, "There are currently no available devices found").
LAUNCHERS = {
    "ddp": ["--multi_gpu"],
    "fsdp": [
        "--use_fsdp",
        "--fsdp_sharding_strategy",
        "FULL_SHARD",
        "--fsdp_auto_wrap_policy",
        "TRANSFORMER_BASED_WRAP",
        "--fsdp_state_dict_type",
        "FULL_STATE_DICT",
        "--fsdp_sync_module_states",
        "false",
        "--fsdp_cpu_ram_efficient_loading",
        "false",
    ],
}


def _accelerate() -> list[str]:
    exe = Path(sys.executable).with_name("accelerate")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("accelerate")
    if found is None:
        pytest.skip("the accelerate launcher is not installed")
    return [found]


#: seconds a 2-process launch may take (about 20 s alone on 2 cores)
LAUNCH_TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_session(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session. On a timeout, fail naming the processes of the launch
    still alive (launcher, agent, ranks) and the outputs it wrote, then kill all of them:
    ``subprocess.run``'s timeout kills only the launcher and would leave the ranks running."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        alive = subprocess.run(
            ["ps", "-s", str(proc.pid), "-o", "pid,stat,etime,args"], capture_output=True, text=True
        ).stdout
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(
            f"the launch did not exit in {LAUNCH_TIMEOUT} s; still running:\n{alive}\n"
            f"stdout tail:\n{out[-2000:]}\nstderr tail:\n{err[-3000:]}"
        )
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _launch(method: str, cfg, out: Path, launcher: str) -> subprocess.CompletedProcess:
    skip = {"method", "model", "data", "out", "max_steps"}
    overrides = [
        f"{k}={json.dumps(v) if isinstance(v, (bool, list)) else v}"
        for k, v in cfg.to_dict().items()
        if k not in skip and v is not None
    ]
    cmd = [
        *_accelerate(),
        "launch",
        *LAUNCHERS[launcher],
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",  # not 29500: no clash with a launch still shutting down
        str(_free_port()),
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
    return _run_session(cmd, env)


@pytest.mark.parametrize(
    "launcher,method",
    [
        ("ddp", "sft"),
        ("ddp", "raft"),
        ("ddp", "grpo"),
        ("ddp", "real"),
        ("fsdp", "sft"),
        ("fsdp", "real"),  # rollouts generated by the FSDP-wrapped model
    ],
)
def test_two_processes_equal_one_process(tmp_path, launcher, method):
    extra = {**(RL if method in ("grpo", "real") else {}), "digest_params": True}
    single = train(run_config(method, tmp_path, "single", **extra))
    cfg = run_config(method, tmp_path, "dist", **extra)
    proc = _launch(method, cfg, tmp_path / "dist", launcher)
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


def test_a_hung_launch_fails_naming_its_processes_and_leaves_none(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "LAUNCH_TIMEOUT", 2)
    # a launcher whose child (a "rank") never exits
    code = "import subprocess, time; subprocess.Popen(['sleep', '307']); time.sleep(300)"
    with pytest.raises(pytest.fail.Exception, match=r"did not exit in 2 s(.|\n)*sleep 307"):
        _run_session([sys.executable, "-c", code], dict(os.environ))
    left = subprocess.run(["pgrep", "-f", "sleep 307"], capture_output=True, text=True).stdout
    assert left == ""
