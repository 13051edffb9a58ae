"""``realjudge bench prefix`` on the tiny model: both arms run through the trainer's own
update, the table and one ratio line per method, and the JSON with the command line."""

from __future__ import annotations

import json

import pytest

from realjudge.bench.prefix import bench_prefix
from realjudge.cli import main


def test_bench_prefix_times_both_arms_and_prints_one_line_per_method(tmp_path, capsys):
    out = tmp_path / "prefix.json"
    assert (
        main(
            [
                "bench",
                "prefix",
                "--model",
                "tiny",
                "--rounds",
                "2",
                "--batch-size",
                "4",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("raft step speedup (shared prefix/full): ")
    assert lines[-1].startswith("tract step speedup (shared prefix/full): ")
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("realjudge bench prefix --model tiny")
    for method in ("raft", "tract"):
        r = saved["methods"][method]
        assert r["rows"] == 4 and len(r["shared_step_s"]) == len(r["full_step_s"]) == 2
        # the embedded prompt template: the system message and the task description
        assert r["common_prefix_tokens"] >= 16
        assert r["common_prefix_tokens"] < r["mean_prompt_tokens"]
        assert saved["speedups"][method] > 0
        assert r["freeze_layers"] == 1  # half of the tiny model's 2 layers
        assert r["device"] == "cpu"  # this machine has no GPU
    # the environment is the device's the steps ran on
    assert saved["environment"]["gpu"] is None and saved["environment"]["cpu"]


def test_bench_prefix_refuses_what_it_cannot_measure():
    with pytest.raises(ValueError, match="supervised methods only"):
        bench_prefix("tiny", methods=["real"], show=False)
    with pytest.raises(ValueError, match="batch_size"):
        bench_prefix("tiny", batch_size=1, show=False)
