"""Precision on CPU: bf16 where the processor computes it natively, fp32 elsewhere, the user's
choice always first; training keeps fp32 master weights and computes losses and the RAIL
softmax in fp32 under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

import realjudge.models as models
from realjudge.models import (
    cpu_supports_bf16,
    generation_dtype,
    pick_dtype,
    pick_mixed_precision,
)

CPU = torch.device("cpu")


AMD, INTEL = "AuthenticAMD", "GenuineIntel"


@pytest.mark.parametrize(
    ("machine", "flags", "capability", "vendor", "expected"),
    [
        ("x86_64", ["fpu", "avx2", "avx512f", "avx512_bf16"], "AVX512", AMD, True),
        ("AMD64", ["AVX512_BF16"], None, AMD, True),
        ("x86_64", ["avx2", "amx_tile", "amx_bf16", "avx512_bf16"], "AVX512", INTEL, True),
        # avx512_bf16 without AMX on Intel: measured slower than fp32
        ("x86_64", ["avx512f", "avx512_bf16", "avx512_fp16"], "AVX512", INTEL, False),
        ("x86_64", ["avx512_bf16"], "AVX512", None, False),
        ("x86_64", ["avx2", "avx512f", "avx512_vnni"], "AVX512", AMD, False),
        ("x86_64", ["avx2"], "AVX2", AMD, False),
        ("aarch64", ["fp", "asimd", "bf16", "i8mm"], "SVE256", None, True),
        ("arm64", ["bf16"], None, None, True),
        ("aarch64", ["fp", "asimd", "sve"], "SVE256", None, False),
        # the flag alone is not enough when torch has no vector kernels at all
        ("x86_64", ["amx_bf16"], "DEFAULT", INTEL, False),
        # an x86 flag on an ARM machine (or the other way round) means nothing
        ("aarch64", ["avx512_bf16", "amx_bf16"], None, AMD, False),
        ("x86_64", ["bf16"], None, AMD, False),
        ("riscv64", ["bf16"], None, None, False),
        ("x86_64", [], None, AMD, False),
    ],
)
def test_bf16_detection_from_flags(machine, flags, capability, vendor, expected):
    assert cpu_supports_bf16(machine, flags, capability, vendor) is expected


def test_this_machine_is_detected_from_its_own_flags():
    import platform

    vendor, flags = models._cpu_info()
    capability = torch.backends.cpu.get_cpu_capability()
    want = cpu_supports_bf16(platform.machine(), flags, capability, vendor)
    assert models.native_cpu_bf16() is want


def test_auto_dtype_follows_the_cpu():
    assert pick_dtype(CPU, None, cpu_bf16=True) == torch.bfloat16
    assert pick_dtype(CPU, "auto", cpu_bf16=True) == torch.bfloat16
    assert pick_dtype(CPU, None, cpu_bf16=False) == torch.float32  # fallback
    assert pick_dtype(CPU, "auto", cpu_bf16=False) == torch.float32


def test_explicit_dtype_overrides_the_detection():
    assert pick_dtype(CPU, "float32", cpu_bf16=True) == torch.float32
    assert pick_dtype(CPU, "fp32", cpu_bf16=True) == torch.float32
    assert pick_dtype(CPU, "bf16", cpu_bf16=False) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype(CPU, "float8")


def test_auto_dtype_uses_the_detection_by_default(monkeypatch):
    monkeypatch.setattr(models, "native_cpu_bf16", lambda: True)
    assert pick_dtype(CPU) == torch.bfloat16
    monkeypatch.setattr(models, "native_cpu_bf16", lambda: False)
    assert pick_dtype(CPU) == torch.float32


@pytest.mark.parametrize(
    ("native", "train", "evaluation", "attention"),
    [(True, "bf16", "bfloat16", "realjudge_cpu_decode"), (False, "no", "float32", "sdpa")],
)
def test_runtime_environment_says_what_auto_resolves_to(
    monkeypatch, native, train, evaluation, attention
):
    monkeypatch.setattr(models, "native_cpu_bf16", lambda: native)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    env = models.runtime_environment("cpu")
    assert env["train_mixed_precision"] == train and env["eval_dtype"] == evaluation
    assert env["cpu_fast_bf16"] is native and env["gpu"] is None
    assert env["decode_attention"] == attention
    assert env["threads"] == torch.get_num_threads() and env["torch"] == torch.__version__
    # an explicit choice is recorded as it is
    assert models.runtime_environment("cpu", "fp16")["train_mixed_precision"] == "fp16"
    # oneDNN's instruction-set cap is recorded when set (an AMX machine run as an EPYC)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert "onednn_max_cpu_isa" not in models.runtime_environment("cpu")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert models.runtime_environment("cpu")["onednn_max_cpu_isa"] == "AVX512_CORE_BF16"


def test_mixed_precision_auto_on_cpu():
    assert pick_mixed_precision(False, cpu_bf16=True) == "bf16"
    assert pick_mixed_precision(False, cpu_bf16=False) == "no"


def test_rollouts_sample_in_bf16_only_on_a_bf16_cpu_run():
    assert generation_dtype("bf16", "cpu") == torch.bfloat16
    assert generation_dtype("bf16", CPU) == torch.bfloat16
    assert generation_dtype("no", "cpu") is None
    assert generation_dtype("bf16", "cuda:0") is None


def _config(tmp_path, **over):
    from realjudge.train import build_config

    return build_config(
        "real", overrides=dict(model="tiny", device="cpu", out=str(tmp_path), **over)
    )


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "no")])
def test_make_accelerator_auto(tmp_path, monkeypatch, native, expected):
    from realjudge.train.trainer import _release, make_accelerator

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(models, "native_cpu_bf16", lambda: native)
    acc = make_accelerator(_config(tmp_path))
    try:
        assert acc.mixed_precision == expected
    finally:
        _release(acc)


def test_make_accelerator_respects_an_explicit_choice(tmp_path, monkeypatch):
    from realjudge.train.trainer import _release, make_accelerator

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(models, "native_cpu_bf16", lambda: True)
    acc = make_accelerator(_config(tmp_path, mixed_precision="no"))
    try:
        assert acc.mixed_precision == "no"
    finally:
        _release(acc)


def test_bf16_training_keeps_fp32_weights_logits_and_losses(tmp_path, tiny_model, tokenizer):
    """Under the fast path's accelerate bf16 autocast the matmuls run in bf16 (the logits move
    away from fp32's) while weights, read-out logits, the RAIL softmax and the REAL loss stay
    fp32, and the gradients reach the fp32 weights."""
    from realjudge.inference.batch import judge_forward, make_batch
    from realjudge.methods.losses import real_loss
    from realjudge.scoring.rail import score_distribution
    from realjudge.scoring.vocab import ScoreVocab
    from realjudge.train.trainer import _release, make_accelerator

    model = tiny_model.float()
    vocab = ScoreVocab.from_tokenizer(tokenizer)
    prompts = [[5, 17, 42, 99], [8, 1000, 23]] * 2
    responses = [[7, 8, 9], [10, 11], [12], [13, 14, 15]]
    batch = make_batch(prompts, responses, tokenizer.pad_token_id)
    with torch.no_grad():
        ref = judge_forward(model, batch).score_logits
    acc = make_accelerator(_config(tmp_path, mixed_precision="bf16"))
    try:
        net = acc.prepare(model)
        out = judge_forward(net, batch)
        assert next(net.parameters()).dtype == torch.float32
        assert out.token_logprobs.dtype == out.score_logits.dtype == torch.float32
        assert not torch.equal(out.score_logits.detach(), ref)
        torch.testing.assert_close(out.score_logits.detach(), ref, atol=0.1, rtol=0.05)
        ids = torch.tensor(vocab.token_ids)
        probs, _ = score_distribution(out.score_logits, ids)
        assert probs.dtype == torch.float32
        gold = torch.tensor([1.0, 5.0, 3.0, 2.0])
        scores = torch.tensor(vocab.scores, dtype=torch.float32)
        loss, _ = real_loss(out.token_logprobs, batch.response_mask, probs, scores, gold, 2)
        assert loss.dtype == torch.float32
        acc.backward(loss)
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 for g in grads)
    finally:
        _release(acc)
