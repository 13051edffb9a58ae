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
