"""Cutting sampled feedbacks at the score cue, and forcing the cue when it is missing."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentencepiece_layouts import sentencepiece_tokenizer as _sentencepiece_tokenizer

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


# --- SentencePiece-style tokenizers (Llama-2, Mistral, Prometheus-2) --------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["llama2", "mistral-legacy"])
def sp_tokenizer(request):
    tok = _sentencepiece_tokenizer(request.param)
    ids = _enc(tok, "good. [RESULT] 4")
    # decoded alone, "▁[RESULT]" loses the space it has in the text
    assert tok.convert_ids_to_tokens(ids[-3:]) == ["\u2581[RESULT]", "\u2581", "4"]
    assert tok.decode(ids[-3:-2]) == "[RESULT]" and tok.decode(ids) == "good. [RESULT] 4"
    return tok


def test_sentencepiece_cue_the_model_wrote_is_read(sp_tokenizer):
    """The model's own ``▁[RESULT] ▁ 4`` is the canonical cue: status ok, its score token
    read, nothing re-encoded (token-by-token decoding lost the spaces and never found it)."""
    tok = sp_tokenizer
    v = ScoreVocab.from_tokenizer(tok)
    assert v.cue_text == "[RESULT] "
    gen = _enc(tok, "Feedback: the response is good. [RESULT] 4") + [tok.eos_token_id]
    r = finish_rollout(gen, tok, v, stop_token_ids(tok))
    assert r.status == OK and r.sampled_score == 4
    assert r.response_ids == gen[:-2] and r.n_sampled == len(gen) - 2
    assert r.feedback == tok.decode(r.response_ids) == "Feedback: the response is good. [RESULT] "


@pytest.mark.parametrize(
    ("text", "status", "feedback"),
    [
        # no cue: the cue is appended as the tokens it adds after the text (no doubled space)
        (
            "Feedback: the response is good.",
            FORCED_CUE,
            "Feedback: the response is good. [RESULT] ",
        ),
        # after a newline: no stray space
        ("Feedback: good.\n", FORCED_CUE, "Feedback: good.\n[RESULT] "),
        # the cue without its trailing space: cut before it, written anew
        ("Feedback: good.\n[RESULT]", RETOKENIZED_CUE, "Feedback: good.\n[RESULT] "),
        ("Feedback: good. [RESULT]", RETOKENIZED_CUE, "Feedback: good. [RESULT] "),
    ],
)
def test_sentencepiece_forced_cue_reads_as_the_tokenizer_writes_it(
    sp_tokenizer, text, status, feedback
):
    tok = sp_tokenizer
    v = ScoreVocab.from_tokenizer(tok)
    gen = _enc(tok, text) + [tok.eos_token_id]
    r = finish_rollout(gen, tok, v, stop_token_ids(tok))
    assert r.status == status and r.sampled_score is None
    assert r.feedback == tok.decode(r.response_ids) == feedback
    assert r.response_ids[: r.n_sampled] == gen[: r.n_sampled]
    # the appended tokens are the ones the tokenizer itself gives the whole text
    assert r.response_ids == _enc(tok, feedback)


def _get_tokenizer(request, which: str):
    """A tokenizer by name: a fixture's (``tokenizer``, ``bpe_tokenizer``) or a SentencePiece
    layout (``llama2``, ``mistral-legacy``)."""
    if which in ("llama2", "mistral-legacy"):
        return _sentencepiece_tokenizer(which == "mistral-legacy")
    return request.getfixturevalue(which)


ALL_STYLES = ["tokenizer", "bpe_tokenizer", "llama2", "mistral-legacy"]


@pytest.mark.parametrize("which", ALL_STYLES)
def test_non_ascii_feedback_is_kept_whole(request, which):
    """Characters split over several byte tokens come back whole in ``feedback``."""
    tok = _get_tokenizer(request, which)
    v = ScoreVocab.from_tokenizer(tok)
    text = "Feedback: très bien, 日本語 👍 [RESULT] 4"
    gen = _enc(tok, text)
    r = finish_rollout(gen, tok, v, set())
    assert r.status == OK and r.sampled_score == 4
    assert r.feedback == tok.decode(r.response_ids) == text[: text.index("[RESULT]")] + v.cue_text


@pytest.mark.parametrize("which", ALL_STYLES)
def test_forced_cue_after_a_newline_has_no_stray_space(request, which):
    tok = _get_tokenizer(request, which)
    v = ScoreVocab.from_tokenizer(tok)
    r = finish_rollout(_enc(tok, "Feedback: fine.\n"), tok, v, set())
    assert r.status == FORCED_CUE
    assert r.feedback == tok.decode(r.response_ids) == "Feedback: fine.\n" + v.cue_text


class _CountingTokenizer:
    """Delegates to a tokenizer and counts its ``decode`` calls."""

    def __init__(self, tok) -> None:
        self.tok, self.calls = tok, 0

    def decode(self, ids, **kwargs):
        self.calls += 1
        return self.tok.decode(ids, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


@pytest.mark.parametrize("which", ["tokenizer", "llama2", "mistral-legacy"])
@pytest.mark.parametrize("tail", ["", " and then a long ramble after the cue" * 20])
def test_a_long_rollout_is_cut_with_few_decodes(request, which, tail):
    """The cue of a long rollout is found with O(log T) decodes of prefixes, not one decode
    per token (or per growing prefix)."""
    tok = _get_tokenizer(request, which)
    v = ScoreVocab.from_tokenizer(tok)
    head = "Feedback: the response is good. " * 80
    gen = _enc(tok, head + "[RESULT] 3" + tail)
    counting = _CountingTokenizer(tok)
    r = finish_rollout(gen, counting, v, set())
    assert r.status == OK and r.sampled_score == 3
    assert r.feedback == tok.decode(r.response_ids) == head + "[RESULT] "
    assert len(gen) > 400 and counting.calls <= 2 * len(gen).bit_length() + 8, counting.calls


# Text made of pieces that exercise the cue, spaces, newlines and multi-byte characters.
_PIECES = [
    "Feedback:",
    " good",
    ".",
    "\n",
    " ",
    "[RESULT]",
    "[RES",
    " 4",
    "4",
    "日本",
    "é",
    "👍",
    "x",
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=14), st.sampled_from(["", " 2", "]", "[RESULT] 2"])
)
def test_any_rollout_keeps_its_sampled_tokens_and_decodes_to_its_feedback(pieces, ending):
    for tok in _all_tokenizers():
        v = ScoreVocab.from_tokenizer(tok)
        text = "".join(pieces) + ending
        gen = _enc(tok, text)
        r = finish_rollout(gen, tok, v, set())
        assert r.feedback == tok.decode(r.response_ids)
        assert r.response_ids[: r.n_sampled] == gen[: r.n_sampled]
        assert r.feedback.endswith(v.cue_text)
        if r.status == OK:
            assert r.n_sampled == len(r.response_ids)
            assert r.feedback == tok.decode(gen)[: len(r.feedback)]
        if text.endswith("[RESULT] 2"):
            assert r.status == OK and r.sampled_score == 2, (text, r)


_TOKENIZERS: list = []


def _all_tokenizers() -> list:
    """The embedded SmolLM2 tokenizer and both SentencePiece layouts, built once."""
    if not _TOKENIZERS:
        from realjudge.models import load_tokenizer

        _TOKENIZERS.append(load_tokenizer("embedded"))
        _TOKENIZERS.extend(_sentencepiece_tokenizer(legacy) for legacy in (False, True))
    return _TOKENIZERS
