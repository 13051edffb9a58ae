"""`bench_sweep` / `realjudge bench sweep` on the tiny model: the steps it times run on prompts
and rollouts of exactly the requested lengths, both methods really train, and the table, JSON
and plot come out. No timing assertions (the machines are shared). Every sweep runs torch on
one thread (``threads=1`` / ``--threads 1``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import realjudge.train.rl as rl
from realjudge.bench.sweep import (
    TABLE_HEADER,
    SweepPoint,
    bench_sweep,
    exact_prompt_ids,
    sweep_points,
)
from realjudge.cli import main

SIZES = dict(
    group_sizes=[2, 3],
    prompt_tokens=[24, 300],  # shorter than the embedded prompts (cut), longer (padded)
    response_tokens=[4, 6],  # 6: the base point again
    base_group_size=2,
    base_prompt_tokens=40,
    base_response_tokens=6,
    prompts=2,
    repeats=1,
    warmup=1,
    threads=1,  # torch threads for the run, restored afterwards
)


@pytest.fixture()
def forwarded(monkeypatch):
    """Every training forward pass of the RL objectives: (method, [(prompt len, response len)
    per row])."""
    seen: list[tuple[str, list[tuple[int, int]]]] = []
    original = rl.forward_examples

    def spy(ctx, model, rows, **kwargs):
        seen.append((ctx.cfg.method, [(len(r.prompt_ids), len(r.response_ids)) for r in rows]))
        return original(ctx, model, rows, **kwargs)

    monkeypatch.setattr(rl, "forward_examples", spy)
    return seen


def _positive(v) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def test_sweep_points_vary_one_factor_around_the_base():
    base = SweepPoint(4, 256, 64)
    points = sweep_points(base, [2, 8], [128], [])
    assert points == [
        ("group_size", 2, SweepPoint(2, 256, 64)),
        ("group_size", 8, SweepPoint(8, 256, 64)),
        ("prompt_tokens", 128, SweepPoint(4, 128, 64)),
    ]


@pytest.mark.parametrize("target", [16, 180, 400])
def test_prompts_are_cut_or_padded_to_exact_length(tokenizer, target):
    from realjudge.data.loaders import load_records
    from realjudge.scoring.vocab import ScoreVocab
    from realjudge.train.examples import Encoder

    record = load_records("embedded", "train", limit=1, seed=0).records[0]
    vocab = ScoreVocab.from_tokenizer(tokenizer, "result", record.scale)
    encoder = Encoder(tokenizer, vocab, "result", target, 8)
    ids = exact_prompt_ids(record, encoder)
    assert len(ids) == target
    # the end of the prompt (the start of the assistant turn) is always kept
    assert ids[-3:] == encoder.prompt_ids(record)[-3:]


def test_bench_sweep_times_steps_of_exact_shape(forwarded, tmp_path):
    threads_before = torch.get_num_threads()
    json_out, plot_out = tmp_path / "sweep.json", tmp_path / "plots" / "sweep.png"
    out = bench_sweep(
        model="tiny", show=False, json_out=str(json_out), plot_out=str(plot_out), **SIZES
    )
    assert out["config"]["torch_threads"] == 1
    assert torch.get_num_threads() == threads_before
    rows = out["rows"]
    assert [(r["factor"], r["value"]) for r in rows] == [
        ("group_size", 2),
        ("group_size", 3),
        ("prompt_tokens", 24),
        ("prompt_tokens", 300),
        ("response_tokens", 4),
        ("response_tokens", 6),
    ]
    cue = rows[0]["cue_tokens"]
    assert cue > 0
    expected_forwards = set()
    for r in rows:
        point = {
            "group_size": 2,
            "prompt_tokens": 40,
            "response_tokens": 6,
            r["factor"]: r["value"],
        }
        # the lengths read back from the groups trained on are the requested ones
        assert {k: r[k] for k in point} == point, r
        assert r["rows"] == SIZES["prompts"] * point["group_size"]
        for key in ("real_step_s", "grpo_step_s", "time_ratio", "real_cpu_s", "grpo_cpu_s"):
            assert _positive(r[key]), (key, r[key])
        for m in ("real", "grpo"):
            assert r[f"{m}_peak_mib"] is not None and r[f"{m}_peak_mib"] >= 0
            # each measured step starts from the same weights and moves them by its gradient
            assert r["results"][m]["grad_norm"] > 0, (m, r)
            assert r["results"][m]["weight_change_min"] > 0, (m, r)
        n, P, L = r["rows"], point["prompt_tokens"], point["response_tokens"]
        expected_forwards.add(("real", ((P, L + cue),) * n))
        expected_forwards.add(("grpo", ((P, L + cue + 1),) * n))  # + the sampled score token
    # what the trainer's forward pass actually got: exactly these shapes, and nothing else
    assert {(m, tuple(shapes)) for m, shapes in forwarded} == expected_forwards
    # the base point (G=2, P=40, L=6) is measured once though it recurs: 5 distinct points,
    # each 1 warm-up + 1 measured step per method
    assert len(forwarded) == 5 * 2 * 2
    assert rows[0]["results"] == rows[5]["results"]

    saved = json.loads(json_out.read_text())
    assert saved["rows"][3]["prompt_tokens"] == 300
    assert saved["config"]["base"] == {"group_size": 2, "prompt_tokens": 40, "response_tokens": 6}
    assert plot_out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_sweep_cli_prints_the_table(tmp_path, capsys):
    dest, png = tmp_path / "s.json", tmp_path / "s.png"
    rc = main(
        [
            "bench",
            "sweep",
            "--model",
            "tiny",
            "--group-sizes",
            "3",
            "--prompt-tokens",
            "20",
            "--response-tokens",  # no values: this factor is skipped
            "--base-group-size",
            "2",
            "--base-prompt-tokens",
            "24",
            "--base-response-tokens",
            "5",
            "--prompts",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--lora",
            "--json",
            str(dest),
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(ln for ln in lines if ln.startswith("factor"))
    assert header.split("  ")[0] == "factor"
    for col in TABLE_HEADER:
        assert col in header
    assert any(ln.startswith("group_size ") for ln in lines)
    assert any(ln.startswith("prompt_tokens ") for ln in lines)
    assert not any(ln.startswith("response_tokens ") for ln in lines)
    out = json.loads(dest.read_text())
    assert out["config"]["lora"] is True and out["config"]["torch_threads"] == 1
    assert [(r["group_size"], r["prompt_tokens"], r["response_tokens"]) for r in out["rows"]] == [
        (3, 24, 5),
        (2, 20, 5),
    ]
    assert png.stat().st_size > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--group-sizes", "1"],  # a group needs 2 rollouts
        ["--group-sizes", "--prompt-tokens", "--response-tokens"],  # nothing to sweep
        ["--group-sizes", "2", "--warmup", "0"],  # no untimed step: no optimiser state to restore
    ],
)
def test_bench_sweep_cli_rejects_bad_sizes(argv, capsys):
    assert main(["bench", "sweep", "--model", "tiny", *argv]) == 2
    assert "error" in capsys.readouterr().err
