"""parse_score: the free-text score parser, with examples and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realjudge.inference.judge import parse_score


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Feedback: good. [RESULT] 4", 4),
        ("[RESULT]: 4/5", 4),
        ("[RESULT] (3)", 3),
        ("[result] **2**", 2),
        ("Score: 4", 4),
        ("So the overall score is 4.", 4),
        ("The final rating would be 5/5.", 5),
        ("I give it **4**", 4),
        ("**3/5**", 3),
        ("4", 4),
        (" (2). ", 2),
        ("[RESULT] 4.0", 4),
        # the last verdict wins; an explicit [RESULT] beats weaker patterns
        ("[RESULT] 2 ... on reflection [RESULT] 5", 5),
        ("Score: 2. **3** [RESULT] 4", 4),
        # stated, but not on the scale
        ("[RESULT] 7", None),
        ("[RESULT] 4/10", None),
        ("[RESULT] 4.5", None),
        ("Score: 0", None),
        # no score at all
        ("", None),
        ("The response is fine.", None),
        ("It has 3 parts and 4 steps.", None),
        ("[RESULT] (an integer number between 1 and 5)", None),
    ],
)
def test_examples(text, expected):
    assert parse_score(text, (1, 5)) == expected


def test_other_scales():
    assert parse_score("[RESULT] 9", (1, 10)) == 9
    assert parse_score("Score: 9/10", (1, 10)) == 9
    assert parse_score("[RESULT] 0", (0, 3)) == 0
    assert parse_score("[RESULT] 4", (0, 3)) is None


# Text that cannot itself contain a score statement: no digits, no '*', no brackets.
plain_text = st.text(
    alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ.,;:!?'-\n")),
    max_size=80,
)
TEMPLATES = [
    "[RESULT] {k}",
    "[RESULT]: {k}/{hi}",
    "[RESULT] ({k})",
    "Score: {k}",
    "So the overall score is {k}.",
    "The rating is **{k}**",
    "**{k}**",
]
scales = st.tuples(st.integers(0, 3), st.integers(1, 9)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=300, deadline=None)
@given(scales, st.data(), plain_text, st.sampled_from(TEMPLATES), plain_text)
def test_template_after_plain_text_is_found(scale, data, prefix, template, suffix):
    lo, hi = scale
    k = data.draw(st.integers(lo, hi))
    text = prefix + " " + template.format(k=k, hi=hi) + suffix.replace(".", "")
    assert parse_score(text, scale) == k


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.integers(1, 5))
def test_explicit_result_at_the_end_wins_over_any_text(noise, k):
    assert parse_score(noise + f"\n[RESULT] {k}", (1, 5)) == k


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), scales)
def test_never_raises_and_stays_on_the_scale(text, scale):
    value = parse_score(text, scale)
    assert value is None or (isinstance(value, int) and scale[0] <= value <= scale[1])


@settings(max_examples=200, deadline=None)
@given(plain_text, st.integers(6, 10_000))
def test_out_of_scale_is_none(prefix, k):
    assert parse_score(prefix + f" [RESULT] {k}", (1, 5)) is None


# A judge that echoes the rubric has not stated a verdict: no score (the caller falls back).
RUBRIC_ECHO = (
    "###Score rubric: [How many of the four required items does the response name?]\n"
    "Score 1: none named, or off-task\n"
    "Score 2: one named\n"
    "Score 3: two named\n"
    "Score 4: three named\n"
    "Score 5: all four named"
)


@pytest.mark.parametrize(
    "text",
    [
        RUBRIC_ECHO,
        "Score 5: The response is excellent and covers every item.",
        "The response names two items. Score 5: The response is excellent.",
        "Feedback: it lists the items.\nScore 1 description: the response is off-task.",
        "Recall the score 4 description before grading.",
        "**Score 5:** The response is excellent.",
    ],
)
def test_an_echoed_rubric_line_is_not_a_verdict(text):
    assert parse_score(text, (1, 5)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the verdict before or after the echoed rubric is read, not the rubric line
        (RUBRIC_ECHO + "\nFeedback: two of the items are named. Score: 3", 3),
        ("Score: 2\nScore 5: The response is excellent.", 2),
        (RUBRIC_ECHO + "\nThe response names three items. [RESULT] 4", 4),
        ("Score 5: excellent. The response deserves a score of 3.", 3),
        # a colon BEFORE the number, or text between keyword and number: a verdict
        ("Score: 4: well done", 4),
        ("The final score is 4: well done", 4),
    ],
)
def test_the_verdict_around_an_echoed_rubric_is_read(text, expected):
    assert parse_score(text, (1, 5)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Score: -1",
        "Score:-1",
        "Feedback: poor. [RESULT] -1",
        "[RESULT]: -3/5",
        "The rating is -2.",
        "Score: \u22121",  # a minus sign
        "**-4**",
        "-4",
        "Feedback: bad. Score: -5",
    ],
)
def test_a_negative_score_is_a_parse_failure(text):
    assert parse_score(text, (1, 5)) is None
    assert parse_score(text, (0, 10)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a dash that separates, not a sign
        ("Rating - 4/5", 4),
        ("[RESULT]-4", 4),
        ("Feedback: well-written - Score: 4", 4),
        # a range of scores is not a verdict
        ("I'd give it a score between 1 and 5; it deserves 4.", None),
        ("Rate on a scale of 1 to 5. Feedback: fine. [RESULT] 4", 4),
        ("Score: 3-4", None),
    ],
)
def test_signs_dashes_and_ranges(text, expected):
    assert parse_score(text, (1, 5)) == expected


@pytest.mark.parametrize("text", ["Score: 7", "Score: 0", "[RESULT] 12", "Score: 6/5"])
def test_an_out_of_scale_number_is_a_parse_failure(text):
    assert parse_score(text, (1, 5)) is None
