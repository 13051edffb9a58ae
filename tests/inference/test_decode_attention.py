"""The CPU decode attention (realjudge.attention): a one-token query gives ``eager``'s numbers
without copying the key/value cache per head; everything else is ``sdpa``'s; it is chosen for
bf16 weights on a CPU only, and the generation copy uses it while the trained model keeps its
own attention."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.llama.modeling_llama import eager_attention_forward

from realjudge.attention import (
    CPU_DECODE_ATTENTION,
    decode_attention,
    grouped_decode_attention,
    use_decode_attention,
)
from realjudge.inference.rollout import cache_kwarg, generation_copy, returned_cache
from realjudge.models import load_model


class _Attention(torch.nn.Module):
    """What the attention functions read from their module: 6 query heads on 2 key heads."""

    num_key_value_groups = 3
    is_causal = True


def _inputs(dtype: torch.dtype, q: int = 1, length: int = 11):
    g = torch.Generator().manual_seed(0)
    query = torch.randn(3, 6, q, 8, generator=g).to(dtype)
    key = torch.randn(3, 2, length, 8, generator=g).to(dtype)
    value = torch.randn(3, 2, length, 8, generator=g).to(dtype)
    seen = torch.ones(3, 1, q, length, dtype=torch.bool)
    seen[0, ..., :4] = False  # a left-padded row
    return query, key, value, seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [True, False])
def test_a_one_token_query_gives_eagers_numbers(dtype, masked):
    module = _Attention().eval()
    query, key, value, seen = _inputs(dtype)
    additive = torch.zeros(seen.shape, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)
    ours, _ = grouped_decode_attention(
        module, query, key, value, seen if masked else None, scaling=0.3
    )
    eager, _ = eager_attention_forward(
        module, query, key, value, additive if masked else None, scaling=0.3
    )
    assert ours.shape == eager.shape == (3, 1, 6, 8)
    torch.testing.assert_close(ours, eager, rtol=0, atol=0)
    # the masked positions are not read: changing them changes nothing
    if masked:
        key2, value2 = key.clone(), value.clone()
        key2[0, :, :4], value2[0, :, :4] = 100.0, -100.0
        again, _ = grouped_decode_attention(module, query, key2, value2, seen, scaling=0.3)
        torch.testing.assert_close(again, ours, rtol=0, atol=0)


def test_longer_queries_and_training_are_sdpas():
    module = _Attention().eval()
    query, key, value, seen = _inputs(torch.float32, q=11)
    seen = seen & torch.ones(11, 11, dtype=torch.bool).tril()
    ours, _ = grouped_decode_attention(module, query, key, value, seen, scaling=0.3)
    sdpa, _ = sdpa_attention_forward(module, query, key, value, seen, scaling=0.3)
    torch.testing.assert_close(ours, sdpa, rtol=0, atol=0)
    module.train()
    query, key, value, seen = _inputs(torch.float32)
    ours, _ = grouped_decode_attention(module, query, key, value, seen, scaling=0.3)
    sdpa, _ = sdpa_attention_forward(module, query, key, value, seen, scaling=0.3)
    torch.testing.assert_close(ours, sdpa, rtol=0, atol=0)


def test_chosen_for_bf16_on_a_cpu_only():
    assert decode_attention("cpu", torch.bfloat16) == CPU_DECODE_ATTENTION
    assert decode_attention("cpu", torch.float32) is None
    assert decode_attention(torch.device("cuda"), torch.bfloat16) is None


def test_loaded_bf16_models_decode_with_it_and_fp32_ones_keep_sdpa():
    assert load_model("tiny", device="cpu", dtype="bf16").model.config._attn_implementation == (
        CPU_DECODE_ATTENTION
    )
    assert load_model("tiny", device="cpu", dtype="fp32").model.config._attn_implementation == (
        "sdpa"
    )


def test_the_generation_copy_uses_it_and_the_trained_model_keeps_its_own(tiny_model):
    model = tiny_model.float()
    model.set_attn_implementation("sdpa")
    gen = generation_copy(model, torch.bfloat16)
    assert gen.config._attn_implementation == CPU_DECODE_ATTENTION
    assert model.config._attn_implementation == "sdpa"
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    assert use_decode_attention(eager) == "eager"  # a model loaded with another attention


@torch.no_grad()
def test_a_decode_step_of_the_model_gives_eagers_logits(tiny_model):
    """The same cache, one new token: the model with this attention and with ``eager``
    agree exactly (bf16)."""
    model = tiny_model.to(torch.bfloat16).eval()
    ids = torch.tensor([[0, 0, 5, 17, 42, 99], [8, 1000, 23, 4, 5, 6]])
    att = (torch.arange(6) >= torch.tensor([[2], [0]])).long()
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    model.set_attn_implementation("sdpa")
    prefill = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True)
    step_ids, step_att = torch.tensor([[7], [9]]), torch.cat([att, torch.ones(2, 1).long()], 1)
    logits = {}
    for impl in ("eager", CPU_DECODE_ATTENTION):
        use = "eager" if impl == "eager" else "sdpa"
        model.set_attn_implementation(use)
        if impl != "eager":
            assert use_decode_attention(model) == CPU_DECODE_ATTENTION
        out = model(
            input_ids=step_ids,
            attention_mask=step_att,
            position_ids=pos[:, -1:] + 1,
            use_cache=True,
            **{cache_kwarg(model): copy.deepcopy(returned_cache(prefill))},
        )
        logits[impl] = out.logits[:, -1].float()
    torch.testing.assert_close(logits[CPU_DECODE_ATTENTION], logits["eager"], rtol=0, atol=0)
