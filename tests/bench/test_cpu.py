"""`realjudge bench cpu` on the tiny model with tiny shapes: it prints its four lines, in order,
and writes them with the command line to --json. No timing assertions (the machines are
shared); the figures are only checked to be positive and finite."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from realjudge.bench.cpu import fraction_of_bound, step_shapes, weight_bytes
from realjudge.cli import main
from realjudge.train.config import PRESETS

LINES = [
    r"rollout speedup \(fast/fp32\): (\S+)",
    r"train speedup \(fast/fp32\): (\S+)",
    r"eval speedup \(fast/fp32\): (\S+)",
    r"decode fraction of bandwidth bound: (\S+)",
]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_step_shapes_are_the_presets():
    v = PRESETS["cpu-embedded"]["real"]
    s = step_shapes("cpu-embedded")
    assert (s["prompts"], s["group_size"], s["max_new_tokens"]) == (
        v["batch_size"],
        v["num_generations"],
        v["max_new_tokens"],
    )
    assert s["freeze_layers"] == v.get("freeze_layers", 0) == 0


def test_fraction_of_bound():
    # 1 GB of weights in 0.5 s is 2 GB/s; against a 8 GB/s copy: a quarter of the bound
    assert fraction_of_bound(10**9, 0.5, 8e9) == pytest.approx(0.25)


def test_weight_bytes_counts_a_tied_embedding_once(tiny_model):
    assert tiny_model.lm_head.weight.data_ptr() == tiny_model.model.embed_tokens.weight.data_ptr()
    unique = {p.data_ptr(): p for p in tiny_model.parameters()}
    assert weight_bytes(tiny_model) == sum(p.numel() * 4 for p in unique.values())
    assert weight_bytes(tiny_model.to(torch.bfloat16)) == sum(
        p.numel() * 2 for p in unique.values()
    )


def test_bench_cpu_prints_four_lines_and_writes_json(tmp_path, capsys, monkeypatch):
    import realjudge.data.loaders as loaders
    import realjudge.inference.rollout as rollout

    seeds: dict[str, list] = {"data": [], "rows": []}  # --seed reaches the data and the draws
    load, sample = loaders.load_records, rollout.sample
    monkeypatch.setattr(
        loaders,
        "load_records",
        lambda *a, **k: seeds["data"].append(k.get("seed")) or load(*a, **k),
    )
    monkeypatch.setattr(
        rollout,
        "sample",
        lambda *a, **k: seeds["rows"].append(k.get("prompt_seeds")) or sample(*a, **k),
    )
    dest = tmp_path / "cpu.json"
    argv = [
        "bench",
        "cpu",
        "--model",
        "tiny",
        "--dtype",
        "bf16",
        "--prompts",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--eval-items",
        "2",
        "--eval-batch-size",
        "2",
        "--repeats",
        "1",
        "--train-repeats",
        "1",
        "--freeze-layers",
        "1",
        "--kv-cache",
        "dynamic",
        "--json",
        str(dest),
        "--seed",
        "3",
    ]
    assert main(argv) == 0
    assert seeds["data"] and set(seeds["data"]) == {3}
    assert [1 for s in seeds["rows"] if s is not None]  # the rollouts' rows are seeded
    assert all(s != [0, 1] for s in seeds["rows"] if s is not None)  # from --seed
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    figures = []
    assert len(lines) >= 4
    for pattern, line in zip(LINES, lines[-4:], strict=True):
        m = re.fullmatch(pattern, line)
        assert m, (pattern, line)
        figures.append(float(m.group(1)))
    assert all(math.isfinite(f) and f > 0 for f in figures), figures
    out = json.loads(dest.read_text())
    assert out["kind"] == "cpu"
    assert out["command"].startswith("realjudge bench cpu --model tiny")
    assert re.fullmatch(r"[0-9a-f]{4,}(\+dirty)?|unknown", out["commit"]), out["commit"]
    speedups = out["speedups"]
    got = [speedups["rollout"], speedups["train"], speedups["eval"]]
    got.append(out["decode_fraction_of_bandwidth_bound"])
    assert [round(v, 2) for v in got] == figures
    assert out["config"]["fast_dtype"] == "bfloat16"
    assert out["config"]["prompts"] == 2 and out["config"]["group_size"] == 2
    assert out["rollout"]["rows"] == 4
    assert out["decode"]["dtype"] == "bfloat16"
    assert out["config"]["freeze_layers"] == 1
    assert out["config"]["kv_cache"] == "dynamic"
    assert out["eval"]["kv_cache"] == {"fp32": "dynamic", "fast": "dynamic"}
    assert out["environment"]["cpu_bf16_features"] == sorted(
        out["environment"]["cpu_bf16_features"]
    )
    # one uncounted harness first, then one timed step per arm and round
    train = out["train"]
    assert train["first_harness_s"] > 0
    assert len(train["fp32_step_s"]) == len(train["fast_step_s"]) == 1


def test_train_harness_freezes_the_lower_layers():
    from realjudge.bench.cpu import _harness, step_shapes

    shapes = {**step_shapes(), "prompts": 1, "group_size": 2, "max_new_tokens": 4}
    with _harness("tiny", "embedded", {**shapes, "freeze_layers": 1}, "no", 0) as h:
        layers = h.acc.unwrap_model(h.net).model.layers
        assert not any(p.requires_grad for p in layers[0].parameters())
        assert all(p.requires_grad for p in layers[1].parameters())
        trained = {id(p) for p in h.trainable}
        assert not any(id(p) in trained for p in layers[0].parameters())


@pytest.mark.parametrize(("dtype", "zero"), [("bf16", False), ("fp32", True)])
def test_bench_precision_compares_the_two_precisions(tmp_path, capsys, dtype, zero):
    dest = tmp_path / "precision.json"
    argv = ["bench", "precision", "--model", "tiny", "--n", "4", "--dtype", dtype]
    assert main([*argv, "--json", str(dest)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    m = re.fullmatch(r"rail expected score mean abs difference \(fast vs fp32\): (\S+)", line)
    assert m, line
    out = json.loads(dest.read_text())
    assert out["n_compared"] == 4 and out["kind"] == "precision"
    fp32, fast = out["expected_scores"]["fp32"], out["expected_scores"]["fast"]
    diffs = [abs(a - b) for a, b in zip(fp32, fast, strict=True)]
    assert out["mean_abs_difference"] == pytest.approx(sum(diffs) / 4)
    if zero:  # the same precision twice: the same scores
        assert out["mean_abs_difference"] == 0.0
    else:  # bf16 moves the scores, a little
        assert 0.0 < out["mean_abs_difference"] < 0.5
