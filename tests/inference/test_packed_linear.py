"""Packed linear layers for inference on a CPU (realjudge.linear): in bf16 the same outputs as
``Linear`` -- logits and generated tokens -- in fp32 the same up to float rounding, where no
gradient is wanted and autocast is off; plain ``Linear`` where one is; the packed copy follows
in-place updates of the weight and is never copied."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from realjudge.inference.rollout import generation_copy
from realjudge.linear import (
    PACKED_DTYPES,
    PackedLinear,
    packing_available,
    packs_linears,
    use_packed_linears,
)
from realjudge.models import load_model

pytestmark = pytest.mark.skipif(not packing_available(), reason="no oneDNN linear packing")


def _layer(dtype: torch.dtype = torch.bfloat16) -> torch.nn.Linear:
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40).to(dtype)
    assert use_packed_linears(torch.nn.Sequential(layer)) == (dtype in PACKED_DTYPES)
    return layer


def test_packed_for_bf16_and_fp32_on_a_cpu():
    assert packs_linears("cpu", torch.bfloat16)
    assert packs_linears("cpu", torch.float32)
    assert not packs_linears("cpu", torch.float16)
    assert not packs_linears("meta", torch.bfloat16)
    assert type(_layer(torch.float16)) is torch.nn.Linear
    assert isinstance(load_model("tiny", device="cpu", dtype="float32").model.lm_head, PackedLinear)
    # a model to train keeps plain layers
    plain = load_model("tiny", device="cpu", dtype="float32", pack=False).model
    assert not any(isinstance(m, PackedLinear) for m in plain.modules())


@torch.no_grad()
def test_an_fp32_packed_layer_gives_linears_outputs_up_to_rounding():
    layer = _layer(torch.float32)
    x = torch.randn(3, 5, 24)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer._packed is not None  # used the packed copy


@torch.no_grad()
def test_under_autocast_it_is_a_plain_linear():
    """Autocast runs a fp32 layer's product in bf16: a packed fp32 product would bypass it."""
    layer = _layer(torch.float32)
    x = torch.randn(4, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        expected = F.linear(x, layer.weight, layer.bias)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)
    assert layer._packed is None


@torch.no_grad()
def test_a_packed_layer_gives_linears_outputs_and_follows_its_weight():
    layer = _layer()
    assert isinstance(layer, PackedLinear)
    x = torch.randn(3, 5, 24).to(torch.bfloat16)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    packed = layer._packed
    assert packed is not None and packed.is_mkldnn  # used the packed copy
    layer.weight.copy_(torch.randn(40, 24))  # an in-place update (the refreshed rollout copy)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer._packed is not packed  # repacked


def test_with_autograd_recording_it_is_a_plain_linear():
    layer = _layer()
    x = torch.randn(4, 24).to(torch.bfloat16)
    out = layer(x)
    assert layer._packed is None  # the weight wants a gradient: nothing packed
    out.float().sum().backward()
    assert layer.weight.grad is not None
    assert torch.equal(out, F.linear(x, layer.weight, layer.bias))


def test_copies_and_pickles_leave_the_packed_copy_behind():
    layer = _layer()
    x = torch.randn(2, 24).to(torch.bfloat16)
    with torch.no_grad():
        expected = layer(x)
    clone = copy.deepcopy(layer)  # an opaque packed tensor has no storage to copy
    again = pickle.loads(pickle.dumps(layer))
    for other in (clone, again):
        assert isinstance(other, PackedLinear) and other._packed is None
        with torch.no_grad():
            assert torch.equal(other(x), expected)
    assert set(layer.state_dict()) == {"weight", "bias"}


@torch.no_grad()
def test_a_packed_model_gives_the_same_logits_and_tokens(tiny_model):
    model = tiny_model.to(torch.bfloat16).eval()
    plain = copy.deepcopy(model)
    assert use_packed_linears(model) > 0 and isinstance(model.lm_head, PackedLinear)
    assert not any(isinstance(m, PackedLinear) for m in plain.modules())
    ids = torch.tensor([[5, 17, 42, 99, 3], [8, 1000, 23, 4, 5]])
    assert torch.equal(model(input_ids=ids).logits, plain(input_ids=ids).logits)
    assert model.lm_head._packed is not None  # the packed copies were used
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, **kw), plain.generate(ids, **kw))


@torch.no_grad()
def test_an_fp32_packed_model_gives_the_logits_up_to_rounding_and_the_same_tokens(tiny_model):
    model = tiny_model.float().eval()
    plain = copy.deepcopy(model)
    assert use_packed_linears(model) > 0 and isinstance(model.lm_head, PackedLinear)
    ids = torch.tensor([[5, 17, 42, 99, 3], [8, 1000, 23, 4, 5]])
    torch.testing.assert_close(model(input_ids=ids).logits, plain(input_ids=ids).logits)
    assert model.lm_head._packed is not None
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, **kw), plain.generate(ids, **kw))


def test_the_generation_copy_is_packed_and_repacked_after_a_refresh(tiny_model):
    model = tiny_model.float()
    gen = generation_copy(model, torch.bfloat16)
    assert isinstance(gen.lm_head, PackedLinear)
    assert not any(isinstance(m, PackedLinear) for m in model.modules())  # trains as before
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        before = gen(input_ids=ids).logits
        model.lm_head.weight.mul_(2.0)  # an optimiser step
        gen = generation_copy(model, torch.bfloat16)  # refreshed in place
        after = gen(input_ids=ids).logits
        fresh = copy.deepcopy(model).to(torch.bfloat16)(input_ids=ids).logits
    assert not torch.equal(before, after)
    assert torch.equal(after, fresh)
