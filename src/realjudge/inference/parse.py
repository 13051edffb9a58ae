"""Free-text score parser: the score a judge's written output states (shared by every backend)."""

from __future__ import annotations

import re

_NUM = r"(\d+(?:\.\d+)?)"
_DEN = r"(?:\s*/\s*(\d+))?"
_PATTERNS = [
    # "[RESULT] 4", "[RESULT]: 4/5", "[RESULT] (4)", "[RESULT] **4**"
    re.compile(r"\[RESULT\]\s*[:=\-]?\s*[(\[]?\s*\**\s*" + _NUM + _DEN + r"(?!\d)", re.I),
    # "Score: 4", "So the overall score is 4.", "Rating - 4/5", "overall score is **4**"
    re.compile(r"\b(?:score|rating|grade)\b[^\d\n]{0,24}?" + _NUM + _DEN + r"(?!\d)", re.I),
    # "**4**", "**4/5**"
    re.compile(r"\*\*\s*" + _NUM + _DEN + r"\s*\*\*"),
    # the whole text is the score: "4", "4/5", "(4).", "[4]"
    re.compile(r"^\s*[(\[]?\s*" + _NUM + _DEN + r"\s*[)\]]?\s*\.?\s*$"),
]


def parse_score(text: str, scale: tuple[int, int] = (1, 5)) -> int | None:
    """The integer score a free-text judge output states, or ``None``.

    Patterns are tried from the most to the least explicit: ``[RESULT] N`` (also ``[RESULT]:
    N/5``), then ``score/rating/grade ... N`` (``Score: 4``, ``So the overall score is 4.``),
    then a bold ``**N**``, then a text that is only the number. The first pattern that occurs
    decides, using its LAST occurrence (judges state the verdict at the end). ``N/D`` counts
    only when ``D`` is the top of the scale. A non-integer or out-of-scale number gives
    ``None``: the output states a score, but not one of the scale.
    """
    if not text:
        return None
    lo, hi = scale
    for pattern in _PATTERNS:
        last = None
        for last in pattern.finditer(text):  # noqa: B007 - the last match is wanted
            pass
        if last is None:
            continue
        number, denominator = last.group(1), last.group(2)
        if denominator is not None and int(denominator) != hi:
            return None
        value = float(number)
        if not value.is_integer():
            return None
        value_int = int(value)
        return value_int if lo <= value_int <= hi else None
    return None
