"""The training forward with each group's prompt run once (``judge_forward(...,
group_size=G)``) gives the full pass's token log-probs, score logits and gradients, up to
float rounding; rows that are not laid out in groups of one prompt take the full pass."""

from __future__ import annotations

import pytest
import torch

from realjudge.inference.batch import judge_forward, make_batch, shares_prompts
from realjudge.models import load_model

from ._shared_forward import assert_same_as_the_full_pass, embedded_shapes

G = 3
# two prompts of different lengths (left padding), responses of different lengths (right
# padding), one empty
PROMPTS = [[5, 6, 7, 8, 9], [11, 12, 13]]
RESPONSES = [[20, 21, 22], [23], [24, 25, 26, 27], [30, 31], [32, 33, 34, 35, 36], []]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    lm = load_model("tiny", device="cpu", dtype="float32")
    lm.model.train()
    return lm


def _batch(pad_id: int, prompts=PROMPTS, group_size: int = G):
    rows = [p for p in prompts for _ in range(group_size)]
    return make_batch(rows, RESPONSES[: len(rows)], pad_id)


def test_shared_prompt_forward_equals_the_full_pass(tiny):
    model = tiny.model
    batch = _batch(tiny.tokenizer.pad_token_id)
    assert shares_prompts(batch, G)
    assert_same_as_the_full_pass(model, batch, group_size=G)


def test_shared_prompt_forward_runs_each_prompt_once(tiny, monkeypatch):
    model = tiny.model
    batch = _batch(tiny.tokenizer.pad_token_id)
    seen = embedded_shapes(model, lambda: judge_forward(model, batch, group_size=G))
    P, R = batch.prompt_len, batch.response_len
    # the prompts but their last column once, then every row from that column on
    assert seen == [(len(PROMPTS), P - 1), (len(PROMPTS) * G, R + 1)]


def test_rows_not_in_groups_of_one_prompt_take_the_full_pass(tiny):
    pad = tiny.tokenizer.pad_token_id
    # rows 0-2 share a prompt, rows 3-5 do not
    mixed = make_batch([PROMPTS[0]] * 3 + [PROMPTS[1], PROMPTS[0], PROMPTS[1]], RESPONSES, pad)
    assert not shares_prompts(mixed, G)
    assert not shares_prompts(_batch(pad), 4)  # 6 rows are not groups of 4
    assert not shares_prompts(_batch(pad), 1)
    assert not shares_prompts(make_batch([[5]] * G, RESPONSES[:G], pad), G)  # nothing to cache
    full = judge_forward(tiny.model, mixed, group_size=1)
    same = judge_forward(tiny.model, mixed, group_size=G)
    torch.testing.assert_close(same.score_logits, full.score_logits, rtol=0, atol=0)
