"""``realjudge reproduce --jobs N``: a preset's training runs in N worker processes at once.

The runs of a comparison form a small graph: each run depends only on the run it warm-starts
from (``init_from``), so after the shared start (TRACT) its continuations train side by
side, and runs without a warm start (SFT, RAFT) from the beginning. On a machine whose cores
one run cannot keep busy (a 2-core CPU in bf16 trains about as fast at one thread as at two,
and generates faster as two single-thread processes), N single-purpose workers finish a seed
sooner than one process running the runs one after the other.

The parent process prepares the data and evaluates the starting model, then runs a worker
for each (seed, run) whose warm start is finished, at most N at a time, longest chain first
(:func:`next_tasks`). A worker is this module run as a script on a config file
(:class:`~realjudge.reproduce.runner.ReproduceConfig` with exactly one run and one seed,
written into ``OUT/jobs/``): the same code as a one-process ``reproduce``, in the same output
dir, so it trains or resumes its run and evaluates it, and finds its warm start finished.
Its output goes to ``OUT/jobs/seedS-RUN.log``. Each worker gets ``threads // N`` threads
(``OMP_NUM_THREADS``) and, on a machine with at least N GPUs, its own ``CUDA_VISIBLE_DEVICES``
share of them. When every run is done, the parent gathers them into ``results.json`` exactly
as a one-process run would (nothing is trained again: every run is found finished).

A stopped parent stops its workers; run the same command again and each run resumes from
its last checkpoint. A failed worker fails its run only: the runs that do not start from it
go on, and the command fails at the end, naming the logs to read.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOBS_DIR = "jobs"


@dataclass(frozen=True)
class Task:
    """One training run of one seed: ``after`` is the task it warm-starts from."""

    seed: int
    run: str
    after: tuple[int, str] | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.seed, self.run)


def plan_tasks(runs: Sequence[tuple[str, str | None]], seeds: Sequence[int]) -> list[Task]:
    """The tasks of ``runs`` (``(name, init_from)`` of each trained row, in preset order) for
    every seed, seed by seed."""
    return [
        Task(seed, name, (seed, init) if init else None) for seed in seeds for name, init in runs
    ]


def chain_lengths(tasks: Sequence[Task]) -> dict[tuple[int, str], int]:
    """For each task, the number of tasks on the longest chain of warm starts that begins at it
    (itself included): how much waits on it."""
    children: dict[tuple[int, str], list[tuple[int, str]]] = {t.key: [] for t in tasks}
    for t in tasks:
        if t.after is not None and t.after in children:
            children[t.after].append(t.key)
    memo: dict[tuple[int, str], int] = {}

    def length(key: tuple[int, str]) -> int:
        if key not in memo:
            memo[key] = 1 + max((length(c) for c in children[key]), default=0)
        return memo[key]

    return {t.key: length(t.key) for t in tasks}


def next_tasks(
    tasks: Sequence[Task],
    done: set[tuple[int, str]],
    running: set[tuple[int, str]],
    failed: set[tuple[int, str]],
    free: int,
) -> list[Task]:
    """Up to ``free`` tasks to start now: not done, running or failed, whose warm start is
    done; the longest chain of dependants first, then the earlier seed, then preset order. A
    task whose warm start failed is never ready."""
    lengths = chain_lengths(tasks)
    order = {t.key: i for i, t in enumerate(tasks)}
    taken = done | running | failed
    ready = [t for t in tasks if t.key not in taken and (t.after is None or t.after in done)]
    ready.sort(key=lambda t: (-lengths[t.key], t.seed, order[t.key]))
    return ready[: max(free, 0)]


def blocked_by_failure(tasks: Sequence[Task], failed: set[tuple[int, str]]) -> list[Task]:
    """The tasks that can never start because a task on their chain of warm starts failed."""
    by_key = {t.key: t for t in tasks}
    out = []
    for t in tasks:
        after = t.after
        while after is not None and after not in failed:
            after = by_key[after].after if after in by_key else None
        if after is not None:
            out.append(t)
    return out


def threads_each(threads: int, jobs: int) -> int:
    """The threads each of ``jobs`` workers gets out of ``threads``: an equal share, at least 1."""
    return max(threads // jobs, 1)


def worker_env(
    slot: int, jobs: int, threads: int, gpus: int, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of the worker in ``slot`` (0 .. jobs-1): ``threads // jobs`` threads
    (at least 1), and with ``gpus >= jobs`` its own ``gpus // jobs`` GPUs."""
    env = dict(os.environ if base is None else base)
    per = str(threads_each(threads, jobs))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = per
    if gpus >= jobs:
        share = gpus // jobs
        visible = env.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[slot * share : (slot + 1) * share])
    return env


