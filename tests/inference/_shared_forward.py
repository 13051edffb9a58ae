"""What the shared-prompt and shared-prefix forward tests both check: the shared pass against
the full pass (outputs and gradients), and which shapes went through the model."""

from __future__ import annotations

import torch

from realjudge.inference.batch import judge_forward


def forward_and_grads(model, batch, **kwargs):
    """``judge_forward(model, batch, **kwargs)`` and the parameter gradients of a loss that
    reads every output (the response tokens' log-probs and the score logits)."""
    model.zero_grad()
    fwd = judge_forward(model, batch, **kwargs)
    mask = batch.response_mask
    loss = (fwd.token_logprobs * mask).sum() + fwd.score_logits[:, :64].logsumexp(-1).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return fwd, grads


def assert_same_as_the_full_pass(model, batch, **shared_kwargs):
    """The pass with ``shared_kwargs`` gives the full pass's outputs and gradients up to
    float rounding."""
    full, g_full = forward_and_grads(model, batch)
    shared, g_shared = forward_and_grads(model, batch, **shared_kwargs)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(
        shared.token_logprobs[mask], full.token_logprobs[mask], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(shared.score_logits, full.score_logits, rtol=1e-5, atol=1e-5)
    assert g_full.keys() == g_shared.keys() and g_full
    for name, g in g_full.items():
        torch.testing.assert_close(g_shared[name], g, rtol=1e-4, atol=1e-4, msg=name)


def embedded_shapes(model, fn) -> list[tuple[int, int]]:
    """The ``input_ids`` shape of every forward call ``fn()`` makes through ``model``."""
    seen: list[tuple[int, int]] = []
    handle = model.model.embed_tokens.register_forward_hook(
        lambda _m, args, _out: seen.append(tuple(args[0].shape))
    )
    try:
        fn()
    finally:
        handle.remove()
    return seen
