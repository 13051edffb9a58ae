"""Resuming a run with the settings a resumption may change (``max_steps``, ``grad_accum``)
and starting over in an ``out`` that holds another run."""

from __future__ import annotations

import json

from realjudge.train import train
from realjudge.train.supervised import TRACTObjective
from realjudge.train.trainer import BEST_DIR, BEST_FILE

from ._helpers import one_thread, quick_config, write_data  # noqa: F401


def test_a_resumption_may_change_grad_accum(tmp_path):
    """The checkpoint restores accelerate's micro-batch counter; it restarts at the update
    boundary the checkpoint sits on, so updates stay in step with the new grad_accum."""
    over = dict(max_steps=3, save_steps=1)
    train(quick_config("sft", tmp_path, "run", **over), stop_after=1)
    done = train(quick_config("sft", tmp_path, "run", resume=True, grad_accum=2, **over))
    assert done.step == 3


def test_the_final_best_is_kept_and_an_overwrite_drops_the_former_best(tmp_path):
    ev = dict(eval_split=None, eval_limit=4, eval_mode="score", load_best_model_at_end=True)
    ev |= dict(metric_for_best_model="rmse", save_steps=1)
    data = quick_config("raft", tmp_path).data
    a = train(
        quick_config("raft", tmp_path, "run", max_steps=1, eval_steps=1, eval_data=data, **ev)
    )
    # the final evaluation is the only (so the best) one: on disk, for a resumption to know it
    assert json.loads((a.out / BEST_DIR / BEST_FILE).read_text())["step"] == 1
    # another run over the same out, stopped before its first evaluation: no best of its own
    b = quick_config("raft", tmp_path, "run", max_steps=4, eval_steps=2, eval_data=data, **ev)
    b.overwrite, b.seed = True, 1
    train(b, stop_after=1)
    assert not (a.out / BEST_DIR).exists()


def test_tract_stage2_resumed_with_more_steps_regenerates_only_what_it_lacks(tmp_path):
    """Run 1 step (4 of 12 records), resume to 3 (all 12): the 8 new CoTs come from the
    starting weights, as a fresh 3-step run's do, and the 4 cached ones are kept."""
    data = write_data(tmp_path / "data12.jsonl", n=12)
    over = dict(data=str(data), tract_stage=2, save_steps=1, max_new_tokens=6)
    train(quick_config("tract", tmp_path, "run", max_steps=1, **over))
    cache = tmp_path / "run" / TRACTObjective.CACHE
    first = [json.loads(x) for x in cache.read_text().splitlines()]
    assert len(first) == 4
    train(quick_config("tract", tmp_path, "run", max_steps=3, resume=True, **over))
    fresh = train(quick_config("tract", tmp_path, "fresh", max_steps=3, **over))
    rows = [json.loads(x) for x in cache.read_text().splitlines()]
    want = [json.loads(x) for x in (fresh.out / TRACTObjective.CACHE).read_text().splitlines()]
    assert len(rows) == 12 and rows == want
    assert [r for r in rows if r["index"] in {f["index"] for f in first}] == first
    # a cache written under other regeneration settings is regenerated, not reused
    other = quick_config("tract", tmp_path, "run", max_steps=3, resume=True, **over)
    other.regen_greedy, other.regen_temperature = False, 0.7
    train(other)
    meta = json.loads((tmp_path / "run" / TRACTObjective.CACHE_META).read_text())
    assert meta["regen_greedy"] is False
