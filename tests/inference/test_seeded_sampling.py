"""Per-row seeded sampling: each row's draws depend on its own seed only, from the same
distribution ``generate``'s sampling uses (temperature, then top-p)."""

from __future__ import annotations

import pytest
import torch

from realjudge.inference.rollout import (
    NucleusFilter,
    RowSeededSampler,
    nucleus_filter,
    row_seeds,
    sample,
    sampling_warpers,
)


@pytest.mark.parametrize("top_p_impl", ["topk", "sort"])
def test_draws_follow_the_temperature_top_p_distribution(top_p_impl):
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -9.0]])
    temperature, top_p = 0.7, 0.97
    probs = torch.softmax(logits / temperature, -1)[0]
    # top-p keeps the smallest head whose mass reaches top_p: here the first three tokens
    assert probs[:2].sum() < top_p <= probs[:3].sum()
    want = torch.zeros(5)
    want[:3] = probs[:3] / probs[:3].sum()
    n = 4000
    sampler = RowSeededSampler(list(range(n)), temperature, top_p, torch.device("cpu"), top_p_impl)
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


def _hf_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    from transformers import TopPLogitsWarper

    return TopPLogitsWarper(top_p)(torch.zeros(1, 1, dtype=torch.long), scores)


def test_nucleus_filter_keeps_what_transformers_top_p_keeps():
    g = torch.Generator().manual_seed(0)
    for scale in (0.3, 1.0, 4.0, 12.0):  # flat to peaked
        scores = torch.randn(16, 3000, generator=g) * scale
        for top_p in (0.1, 0.5, 0.9, 0.99):
            ours = nucleus_filter(scores, top_p, first_k=8)
            theirs = _hf_top_p(scores, top_p)
            assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), (scale, top_p)
            kept = ~torch.isinf(ours)
            assert torch.equal(ours[kept], scores[kept])


def test_nucleus_filter_grows_k_until_the_head_fits_and_passes_top_p_1():
    flat = torch.zeros(2, 1000)
    flat[1, 3] = 50.0  # one row peaked, one flat: the flat one needs 900 tokens
    out = nucleus_filter(flat, 0.9, first_k=4)
    assert (~torch.isinf(out[0])).sum() == 900
    assert (~torch.isinf(out[1])).sum() == 1 and not torch.isinf(out[1, 3])
    assert nucleus_filter(flat, 1.0) is flat
    with pytest.raises(ValueError, match="top_p"):
        NucleusFilter(0.0)
    with pytest.raises(ValueError, match="top_p_impl"):
        sampling_warpers(1.0, 0.9, "heap")


def test_a_rows_nucleus_draws_do_not_depend_on_the_other_rows():
    """A row's nucleus is found on its own: a flat row in the batch (whose nucleus needs a
    wide topk) does not change what a peaked row with ties at its edge draws."""
    g = torch.Generator().manual_seed(2)
    peaked = (torch.randn(1, 5000, generator=g) * 4).bfloat16().float()  # bf16 ties
    batch = torch.cat([peaked, torch.zeros(1, 5000)])
    ids = torch.zeros(2, 1, dtype=torch.long)
    whole = RowSeededSampler([7, 8], 1.0, 0.9, torch.device("cpu"))
    alone = RowSeededSampler([7], 1.0, 0.9, torch.device("cpu"))
    firsts = [int(whole(ids, batch).argmax(-1)[0]) for _ in range(30)]
    assert firsts == [int(alone(ids[:1], peaked).argmax(-1)[0]) for _ in range(30)]
    kept = ~torch.isinf(nucleus_filter(peaked, 0.9))
    assert all(bool(kept[0, t]) for t in firsts)  # only nucleus tokens are drawn
    assert len(set(firsts)) > 1


def test_unseeded_sampling_with_either_top_p_gives_the_same_rows(tiny_model, tokenizer):
    """Without row seeds ``generate`` draws over the whole vocabulary after the warpers, so
    the two nucleus searches give the same rows (fp32 logits: no ties at the edge)."""
    prompts = [tokenizer.encode(t) for t in ("Rate this answer:", "A longer prompt, to pad.")]
    common = dict(num_samples=3, max_new_tokens=8, temperature=0.8, top_p=0.9)
    rows = {}
    for impl in ("sort", "topk"):
        torch.manual_seed(3)
        rows[impl] = sample(tiny_model, tokenizer, prompts, top_p_impl=impl, **common)
    assert rows["topk"] == rows["sort"]
    assert len({tuple(r) for r in rows["topk"]}) > 1


def test_float_noise_that_reorders_equal_probabilities_does_not_change_the_draw():
    """Four nearly equal tokens hold the nucleus; their ``topk`` order flips between the two
    rows of logits (1e-6 apart), the draws do not."""
    base = torch.full((1, 100), -10.0)
    tokens = torch.tensor([10, 20, 30, 40])
    rising, falling = base.clone(), base.clone()
    rising[0, tokens] = 5.0 + 1e-6 * torch.arange(4.0)
    falling[0, tokens] = 5.0 - 1e-6 * torch.arange(4.0)
    ids = torch.zeros(1, 1, dtype=torch.long)
    draws = {}
    for name, logits in (("rising", rising), ("falling", falling)):
        sampler = RowSeededSampler([3], 1.0, 0.9, torch.device("cpu"))
        draws[name] = [int(sampler(ids, logits).argmax(-1)[0]) for _ in range(40)]
    assert draws["rising"] == draws["falling"]
    assert set(draws["rising"]) == set(tokens.tolist())
