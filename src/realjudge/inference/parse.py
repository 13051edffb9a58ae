"""Free-text score parser: the score a judge's written output states (shared by every backend)."""

from __future__ import annotations

import re

_NUM = r"(\d+(?:\.\d+)?)"
_DEN = r"(?:\s*/\s*(\d+))?"
_RESULT = re.compile(r"\[RESULT\]\s*[:=\-]?\s*[(\[]?\s*\**\s*" + _NUM + _DEN + r"(?!\d)", re.I)
_KEYWORD = re.compile(r"\b(?:score|rating|grade)\b[^\d\n]{0,24}?" + _NUM + _DEN + r"(?!\d)", re.I)
_PATTERNS = [
    # "[RESULT] 4", "[RESULT]: 4/5", "[RESULT] (4)", "[RESULT] **4**"
    _RESULT,
    # "Score: 4", "So the overall score is 4.", "Rating - 4/5", "overall score is **4**"
    _KEYWORD,
    # "**4**", "**4/5**"
    re.compile(r"\*\*\s*" + _NUM + _DEN + r"\s*\*\*"),
    # the whole text is the score: "4", "4/5", "(4).", "[4]"
    re.compile(r"^\s*[(\[]?\s*" + _NUM + _DEN + r"\s*[)\]]?\s*\.?\s*$"),
]

# "Score 5: The response is excellent", "Score 5 description", "score5_description": a line
# of the rubric (the keyword right before the number, then a colon or "description")
_RUBRIC_GAP = re.compile(r"[a-z]+[\s_]*$", re.I)
_RUBRIC_AFTER = re.compile(r"\s*(?::|[\s_\-]*description\b)", re.I)
# "between 1 and 5", "from 1 to 5", "1-5": a range of scores, not one of them
_RANGE_AFTER = re.compile(r"\s*(?:-|–|—|to\b|and\b|or\b)\s*\d", re.I)
_MINUS = "-\u2212"  # hyphen-minus, minus sign


def _is_verdict(match: re.Match[str], text: str) -> bool:
    """Whether a match states a score, rather than echoing a rubric line (``Score 5: ...``,
    ``Score 5 description``) or naming a range of scores (``a score between 1 and 5``)."""
    after = text[match.end() :]
    if match.group(2) is None and _RANGE_AFTER.match(after):
        return False
    if match.re is _KEYWORD and match.group(2) is None:
        # the keyword directly before the number (only spaces or "_" between them)
        head = text[match.start() : match.start(1)]
        if _RUBRIC_GAP.fullmatch(head) and _RUBRIC_AFTER.match(after):
            return False
    return True


def _is_negative(match: re.Match[str], text: str) -> bool:
    """Whether the number carries a minus sign (``Score: -1``, ``[RESULT] -2``): a minus right
    before it that does not itself follow a word or a bracket (``[RESULT]-4``, ``4-5``)."""
    start = match.start(1)
    if start == 0 or text[start - 1] not in _MINUS:
        return False
    before = text[start - 2] if start >= 2 else " "
    return not (before.isalnum() or before in ")]")


def parse_score(text: str, scale: tuple[int, int] = (1, 5)) -> int | None:
    """The integer score a free-text judge output states, or ``None``.

    Patterns are tried from the most to the least explicit: ``[RESULT] N`` (also ``[RESULT]:
    N/5``), then ``score/rating/grade ... N`` (``Score: 4``, ``So the overall score is 4.``),
    then a bold ``**N**``, then a text that is only the number. The first pattern that occurs
    decides, using its LAST occurrence that states a verdict (judges state the verdict at the
    end): an echoed rubric line (``Score 5: The response is excellent``, ``Score 5
    description``) or a range (``a score between 1 and 5``) is passed over. ``N/D`` counts
    only when ``D`` is the top of the scale. A negative, non-integer or out-of-scale number
    gives ``None``: the output states a score, but not one of the scale.
    """
    if not text:
        return None
    lo, hi = scale
    for pattern in _PATTERNS:
        last = None
        for match in pattern.finditer(text):
            if _is_verdict(match, text):
                last = match
        if last is None:
            continue
        number, denominator = last.group(1), last.group(2)
        if _is_negative(last, text):
            return None
        if denominator is not None and int(denominator) != hi:
            return None
        value = float(number)
        if not value.is_integer():
            return None
        value_int = int(value)
        return value_int if lo <= value_int <= hi else None
    return None
