"""``load_best_model_at_end``: the exported weights are those of the best evaluation."""

from __future__ import annotations

import json
import math

import pytest

from realjudge.train import train
from realjudge.train.config import ConfigError
from realjudge.train.trainer import BEST_DIR, is_better

from ._helpers import one_thread, quick_config, weights_digest  # noqa: F401


def test_is_better():
    assert is_better(0.1, None, "pearson")
    assert is_better(0.5, 0.4, "pearson") and not is_better(0.4, 0.4, "pearson")  # tie: earlier
    assert is_better(0.9, 1.0, "rmse") and not is_better(1.1, 1.0, "rmse")
    assert not is_better(math.nan, None, "pearson") and not is_better(None, 0.0, "mae")


def test_needs_periodic_evaluations(tmp_path):
    with pytest.raises(ConfigError, match="eval_steps"):
        quick_config("raft", tmp_path, load_best_model_at_end=True)
    with pytest.raises(ConfigError, match="metric_for_best_model"):
        quick_config("raft", tmp_path, metric_for_best_model="loss")


def _evals(out) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["eval/rmse"]) for r in rows if "eval/rmse" in r]


def test_the_best_evaluation_is_exported(tmp_path):
    common = dict(
        eval_data=None,  # set below: the training file itself
        eval_split=None,
        eval_limit=4,
        eval_mode="score",
        lr_scheduler="constant",
        warmup_steps=0,
        learning_rate=0.05,  # large: the error goes down, then up again
        adam_eps=1.0,
    )
    cfg = quick_config("raft", tmp_path, "probe", **common)
    common["eval_data"] = cfg.data
    best = train(
        quick_config(
            "raft",
            tmp_path,
            "best",
            max_steps=8,
            eval_steps=1,
            load_best_model_at_end=True,
            metric_for_best_model="rmse",
            **common,
        )
    )
    evals = _evals(best.out)
    assert [s for s, _ in evals] == list(range(1, 9))
    want = min(evals, key=lambda p: p[1])[0]  # min keeps the first of equal values
    metrics = json.loads((best.out / "metrics.json").read_text())
    assert metrics["best_step"] == want
    assert metrics["final_eval"]["rmse"] == pytest.approx(dict(evals)[want])
    assert want < 8, "the check below is only meaningful if the best is not the last step"
    # the same run stopped at the best step (constant schedule: the same weights)
    short = train(quick_config("raft", tmp_path, "short", max_steps=want, **common))
    assert weights_digest(best.out) == weights_digest(short.out)
    assert json.loads((best.out / BEST_DIR / "best.json").read_text())["step"] == want


def test_a_resumed_run_drops_a_best_record_of_steps_it_redoes(tmp_path):
    from realjudge.train.trainer import BEST_FILE, read_best

    (tmp_path / BEST_DIR).mkdir()
    (tmp_path / BEST_DIR / BEST_FILE).write_text(json.dumps({"step": 6, "value": 0.5}))
    assert read_best(tmp_path, 6)["step"] == 6
    assert read_best(tmp_path, 4) is None  # steps 5-6 are redone after a resume from 4
    assert read_best(tmp_path / "none", 9) is None
