"""The G samples of a prompt share one prefill: the KV cache of each prompt is computed once and
repeated, and the next-token logits from it equal those of the prompts repeated G times."""

from __future__ import annotations

import pytest
import torch

from realjudge.inference.rollout import (
    OK,
    cache_kwarg,
    finish_rollout,
    generation_copy,
    generation_position_ids,
    sample,
    shared_prefill,
    stop_token_ids,
)
from realjudge.scoring.vocab import ScoreVocab

PROMPTS = [[5, 17, 42, 99, 7, 300, 12], [8, 1000, 23], [77, 66, 55, 44, 33]]
G = 3


def _left_pad(prompts, pad):
    P = max(map(len, prompts))
    ids = torch.full((len(prompts), P), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p) :] = torch.tensor(p)
        att[i, P - len(p) :] = 1
    return ids, att


def test_position_ids_skip_the_left_padding():
    att = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert generation_position_ids(att).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


@torch.no_grad()
def test_shared_prefill_gives_the_logits_of_unshared_prompts(tiny_model, tokenizer):
    model = tiny_model.float().eval()
    ids, att = _left_pad(PROMPTS, tokenizer.pad_token_id)
    # unshared: every prompt repeated G times, one forward pass over the whole prompt
    rep_ids, rep_att = ids.repeat_interleave(G, 0), att.repeat_interleave(G, 0)
    full = model(
        input_ids=rep_ids, attention_mask=rep_att, position_ids=generation_position_ids(rep_att)
    ).logits[:, -1]
    # shared: the prompts once (but their last token), the cache repeated, then the last token
    cache = shared_prefill(model, ids, att, G)
    assert cache.get_seq_length() == ids.shape[1] - 1
    step = model(
        input_ids=rep_ids[:, -1:],
        attention_mask=rep_att,
        position_ids=generation_position_ids(rep_att)[:, -1:],
        use_cache=True,
        **{cache_kwarg(model): cache},
    ).logits[:, -1]
    assert step.shape == full.shape == (len(PROMPTS) * G, model.config.vocab_size)
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)


def test_greedy_generation_is_the_same_with_and_without_shared_prefill(tiny_model, tokenizer):
    model = tiny_model.float()
    shared = sample(model, tokenizer, PROMPTS, num_samples=G, max_new_tokens=6, greedy=True)
    repeated = [p for p in PROMPTS for _ in range(G)]
    plain = sample(model, tokenizer, repeated, num_samples=1, max_new_tokens=6, greedy=True)
    assert len(shared) == len(PROMPTS) * G
    assert shared == plain


def _chain_model(tokenizer, chain):
    """A tiny Llama whose next token after ``chain[j]`` is ``chain[j + 1]`` (by a wide
    margin): the layers add nothing to the residual stream, ``chain[j]`` embeds as the j-th
    unit vector and an untied head maps it to its successor."""
    from realjudge.models import build_tiny_model

    assert len(set(chain[:-1])) == len(chain) - 1 < 64
    model = build_tiny_model(tokenizer, seed=0).float()
    head = torch.nn.Linear(64, model.config.vocab_size, bias=False)
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        head.weight.zero_()
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        for j, (a, b) in enumerate(zip(chain[:-1], chain[1:], strict=True)):
            model.model.embed_tokens.weight[a, j] = 1.0
            head.weight[b, j] = 10.0
    model.lm_head = head
    return model


@pytest.mark.parametrize("share", [True, False])
def test_seeded_sampled_rollouts_finish_and_parse(tokenizer, share):
    """Sampled rollouts (fixed seed, bf16 copy, with and without shared prefill) of a model
    that writes a feedback, the cue and a score end at the cue with the score read back."""
    vocab = ScoreVocab.from_tokenizer(tokenizer)
    text = tokenizer.encode("Feedback: fine. [RESULT] 4", add_special_tokens=False)
    model = _chain_model(tokenizer, text + [tokenizer.eos_token_id])
    kw = dict(
        num_samples=4,
        max_new_tokens=20,
        temperature=1.0,
        top_p=0.9,
        stop_strings=vocab.stop_strings,
        dtype=torch.bfloat16,
        share_prefill=share,
    )
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(sample(model, tokenizer, [text[:1], text[:2]], **kw))
    assert runs[0] == runs[1] and len(runs[0]) == 8
    stops = stop_token_ids(tokenizer, model)
    for j, gen in enumerate(runs[0]):
        r = finish_rollout(gen, tokenizer, vocab, stops)
        assert r.status == OK and r.sampled_score == 4, tokenizer.decode(gen)
        assert r.response_ids == text[1 + j // 4 : -1]


def test_generation_copy_follows_the_weights(tiny_model):
    copy = generation_copy(tiny_model, torch.bfloat16)
    assert next(copy.parameters()).dtype == torch.bfloat16
    assert next(tiny_model.parameters()).dtype == torch.float32
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(1.0)
    again = generation_copy(tiny_model, torch.bfloat16)
    assert again is copy
    for a, b in zip(again.parameters(), tiny_model.parameters(), strict=True):
        torch.testing.assert_close(a.float(), b.detach().bfloat16().float())
