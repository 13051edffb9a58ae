"""Per-row seeded sampling: each row's draws depend on its own seed only, from the same
distribution ``generate``'s sampling uses (temperature, then top-p)."""

from __future__ import annotations

import torch

from realjudge.inference.rollout import RowSeededSampler, row_seeds, sample


def test_draws_follow_the_temperature_top_p_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -9.0]])
    temperature, top_p = 0.7, 0.97
    probs = torch.softmax(logits / temperature, -1)[0]
    # top-p keeps the smallest head whose mass reaches top_p: here the first three tokens
    assert probs[:2].sum() < top_p <= probs[:3].sum()
    want = torch.zeros(5)
    want[:3] = probs[:3] / probs[:3].sum()
    n = 4000
    sampler = RowSeededSampler(list(range(n)), temperature, top_p, torch.device("cpu"))
    out = sampler(torch.zeros(n, 1, dtype=torch.long), logits.expand(n, -1).clone())
    assert torch.isinf(out).sum(dim=1).eq(4).all()  # exactly one token left per row
    picks = out.argmax(-1)
    freq = torch.bincount(picks, minlength=5).float() / n
    assert freq[3:].sum() == 0  # the tail beyond top-p is never drawn
    assert torch.allclose(freq, want, atol=0.03)


def test_a_rows_draws_do_not_depend_on_the_other_rows():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(1))
    ids = torch.zeros(6, 1, dtype=torch.long)
    whole = RowSeededSampler(list(range(6)), 1.0, 1.0, torch.device("cpu"))
    alone = RowSeededSampler([4], 1.0, 1.0, torch.device("cpu"))
    firsts, lasts = [], []
    for _ in range(20):
        firsts.append(int(whole(ids, logits).argmax(-1)[4]))
        lasts.append(int(alone(ids[4:5], logits[4:5]).argmax(-1)[0]))
    assert firsts == lasts
    assert len(set(firsts)) > 1  # it does sample


def test_row_seeds_are_per_prompt_and_sample():
    seeds = row_seeds([7, 8], 3)
    assert len(seeds) == len(set(seeds)) == 6
    assert row_seeds([8], 3) == seeds[3:]


def test_generate_gives_a_prompt_the_same_samples_in_any_batch(tiny_model, tokenizer):
    prompts = [tokenizer.encode(t) for t in ("Rate this answer:", "A longer prompt, to pad.", "x")]
    common = dict(num_samples=3, max_new_tokens=8, temperature=1.0, top_p=0.95)
    together = sample(tiny_model, tokenizer, prompts, prompt_seeds=[11, 12, 13], **common)
    alone = sample(tiny_model, tokenizer, prompts[1:2], prompt_seeds=[12], **common)
    unshared = sample(
        tiny_model, tokenizer, prompts[1:2], prompt_seeds=[12], share_prefill=False, **common
    )
    assert together[3:6] == alone == unshared
    assert len({tuple(r) for r in together}) > 1  # the samples differ
    other_seed = sample(tiny_model, tokenizer, prompts[1:2], prompt_seeds=[99], **common)
    assert other_seed != alone
