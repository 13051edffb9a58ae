"""The shared batch layout: padding never changes what a row's forward pass reads."""

import pytest
import torch

from realjudge.inference.batch import judge_forward, make_batch


def _unpadded(model, prompt, response):
    ids = torch.tensor([list(prompt) + list(response)])
    logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    P = len(prompt)
    token_lp = [logp[P - 1 + j, t].item() for j, t in enumerate(response)]
    return token_lp, logits[P - 1 + len(response)]


def test_layout_columns_and_masks():
    b = make_batch([[5, 6, 7], [8]], [[1, 2], []], pad_id=0, loss_lengths=[1, 0])
    assert b.prompt_len == 3 and b.response_len == 2
    assert b.input_ids.tolist() == [[5, 6, 7, 1, 2], [0, 0, 8, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 0, 0]]
    assert b.position_ids.tolist()[1][2] == 0  # a left-padded prompt still starts at 0
    assert b.response_mask.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert b.score_index.tolist() == [2, 0]


def test_score_index_out_of_range():
    with pytest.raises(ValueError):
        make_batch([[1]], [[2]], pad_id=0, score_index=[3])


@torch.no_grad()
def test_batched_forward_matches_each_row_alone(tiny_model):
    tiny_model.eval()
    prompts = [[11, 12, 13, 14, 15], [21, 22], [31, 32, 33]]
    responses = [[41, 42, 43], [51], []]
    batch = make_batch(prompts, responses, pad_id=2)
    out = judge_forward(tiny_model, batch, entropy=True)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        token_lp, score_logits = _unpadded(tiny_model, p, r)
        assert out.token_logprobs[i, : len(r)].tolist() == pytest.approx(token_lp, abs=1e-4)
        assert torch.allclose(out.score_logits[i], score_logits, atol=1e-4)
    assert out.token_entropy.shape == out.token_logprobs.shape


def test_score_position_inside_the_response(tiny_model):
    # A supervised target "feedback cue SCORE eos": the score is predicted after 3 tokens.
    tiny_model.eval()
    batch = make_batch([[11, 12]], [[41, 42, 43, 44, 45]], pad_id=2, score_index=[3])
    out = judge_forward(tiny_model, batch)
    _, expect = _unpadded(tiny_model, [11, 12], [41, 42, 43])
    assert torch.allclose(out.score_logits[0], expect, atol=1e-4)


def test_gradient_flows_to_both_outputs(tiny_model):
    batch = make_batch([[11, 12]], [[41, 42]], pad_id=2)
    out = judge_forward(tiny_model, batch)
    (out.token_logprobs.sum() + out.score_logits.logsumexp(-1).sum()).backward()
    grads = [p.grad for p in tiny_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
