"""``realjudge reproduce --jobs N``: which runs start when (pure), the workers' environment,
and a smoke run whose workers record the same finished work a one-process run would."""

from __future__ import annotations

import json

import pytest

from realjudge.reproduce import ReproduceConfig, run_reproduce
from realjudge.reproduce.parallel import (
    blocked_by_failure,
    chain_lengths,
    next_tasks,
    plan_tasks,
    worker_env,
)
from realjudge.reproduce.runner import resolve

# cpu-powered's trained rows: three from the base model, three from TRACT
POWERED = [
    ("SFT", None),
    ("RAFT", None),
    ("TRACT", None),
    ("TRACT+", "TRACT"),
    ("GRPO", "TRACT"),
    ("REAL", "TRACT"),
]


def names(tasks):
    return [(t.seed, t.run) for t in tasks]


def test_the_shared_warm_start_goes_first_and_its_continuations_after_it():
    tasks = plan_tasks(POWERED, [0])
    assert chain_lengths(tasks)[(0, "TRACT")] == 2 and chain_lengths(tasks)[(0, "SFT")] == 1
    # two workers: TRACT (three runs wait on it), then the first run in preset order
    assert names(next_tasks(tasks, set(), set(), set(), 2)) == [(0, "TRACT"), (0, "SFT")]
    running = {(0, "TRACT"), (0, "SFT")}
    assert names(next_tasks(tasks, set(), running, set(), 1)) == [(0, "RAFT")]
    # nothing starts from an unfinished TRACT, whatever is free
    done = {(0, "SFT"), (0, "RAFT")}
    assert next_tasks(tasks, done, {(0, "TRACT")}, set(), 4) == []
    done.add((0, "TRACT"))
    assert names(next_tasks(tasks, done, set(), set(), 4)) == [
        (0, "TRACT+"),
        (0, "GRPO"),
        (0, "REAL"),
    ]
    assert next_tasks(tasks, {t.key for t in tasks}, set(), set(), 2) == []
    assert next_tasks(tasks, set(), set(), set(), 0) == []


def test_seeds_are_planned_seed_by_seed_and_a_chain_stays_within_its_seed():
    tasks = plan_tasks(POWERED, [3, 4])
    assert len(tasks) == 12
    assert {t.after for t in tasks if t.run == "REAL"} == {(3, "TRACT"), (4, "TRACT")}
    # both seeds' shared starts first, then the earlier seed's first run
    assert names(next_tasks(tasks, set(), set(), set(), 3)) == [
        (3, "TRACT"),
        (4, "TRACT"),
        (3, "SFT"),
    ]
    # seed 3's TRACT done: its continuations, never seed 4's
    ready = next_tasks(tasks, {(3, "TRACT")}, {(4, "TRACT")}, set(), 10)
    assert names(ready) == [
        (3, "SFT"),
        (3, "RAFT"),
        (3, "TRACT+"),
        (3, "GRPO"),
        (3, "REAL"),
        (4, "SFT"),
        (4, "RAFT"),
    ]


def test_a_failed_run_blocks_only_the_runs_that_start_from_it():
    tasks = plan_tasks([*POWERED, ("REAL[beta=0.1]", "REAL")], [0])
    failed = {(0, "TRACT")}
    ready = next_tasks(tasks, set(), set(), failed, 10)
    assert names(ready) == [(0, "SFT"), (0, "RAFT")]
    blocked = [t.run for t in blocked_by_failure(tasks, failed)]
    assert blocked == ["TRACT+", "GRPO", "REAL", "REAL[beta=0.1]"]  # transitively
    assert blocked_by_failure(tasks, {(0, "SFT")}) == []


