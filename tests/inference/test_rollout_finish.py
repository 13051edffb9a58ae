"""Cutting sampled feedbacks at the score cue, and forcing the cue when it is missing."""

from realjudge.inference.rollout import (
    FORCED_CUE,
    OK,
    RETOKENIZED_CUE,
    finish_rollout,
    stop_token_ids,
)
from realjudge.scoring.vocab import ScoreVocab


def _enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_cut_after_cue_and_read_the_sampled_score(tokenizer):
    v = ScoreVocab.from_tokenizer(tokenizer)
    gen = _enc(tokenizer, "Feedback: two items are missing. [RESULT] 3") + [tokenizer.eos_token_id]
    gen += _enc(tokenizer, " trailing junk")
    r = finish_rollout(gen, tokenizer, v, stop_token_ids(tokenizer))
    assert r.status == OK and r.sampled_score == 3
    assert r.feedback == "Feedback: two items are missing. [RESULT] "
    assert (
        r.n_sampled == len(r.response_ids) == len(gen) - len(_enc(tokenizer, "3 trailing junk")) - 1
    )


def test_generation_stopped_right_at_the_cue(tokenizer):
    v = ScoreVocab.from_tokenizer(tokenizer)
    gen = _enc(tokenizer, "Feedback: fine. [RESULT] ")
    r = finish_rollout(gen, tokenizer, v, set())
    assert r.status == OK and r.sampled_score is None and r.response_ids == gen


def test_missing_cue_is_appended_and_not_counted_as_sampled(tokenizer):
    v = ScoreVocab.from_tokenizer(tokenizer)
    gen = _enc(tokenizer, "Feedback: rambling without a verdict") + [tokenizer.eos_token_id]
    r = finish_rollout(gen, tokenizer, v, stop_token_ids(tokenizer))
    assert r.status == FORCED_CUE
    assert r.n_sampled == len(gen) - 1
    assert r.feedback.endswith(" [RESULT] ")
    assert r.response_ids[: r.n_sampled] == gen[:-1]


def test_cue_without_a_clean_boundary_is_rewritten(bpe_tokenizer):
    # In a GPT-2 style tokenizer the cue text is "[RESULT]" and the score " 4"; a sample that
    # glued the cue to other text ("[RESULT]4") is cut before the cue, which is rewritten.
    v = ScoreVocab.from_tokenizer(bpe_tokenizer)
    gen = _enc(bpe_tokenizer, "fine [RESULT]]")
    r = finish_rollout(gen, bpe_tokenizer, v, set())
    assert r.status in (OK, RETOKENIZED_CUE)
    assert r.feedback.rstrip().endswith("[RESULT]")


def test_empty_generation(tokenizer):
    v = ScoreVocab.from_tokenizer(tokenizer)
    r = finish_rollout([tokenizer.eos_token_id], tokenizer, v, stop_token_ids(tokenizer))
    assert r.status == FORCED_CUE and r.n_sampled == 0 and r.feedback == " [RESULT] "


def test_generation_stops_once_a_stop_string_is_written(tokenizer, tiny_model):
    import torch

    from realjudge.inference.rollout import sample

    prompts = [_enc(tokenizer, "Rate this answer:"), _enc(tokenizer, "Another one, longer:")]

    def run(**kw):
        torch.manual_seed(0)  # the stop criterion draws no random numbers: same samples
        return sample(tiny_model, tokenizer, prompts, max_new_tokens=12, **kw)

    free = run()
    assert all(len(row) == 12 for row in free)
    assert len(set(free[0][:4])) > 1, "need distinct tokens to make a stop string"
    # stop row 0 on the text of its first four tokens: it ends there (then padding), while
    # row 1 goes on
    cut = run(stop_strings=[tokenizer.decode(free[0][:4])])
    assert cut[0][:4] == free[0][:4]
    assert set(cut[0][4:]) == {tokenizer.pad_token_id}
    assert cut[1] == free[1]


def test_vocab_stop_strings_are_cue_plus_score(tokenizer):
    vocab = ScoreVocab.from_tokenizer(tokenizer, "result", (1, 5))
    assert vocab.stop_strings == tuple(f"{vocab.cue_text}{k}" for k in range(1, 6))
