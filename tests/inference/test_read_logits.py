"""The fused read-out of judge_forward (token log-probs + score row, one gradient buffer) gives
the values and gradients of the plain log_softmax / gather / index formulation."""

import pytest
import torch

from realjudge.inference.batch import _ReadLogits, judge_forward, make_batch


def _reference(logits, response_ids, score_index):
    R = response_ids.shape[1]
    logp = torch.log_softmax(logits[:, :R], dim=-1)
    tokens = logp.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    rows = torch.arange(logits.shape[0])
    return tokens, logits[rows, score_index]


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    N, R, V = 3, 4, 11
    logits = torch.randn(N, R + 1, V, generator=g, dtype=torch.float64) * 3
    response_ids = torch.randint(0, V, (N, R), generator=g)
    score_index = torch.tensor([R, 0, 2])  # after the response, score-only, inside it
    return logits, response_ids, score_index


@pytest.mark.parametrize("use", ["both", "tokens", "score"])
def test_values_and_gradients_match_the_plain_ops(use):
    logits, ids, si = _inputs()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    tok_a, score_a = _ReadLogits.apply(a, ids, si)
    tok_b, score_b = _reference(b, ids, si)
    assert torch.allclose(tok_a, tok_b) and torch.equal(score_a, score_b)
    g = torch.Generator().manual_seed(1)
    w_tok = torch.randn(tok_a.shape, generator=g, dtype=torch.float64)
    w_score = torch.randn(score_a.shape, generator=g, dtype=torch.float64)

    def objective(tok, score):
        parts = []
        if use in ("both", "tokens"):
            parts.append((w_tok * tok).sum())
        if use in ("both", "score"):
            parts.append((w_score * score).sum() + score.logsumexp(-1).sum())
        return sum(parts)

    objective(tok_a, score_a).backward()
    objective(tok_b, score_b).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-12)


def test_gradcheck():
    logits, ids, si = _inputs(2)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: _ReadLogits.apply(x, ids, si), (logits,))


def test_judge_forward_paths_agree_on_values_and_parameter_gradients(tiny_model):
    batch = make_batch([[11, 12, 13], [21]], [[41, 42], [51, 52, 53]], pad_id=2)
    grads = []
    for entropy in (False, True):  # fused read-out vs the plain ops (kept for the entropy)
        tiny_model.zero_grad(set_to_none=True)
        out = judge_forward(tiny_model, batch, entropy=entropy)
        loss = (out.token_logprobs * batch.response_mask).sum() + torch.softmax(
            out.score_logits, -1
        )[:, 17].sum()
        loss.backward()
        grads.append([p.grad.clone() for p in tiny_model.parameters()])
        if entropy:
            assert out.token_entropy is not None
    for g_fused, g_plain in zip(*grads, strict=True):
        assert torch.allclose(g_fused, g_plain, atol=1e-5, rtol=1e-4)