def test_worker_env_splits_the_threads_and_the_gpus():
    base = {"PATH": "/bin"}
    env = worker_env(1, 2, threads=2, gpus=0, base=base)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1" and env["PATH"] == "/bin"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert worker_env(0, 4, threads=2, gpus=0, base=base)["OMP_NUM_THREADS"] == "1"  # >= 1
    assert worker_env(0, 2, threads=16, gpus=0, base=base)["OMP_NUM_THREADS"] == "8"
    assert worker_env(1, 2, threads=16, gpus=4, base=base)["CUDA_VISIBLE_DEVICES"] == "2,3"
    # the devices already made visible are the ones shared
    visible = {**base, "CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert worker_env(1, 2, threads=16, gpus=4, base=visible)["CUDA_VISIBLE_DEVICES"] == "6,7"
    assert worker_env(3, 4, threads=16, gpus=4, base=visible)["CUDA_VISIBLE_DEVICES"] == "7"
    # fewer GPUs than workers: each worker sees them all, as a one-process run would
    assert "CUDA_VISIBLE_DEVICES" not in worker_env(1, 2, threads=16, gpus=1, base=base)


def test_only_exact_runs_the_named_rows_and_their_warm_starts_without_the_variants():
    cfg = ReproduceConfig(preset="cpu-powered", only=["GRPO"], variants=["REAL:beta=0.1"])
    runs = [r.name for r in resolve(cfg).runs]
    assert runs == ["base", "TRACT", "GRPO", "REAL[beta=0.1]"]  # --only adds the variants
    exact = ReproduceConfig(
        preset="cpu-powered", only=["GRPO"], variants=["REAL:beta=0.1"], only_exact=True
    )
    assert [r.name for r in resolve(exact).runs] == ["base", "TRACT", "GRPO"]
    none = ReproduceConfig(preset="cpu-powered", only=[], only_exact=True)
    assert [r.name for r in resolve(none).runs] == ["base"]
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_reproduce(ReproduceConfig(jobs=0))


@pytest.mark.integration
def test_jobs_2_smoke_run_records_what_a_one_process_run_reuses(tmp_path, monkeypatch):
    """Two workers train the smoke comparison; the results hold every run, each worker's log
    is kept, and the seed's environment says how the runs were split. A one-process run of
    the same command on the same output dir then trains and evaluates nothing: the workers
    recorded exactly the finished work it would have."""
    out = tmp_path / "r"
    common = dict(
        preset="cpu-embedded",
        model="tiny",
        smoke=True,
        set=["freeze_layers=1"],
        only=["RAFT", "REAL"],
        out=str(out),
        command="x",
    )
    res = run_reproduce(ReproduceConfig(**common, jobs=2))
    saved = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in saved["runs"]] == ["base", "RAFT", "TRACT", "REAL"]
    for run in ("RAFT", "TRACT", "REAL"):
        assert set(saved["per_seed"][run]["0"]) == {"embedded-test", "embedded-ood"}
        assert (out / "jobs" / f"seed0-{run}.log").is_file()
    assert saved["environment"]["0"]["jobs"] == 2 and saved["environment"]["0"]["threads"] >= 1
    assert res["timings_s"]["total"]["wall_s"] >= res["timings_s"]["REAL"]["seed0_train_s"]

    import realjudge.evaluate.run as evaluate
    import realjudge.train.trainer as trainer

    def nothing_left(*a, **k):
        raise AssertionError("a finished run was trained or evaluated again")

    monkeypatch.setattr(trainer, "train", nothing_left)
    monkeypatch.setattr(evaluate, "run_eval", nothing_left)
    again = run_reproduce(ReproduceConfig(**common))
    assert again["per_seed"] == saved["per_seed"]


@pytest.mark.integration
def test_jobs_a_failed_run_keeps_the_others_and_names_its_log(tmp_path):
    out = tmp_path / "r"
    cfg = ReproduceConfig(
        preset="cpu-embedded",
        model="tiny",
        smoke=True,
        set=["freeze_layers=1", "TRACT.learning_rate=-1"],  # TRACT's worker fails
        only=["RAFT", "GRPO"],
        out=str(out),
        jobs=2,
    )
    with pytest.raises(RuntimeError, match=r"seed0-TRACT\.log.*\['GRPO'\]"):
        run_reproduce(cfg)
    assert "learning_rate must be > 0" in (out / "jobs" / "seed0-TRACT.log").read_text()
    assert (out / "seed0" / "RAFT" / "reproduce_done.json").is_file()  # finished, kept
    assert not (out / "seed0" / "GRPO").exists()  # never started