def threads_per_job(jobs: int) -> int:
    """The threads each of ``jobs`` workers gets (:func:`worker_env`)."""
    import torch

    return threads_each(torch.get_num_threads(), jobs)


def _task_name(task: Task) -> str:
    from realjudge.reproduce.runner import slug

    return f"seed{task.seed}-{slug(task.run)}"


def run_parallel(cfg: Any) -> dict[str, Any]:
    """Run ``cfg`` (a :class:`~realjudge.reproduce.runner.ReproduceConfig` with ``jobs > 1``)
    as described in this module; return the gathered results."""
    import torch

    from realjudge.reproduce.runner import (
        DATA_DIR,
        output_dir,
        prepare_data,
        resolve,
        run_sequential,
    )

    started = time.perf_counter()
    jobs = cfg.jobs
    exp = resolve(cfg)
    out = output_dir(cfg, exp)
    out.mkdir(parents=True, exist_ok=True)
    prepare_data(exp, out / DATA_DIR)
    # the starting model's evaluation, once, before any worker needs it
    run_sequential(replace(cfg, jobs=1, only=[], only_exact=True, write=False, out=str(out)))

    seeds = list(range(cfg.first_seed, cfg.first_seed + exp.seeds))
    tasks = plan_tasks([(r.name, r.init_from) for r in exp.runs if r.method], seeds)
    jobs_dir = out / JOBS_DIR
    jobs_dir.mkdir(exist_ok=True)
    threads = torch.get_num_threads()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    log.info(
        "%d runs over %d workers, %d thread(s) each%s",
        len(tasks),
        jobs,
        threads_each(threads, jobs),
        f", {gpus // jobs} GPU(s) each" if gpus >= jobs else "",
    )
    done: set[tuple[int, str]] = set()
    failed: set[tuple[int, str]] = set()
    running: dict[tuple[int, str], tuple[subprocess.Popen[bytes], int, float, Path]] = {}
    free_slots = list(range(jobs))
    try:
        while True:
            for task in next_tasks(tasks, done, set(running), failed, len(free_slots)):
                slot = free_slots.pop(0)
                name = _task_name(task)
                config_file = jobs_dir / f"{name}.json"
                worker = replace(
                    cfg,
                    jobs=1,
                    only=[task.run],
                    only_exact=True,
                    seeds=1,
                    first_seed=task.seed,
                    write=False,
                    out=str(out),
                )
                config_file.write_text(json.dumps(asdict(worker), indent=2))
                log_file = jobs_dir / f"{name}.log"
                with log_file.open("ab") as sink:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", __name__, str(config_file)],
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        env=worker_env(slot, jobs, threads, gpus),
                    )
                running[task.key] = (proc, slot, time.perf_counter(), log_file)
                log.info("seed %d: %s started (log %s)", task.seed, task.run, log_file)
            if not running:
                break
            time.sleep(1.0)
            for key, (proc, slot, t0, log_file) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del running[key]
                free_slots.append(slot)
                free_slots.sort()
                minutes = (time.perf_counter() - t0) / 60
                if rc == 0:
                    done.add(key)
                    log.info("seed %d: %s finished (%.1f min)", key[0], key[1], minutes)
                else:
                    failed.add(key)
                    log.error("seed %d: %s failed (exit %d; log %s)", key[0], key[1], rc, log_file)
    finally:
        for proc, *_ in running.values():  # stopped: the workers resume from checkpoints
            proc.terminate()
        for proc, *_ in running.values():
            proc.wait()
    if failed:
        blocked = blocked_by_failure(tasks, failed)
        logs = ", ".join(str(jobs_dir / f"{_task_name(t)}.log") for t in tasks if t.key in failed)
        raise RuntimeError(
            f"{len(failed)} run(s) failed ({logs})"
            + (
                f"; not started, as they start from one: {[t.run for t in blocked]}"
                if blocked
                else ""
            )
            + "; the finished runs are kept: run the same command again to go on"
        )
    return run_sequential(replace(cfg, out=str(out)), started=started)


def _worker(config_file: str) -> None:
    from realjudge.reproduce.runner import ReproduceConfig, run_sequential

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_sequential(ReproduceConfig(**json.loads(Path(config_file).read_text())))


if __name__ == "__main__":
    _worker(sys.argv[1])
