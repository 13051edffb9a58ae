"""A real ``realjudge train`` process SIGKILLed mid-step or mid-checkpoint resumes to the weights
of a run that was never interrupted.

The kill point is made deterministic by the trainer's test hook: with
``REALJUDGE_TEST_PAUSE_AT=<point>`` the process writes a flag file at that point and waits; the
``run_until_killed`` fixture (``tests/conftest.py``) then sends it SIGKILL (no clean-up, no
``atexit``, no flushing beyond what the trainer already did).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realjudge.train import train
from realjudge.train.modeling import CHECKPOINTS, PARTIAL_PREFIX, STATE_FILE, latest_checkpoint

from ._helpers import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quick_config,
    weights_digest,
)

pytestmark = pytest.mark.integration

#: REAL samples rollouts, so a resume must restore the data order, the sampling seeds and
#: Adam's state to end on the same weights.
SETTINGS = dict(max_steps=3, save_steps=1, digest_params=True)


def _cli_args(cfg) -> list[str]:
    """``realjudge train`` arguments for the same config as ``cfg``."""
    args = ["train", "--method", cfg.method]
    for key, value in cfg.to_dict().items():
        if key != "method" and value is not None and not isinstance(value, list):
            args.append(f"{key}={json.dumps(value) if isinstance(value, bool) else value}")
    return args


def _log(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.parametrize(
    "point,left_behind",
    [
        # step 2's updates are done in memory; its checkpoint was never started
        ("step-2/updated", []),
        # step 2's weights and optimiser state are on disk, its checkpoint is not complete
        ("step-2/checkpoint-written", [f"{PARTIAL_PREFIX}step-000002"]),
    ],
    ids=["mid-step", "mid-checkpoint"],
)
def test_a_sigkilled_run_resumes_to_the_weights_of_an_uninterrupted_one(
    tmp_path, run_until_killed, point, left_behind
):
    full = train(quick_config("real", tmp_path, name="full", **SETTINGS))

    cfg = quick_config("real", tmp_path, name="killed", **SETTINGS)
    run_until_killed(_cli_args(cfg), point)
    out = Path(cfg.out)
    on_disk = sorted(p.name for p in (out / CHECKPOINTS).iterdir())
    assert on_disk == sorted(["step-000001", *left_behind])
    if left_behind:  # the killed write got as far as the weights
        partial = out / CHECKPOINTS / left_behind[0]
        assert (partial / "model.safetensors").is_file() and not (partial / STATE_FILE).exists()
    assert latest_checkpoint(out).name == "step-000001"
    assert not (out / "model.safetensors").exists()  # nothing exported

    resumed = train(quick_config("real", tmp_path, name="killed", resume=True, **SETTINGS))
    assert resumed.step == 3 and not resumed.interrupted
    assert weights_digest(out) == weights_digest(full.out)
    m_full = json.loads((full.out / "metrics.json").read_text())
    m_res = json.loads((out / "metrics.json").read_text())
    assert m_res["param_digests"] == m_full["param_digests"]
    assert _log(out) == _log(full.out)  # step 2 logged once, as in the uninterrupted run
    # the partial dir is gone; the newest two complete checkpoints are kept
    assert sorted(p.name for p in (out / CHECKPOINTS).iterdir()) == ["step-000002", "step-000003"]
