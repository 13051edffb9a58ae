"""CollapseWatch: a warning once per stretch of steps whose rows all got the same expected
score (the score distribution collapsed onto one token, where the regression gradient
vanishes)."""

import logging
import math

from realjudge.train import trainer
from realjudge.train.objectives import CollapseWatch

from ._helpers import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quick_config,
)


def _steps(stds, mean=3.0):
    return [{"y_hat/std": s, "y_hat/mean": mean} for s in stds]


def test_warns_once_after_patience_steps_and_again_after_a_recovery():
    watch = CollapseWatch(patience=3, tol=1e-3)
    stds = [0.5, 0.0, 0.0002, 0.0, 0.0, 0.0, 0.4, 0.0, 0.0, 0.0]
    said = [watch.update(i + 1, m) for i, m in enumerate(_steps(stds))]
    warned = [i + 1 for i, w in enumerate(said) if w]
    assert warned == [4, 10]  # the third collapsed step of each stretch, not every one after
    assert said[3].startswith("step 4: for 3 steps every row got the same expected score")
    assert "y_hat/mean 3.000" in said[3] and "docs/training.md" in said[3]


def test_a_spread_or_unknown_read_out_never_warns():
    watch = CollapseWatch(patience=2, tol=1e-3)
    metrics = _steps([0.002, 0.01, 1.2]) + [{}, {"y_hat/std": math.nan}] + _steps([0.0])
    assert not any(watch.update(i, m) for i, m in enumerate(metrics))
    assert watch.streak == 1  # a missing or NaN std broke the stretch


def test_the_recorded_stall_of_a_raft_run_is_flagged():
    """y_hat/std of steps 55-75 of the main job's RAFT stage (seed 0, lr 1e-4; its
    train_log.jsonl, 3 significant digits): below 1e-3 from step 65 on, while every row read
    3.000, so the tenth such step (74) is flagged."""
    stds = [0.0285, 0.0142, 0.00689, 0.00451, 0.00272, 0.0017, 0.00165, 0.000769, 0.000775]
    stds += [0.00104, 0.000483, 0.000144, 0.000161, 0.000232, 0.000181, 0.000309, 0.000195]
    stds += [0.000259, 0.000103, 0.000165, 0.000334]
    watch = CollapseWatch()
    warned = [55 + i for i, m in enumerate(_steps(stds)) if watch.update(55 + i, m)]
    assert warned == [74]


def test_a_training_run_logs_the_warning(tmp_path, monkeypatch, caplog):
    """The trainer feeds every step's metrics to the watch and logs what it says (here a
    watch that calls any spread collapsed, so the tiny model's second step is flagged)."""
    monkeypatch.setattr(trainer, "CollapseWatch", lambda: CollapseWatch(patience=2, tol=math.inf))
    with caplog.at_level(logging.WARNING, logger="realjudge.train.trainer"):
        trainer.train(quick_config("raft", tmp_path, max_steps=3))
    said = [r.getMessage() for r in caplog.records if "every row got the same" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("step 2: for 2 steps")
