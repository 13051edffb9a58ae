"""A forced cue read from the generation's KV cache (:func:`logits_after_rollouts`) gives the
logits of a forward pass over prompt + feedback + cue, at any cut of the generated tokens,
from a dynamic or a static cache; a static cache without room for the cue says so and the
judge reads those rows with a forward pass instead."""

from __future__ import annotations

import pytest
import torch

from realjudge.inference import rollout as rollout_module
from realjudge.inference.batch import judge_forward, make_batch
from realjudge.inference.rollout import (
    CUE_ROOM,
    FORCED_CUE,
    CacheFull,
    GenerationState,
    Rollout,
    logits_after_rollouts,
    sample,
)
from realjudge.inference.settings import JudgeConfig, resolve_kv_cache

PROMPTS = [[5, 17, 42, 99, 7, 300, 12], [8, 1000, 23], [77, 66, 55, 44, 33]]
CUE = [61, 1700, 62]  # any tokens: what is appended after the cut


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("num_samples", [1, 2])
def test_cue_after_any_cut_matches_a_forward_pass_over_prompt_and_response(
    tiny_model, tokenizer, num_samples, kv_cache
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
        kv_cache=kv_cache,
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


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.filterwarnings("error:.*past_key_values.*:FutureWarning")
def test_a_lora_model_reads_the_cue_from_its_own_cache(tiny_model, tokenizer, kv_cache):
    """Through a peft wrapper (whose ``forward`` names no cache argument) the cache reaches
    the model under the name the model takes (no deprecated alias): the same logits as the
    forward pass."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_model.float(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    ).eval()
    state = GenerationState()
    generated = sample(
        model, tokenizer, PROMPTS, max_new_tokens=4, greedy=True, state=state, kv_cache=kv_cache
    )
    rollouts = [Rollout(g[:2] + CUE, 2, FORCED_CUE, None, "") for g in generated]
    got = logits_after_rollouts(state, range(len(rollouts)), rollouts)
    batch = make_batch(PROMPTS, [r.response_ids for r in rollouts], tokenizer.pad_token_id)
    with torch.no_grad():
        want = judge_forward(model, batch).score_logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_static_cache_generates_what_a_dynamic_one_does(tiny_model, tokenizer):
    """Same greedy tokens, same recorded score-token logits (fp32), whichever cache."""
    from realjudge.inference.rollout import CueLogitsRecorder

    model = tiny_model.float().eval()
    got = {}
    for kv_cache in ("dynamic", "static"):
        recorder = CueLogitsRecorder([10, 11, 12])
        state = GenerationState()
        tokens = sample(
            model,
            tokenizer,
            PROMPTS,
            max_new_tokens=8,
            greedy=True,
            recorder=recorder,
            state=state,
            kv_cache=kv_cache,
        )
        got[kv_cache] = (tokens, recorder.result(), state)
    assert got["static"][0] == got["dynamic"][0]
    torch.testing.assert_close(got["static"][1], got["dynamic"][1], rtol=1e-4, atol=1e-4)
    P = max(len(p) for p in PROMPTS)
    assert got["static"][2].capacity == P + 8 + CUE_ROOM
    assert got["dynamic"][2].capacity is None


def test_a_cue_too_long_for_a_static_cache_is_refused_and_the_cache_kept(tiny_model, tokenizer):
    model = tiny_model.float().eval()
    state = GenerationState()
    generated = sample(
        model, tokenizer, PROMPTS, max_new_tokens=4, greedy=True, state=state, kv_cache="static"
    )
    too_long = [61] * (CUE_ROOM + 2)
    rollouts = [Rollout(g + too_long, len(g), FORCED_CUE, None, "") for g in generated]
    with pytest.raises(CacheFull):
        logits_after_rollouts(state, range(len(rollouts)), rollouts)
    assert state.ready  # nothing consumed
    fits = [Rollout(g + CUE, len(g), FORCED_CUE, None, "") for g in generated]
    assert logits_after_rollouts(state, range(len(fits)), fits).shape[0] == len(PROMPTS)


def test_the_judge_reads_a_cue_that_does_not_fit_with_a_forward_pass(
    tiny_model, tokenizer, monkeypatch
):
    """With no room after the generated tokens, every forced cue is read by a forward pass
    over prompt + feedback: the judge's scores are those of ``reread_cue``."""
    from realjudge.data.embedded import generate_embedded
    from realjudge.inference.judge import Judge

    records = generate_embedded("test", n=3)
    model = tiny_model.float().eval()

    def scores(**kw):
        cfg = JudgeConfig(cot=True, max_new_tokens=5, backend="transformers", progress=False)
        rows = Judge(model, tokenizer, JudgeConfig(**{**cfg.__dict__, **kw})).predict_all(records)
        assert all(r["status"] != "error" for r in rows)
        return [r["expected_score"] for r in rows]

    reread = scores(reread_cue=True, kv_cache="dynamic")
    monkeypatch.setattr(rollout_module, "CUE_ROOM", 0)
    no_room = scores(kv_cache="static")
    assert no_room == pytest.approx(reread, abs=1e-4)


def test_auto_kv_cache_is_static_on_a_cpu_only():
    assert resolve_kv_cache("auto", "cpu") == "static"
    assert resolve_kv_cache("auto", torch.device("cuda")) == "dynamic"
    assert resolve_kv_cache("dynamic", "cpu") == "dynamic"
    assert resolve_kv_cache("static", "cuda") == "static"
    with pytest.raises(ValueError, match="kv_cache"):
        resolve_kv_cache("paged", "cpu")
    with pytest.raises(ValueError, match="kv_cache"):
        JudgeConfig(kv_cache="paged")
