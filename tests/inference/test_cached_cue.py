"""A forced cue read from the generation's KV cache (:func:`logits_after_rollouts`) gives the
logits of a forward pass over prompt + feedback + cue, at any cut of the generated tokens."""

from __future__ import annotations

import pytest
import torch

from realjudge.inference.batch import judge_forward, make_batch
from realjudge.inference.rollout import (
    FORCED_CUE,
    GenerationState,
    Rollout,
    logits_after_rollouts,
    sample,
)

PROMPTS = [[5, 17, 42, 99, 7, 300, 12], [8, 1000, 23], [77, 66, 55, 44, 33]]
CUE = [61, 1700, 62]  # any tokens: what is appended after the cut


@pytest.mark.parametrize("num_samples", [1, 2])
def test_cue_after_any_cut_matches_a_forward_pass_over_prompt_and_response(
    tiny_model, tokenizer, num_samples
):
    model = tiny_model.float().eval()
    T = 6
    state = GenerationState()
    generated = sample(
        model,
        tokenizer,
        PROMPTS,
        num_samples=num_samples,
        max_new_tokens=T,
        greedy=True,
        state=state,
    )
    assert state.ready and all(len(g) == T for g in generated)
    n = len(generated)
    # cuts from nothing kept to every generated token kept (the last one never ran through
    # the model during generation); one row left out
    cuts = [0, 2, T - 1, T, 3, 1][:n]
    rows = [i for i in range(n) if i != 1]
    rollouts = [Rollout(generated[i][: cuts[i]] + CUE, cuts[i], FORCED_CUE, None, "") for i in rows]
    got = logits_after_rollouts(state, rows, rollouts)
    assert not state.ready  # the cache is consumed
    prompts = [PROMPTS[i // num_samples] for i in rows]
    batch = make_batch(prompts, [r.response_ids for r in rollouts], tokenizer.pad_token_id)
    with torch.no_grad():
        want = judge_forward(model, batch).score_logits
    assert got.shape == want.shape == (len(rows), model.config.vocab_size)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_an_empty_state_is_refused(tiny_model):
    with pytest.raises(ValueError, match="empty"):
        logits_after_rollouts(GenerationState(), [0], [Rollout(CUE, 0, FORCED_CUE, None, "")])


@pytest.mark.filterwarnings("error:.*past_key_values.*:FutureWarning")
def test_a_lora_model_reads_the_cue_from_its_own_cache(tiny_model, tokenizer):
    """Through a peft wrapper (whose ``forward`` names no cache argument) the cache reaches
    the model under the name the model takes (no deprecated alias): the same logits as the
    forward pass."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_model.float(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    ).eval()
    state = GenerationState()
    generated = sample(model, tokenizer, PROMPTS, max_new_tokens=4, greedy=True, state=state)
    rollouts = [Rollout(g[:2] + CUE, 2, FORCED_CUE, None, "") for g in generated]
    got = logits_after_rollouts(state, range(len(rollouts)), rollouts)
    batch = make_batch(PROMPTS, [r.response_ids for r in rollouts], tokenizer.pad_token_id)
    with torch.no_grad():
        want = judge_forward(model, batch).score_logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
