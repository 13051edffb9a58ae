import pytest

from realjudge.scoring.prompts import get_format
from realjudge.scoring.vocab import (
    ScoreVocab,
    ScoreVocabError,
    encode_continuation,
    find_cue_end,
)


@pytest.mark.parametrize("fmt", ["result", "overall"])
def test_smollm_digits_follow_a_separate_space(tokenizer, fmt):
    v = ScoreVocab.from_tokenizer(tokenizer, fmt)
    assert v.scores == (1, 2, 3, 4, 5)
    assert v.cue_text == get_format(fmt).cue  # trailing space kept: the digit is its own token
    assert [tokenizer.decode([t]) for t in v.token_ids] == ["1", "2", "3", "4", "5"]
    for k, t in zip(v.scores, v.token_ids, strict=True):
        ids = tokenizer.encode("Feedback: ok. " + v.cue_text + str(k), add_special_tokens=False)
        assert ids[-1] == t


@pytest.mark.parametrize("fmt", ["result", "overall"])
def test_bpe_tokenizer_fuses_space_and_digit(bpe_tokenizer, fmt):
    v = ScoreVocab.from_tokenizer(bpe_tokenizer, fmt)
    assert v.cue_text == get_format(fmt).cue.rstrip()
    assert [bpe_tokenizer.decode([t]) for t in v.token_ids] == [" 1", " 2", " 3", " 4", " 5"]
    assert len(set(v.token_ids)) == 5


def test_scale_one_to_ten_fails_clearly_when_ten_is_two_tokens(tokenizer):
    with pytest.raises(ScoreVocabError, match="one token"):
        ScoreVocab.from_tokenizer(tokenizer, "result", scale=(1, 10))


def test_other_integer_scales(tokenizer, bpe_tokenizer):
    v = ScoreVocab.from_tokenizer(tokenizer, "result", scale=(0, 9))
    assert v.scores == tuple(range(10)) and len(set(v.token_ids)) == 10
    w = ScoreVocab.from_tokenizer(bpe_tokenizer, "result", scale=(1, 10))
    assert w.scores[-1] == 10 and bpe_tokenizer.decode([w.token_ids[-1]]) == " 10"


def test_score_of_token(tokenizer):
    v = ScoreVocab.from_tokenizer(tokenizer)
    assert v.score_of_token(v.token_ids[3]) == 4
    assert v.score_of_token(-5) is None


def test_find_cue_end_on_token_pieces():
    pieces = ["Feed", "back", ":", " good", ".", " [", "RES", "ULT", "]", " ", "4"]
    assert find_cue_end(pieces, "[RESULT] ") == 10
    assert find_cue_end(pieces, "[RESULT]") == 9
    # the last cue wins
    assert find_cue_end(pieces + [" [", "RES", "ULT", "]", " ", "5"], "[RESULT] ") == 16


def test_find_cue_end_absent_or_off_boundary():
    assert find_cue_end(["no", " cue", " here"], "[RESULT] ") is None
    # the cue ends inside a token (" 4" fused with its space): no clean score position
    assert find_cue_end(["[RESULT]", " 4"], "[RESULT] ") is None
    assert find_cue_end([], "[RESULT] ") is None


def test_forced_cue_text_after_whitespace_has_no_extra_space(tokenizer, bpe_tokenizer):
    v = ScoreVocab.from_tokenizer(tokenizer)
    assert v.forced_cue_text() == v.forced_cue_text("") == " [RESULT] "
    assert v.forced_cue_text("Feedback: fine.") == " [RESULT] "
    assert v.forced_cue_text("Feedback: fine.\n") == "[RESULT] "
    assert v.forced_cue_text("Feedback: fine. ") == "[RESULT] "
    w = ScoreVocab.from_tokenizer(bpe_tokenizer)
    assert w.forced_cue_text("fine.\n") == "[RESULT]" and w.forced_cue_text("fine.") == " [RESULT]"


@pytest.mark.parametrize("before", ["", "Feedback: fine.", "Feedback: fine.\n", "x ", "日本"])
def test_encode_continuation_is_the_tail_of_the_whole_text(tokenizer, bpe_tokenizer, before):
    for tok in (tokenizer, bpe_tokenizer):
        text = " [RESULT] " if not before or not before[-1].isspace() else "[RESULT] "
        ids = encode_continuation(tok, before, text)
        head = tok.encode(before, add_special_tokens=False)
        assert tok.decode(head + ids) == before + text
        whole = tok.encode(before + text, add_special_tokens=False)
        if whole[: len(head)] == head:  # no token of `before` merges with `text`
            assert whole == head + ids
