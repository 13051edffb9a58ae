"""The training forward with each group's prompt run once (``judge_forward(...,
group_size=G)``) gives the full pass's token log-probs, score logits and gradients, up to
float rounding; rows that are not laid out in groups of one prompt take the full pass."""

from __future__ import annotations

import pytest
import torch

from realjudge.inference.batch import judge_forward, make_batch, shares_prompts
from realjudge.models import load_model

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


def _forward_and_grads(model, batch, group_size):
    model.zero_grad()
    fwd = judge_forward(model, batch, group_size=group_size)
    mask = batch.response_mask
    loss = (fwd.token_logprobs * mask).sum() + fwd.score_logits[:, :64].logsumexp(-1).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return fwd, grads


def test_shared_prompt_forward_equals_the_full_pass(tiny):
    model = tiny.model
    batch = _batch(tiny.tokenizer.pad_token_id)
    assert shares_prompts(batch, G)
    full, g_full = _forward_and_grads(model, batch, 1)
    shared, g_shared = _forward_and_grads(model, batch, G)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(
        shared.token_logprobs[mask], full.token_logprobs[mask], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(shared.score_logits, full.score_logits, rtol=1e-5, atol=1e-5)
    assert g_full.keys() == g_shared.keys() and g_full
    for name, g in g_full.items():
        torch.testing.assert_close(g_shared[name], g, rtol=1e-4, atol=1e-4, msg=name)


def test_shared_prompt_forward_runs_each_prompt_once(tiny, monkeypatch):
    model = tiny.model
    batch = _batch(tiny.tokenizer.pad_token_id)
    seen: list[tuple[int, int]] = []
    handle = model.model.embed_tokens.register_forward_hook(
        lambda _m, args, _out: seen.append(tuple(args[0].shape))
    )
    try:
        judge_forward(model, batch, group_size=G)
    finally:
        handle.remove()
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
