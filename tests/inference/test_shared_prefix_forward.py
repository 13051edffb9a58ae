"""The forward with the prompt prefix common to a whole batch run once (``judge_forward(...,
share_prefix=True)``: a prompt template's system message and task description) gives the
full pass's token log-probs, score logits and gradients, up to float rounding; a batch whose
rows share fewer than ``MIN_SHARED_PREFIX`` leading tokens takes the full pass."""

from __future__ import annotations

import pytest
import torch

from realjudge.inference.batch import (
    MIN_SHARED_PREFIX,
    common_prefix_len,
    judge_forward,
    make_batch,
)
from realjudge.models import load_model

from ._shared_forward import assert_same_as_the_full_pass, embedded_shapes

TEMPLATE = list(range(100, 100 + MIN_SHARED_PREFIX + 4))  # 20 shared tokens
# prompts of different lengths after the template (left padding); one diverges at its first
# own token only; responses of different lengths (right padding), one empty
PROMPTS = [
    TEMPLATE + [5, 6, 7, 8, 9],
    TEMPLATE + [11, 12],
    TEMPLATE + [5, 40, 41, 42],
    TEMPLATE + [50],
]
RESPONSES = [[20, 21, 22], [23], [24, 25, 26, 27], []]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    lm = load_model("tiny", device="cpu", dtype="float32")
    lm.model.train()
    return lm


def test_common_prefix_len_aligns_left_padded_rows_at_their_prompt_start():
    batch = make_batch(PROMPTS, RESPONSES, pad_id=0)
    assert common_prefix_len(batch) == len(TEMPLATE)
    # identical prompts: every row keeps its last prompt token
    assert common_prefix_len(make_batch([PROMPTS[0]] * 2, RESPONSES[:2], 0)) == len(PROMPTS[0]) - 1
    assert common_prefix_len(make_batch([[1, 2, 3], [4, 2, 3]], [[7], [8]], 0)) == 0
    assert common_prefix_len(make_batch([PROMPTS[0]], [[7]], 0)) == 0  # one row
    assert common_prefix_len(make_batch([[1], [1, 2]], [[7], [8]], 0)) == 0  # nothing to spare


def test_shared_prefix_forward_equals_the_full_pass(tiny):
    model = tiny.model
    batch = make_batch(PROMPTS, RESPONSES, tiny.tokenizer.pad_token_id)
    assert_same_as_the_full_pass(model, batch, share_prefix=True)


def test_shared_prefix_runs_once_for_the_batch(tiny):
    batch = make_batch(PROMPTS, RESPONSES, tiny.tokenizer.pad_token_id)
    seen = embedded_shapes(tiny.model, lambda: judge_forward(tiny.model, batch, share_prefix=True))
    c, width = len(TEMPLATE), batch.input_ids.shape[1]
    assert seen == [(1, c), (len(PROMPTS), width - c)]


def test_a_short_common_prefix_takes_the_full_pass(tiny):
    short = [p[len(TEMPLATE) - MIN_SHARED_PREFIX + 1 :] for p in PROMPTS]
    batch = make_batch(short, RESPONSES, tiny.tokenizer.pad_token_id)
    assert common_prefix_len(batch) == MIN_SHARED_PREFIX - 1
    seen = embedded_shapes(tiny.model, lambda: judge_forward(tiny.model, batch, share_prefix=True))
    assert seen == [tuple(batch.input_ids.shape)]


def test_a_sliding_window_model_takes_the_full_pass():
    """A sliding window counts columns: in the shared-prefix layout a shorter row's own tokens
    sit further (in columns) from the cached prefix than in positions, so they would see
    less of it. A model with a window in any layer takes the full pass."""
    from transformers import LlamaConfig, MistralConfig, MistralForCausalLM, Qwen2Config

    from realjudge.inference.batch import uses_sliding_window

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=24,
    )
    model = MistralForCausalLM(config).eval()
    assert uses_sliding_window(model)
    batch = make_batch([TEMPLATE + list(range(1, 11)), TEMPLATE + [3]], [[5, 6], [6, 7]], 0)
    seen = embedded_shapes(model, lambda: judge_forward(model, batch, share_prefix=True))
    assert seen == [tuple(batch.input_ids.shape)]
    with torch.no_grad():
        full = judge_forward(model, batch)
        shared = judge_forward(model, batch, share_prefix=True)
    torch.testing.assert_close(shared.score_logits, full.score_logits, rtol=0, atol=0)
    # a Qwen config with the window switched off, and a Llama, share the prefix
    assert not uses_sliding_window(SimpleModel(Qwen2Config()))
    assert not uses_sliding_window(SimpleModel(LlamaConfig()))
    assert uses_sliding_window(
        SimpleModel(Qwen2Config(use_sliding_window=True, sliding_window=32, max_window_layers=0))
    )


class SimpleModel(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
