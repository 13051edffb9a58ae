"""Score vocabulary: which token carries each score, and where the score sits in a rollout.

Everything is derived from the tokenizer; no token id is written down anywhere. Tokenizers split
``"[RESULT] 4"`` in one of two ways: the space is its own token and the digit follows
(SmolLM2, Llama-2 style), or the space is fused with the digit (``" 4"``, GPT-2 / Llama-3
style). :meth:`ScoreVocab.from_tokenizer` tries both and keeps the one under which every score
is exactly one token in every test context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from realjudge.scoring.prompts import OutputFormat, get_format

# Text that may precede the cue; the score must tokenize the same way after each of them.
_CONTEXTS = ("", "Feedback: The response is good.", "fine.\n", "x ")


class ScoreVocabError(ValueError):
    """The tokenizer cannot express a score of the scale as a single token after the cue."""


@dataclass(frozen=True)
class ScoreVocab:
    """Score tokens of one tokenizer for one output format and one integer scale.

    Attributes:
        scores: the integer scores, ascending.
        token_ids: the token that carries each score right after ``cue_text``.
        cue_text: the text right before the score token (the format's cue, with its trailing
            space when the tokenizer keeps spaces apart from digits, without it otherwise).
        score_texts: the decoded text of each score token (``"4"`` or ``" 4"``).
    """

    scores: tuple[int, ...]
    token_ids: tuple[int, ...]
    cue_text: str
    score_texts: tuple[str, ...]

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, fmt: str | OutputFormat = "result", scale: tuple[int, int] = (1, 5)
    ) -> ScoreVocab:
        fmt = get_format(fmt)
        lo, hi = scale
        scores = tuple(range(lo, hi + 1))
        core = fmt.cue.rstrip()
        sep = fmt.cue[len(core) :]
        problems: list[str] = []
        for cue_text, prefix in ((core + sep, ""), (core, sep)):
            ids = []
            for k in scores:
                tid = _single_continuation(tokenizer, cue_text, f"{prefix}{k}")
                if tid is None:
                    problems.append(f"{cue_text!r} + {prefix}{k!s}")
                    break
                ids.append(tid)
            else:
                if len(set(ids)) != len(ids):
                    raise ScoreVocabError(f"scores {scores} map to repeated tokens {ids}")
                texts = tuple(tokenizer.decode([t]) for t in ids)
                return cls(
                    scores=scores, token_ids=tuple(ids), cue_text=cue_text, score_texts=texts
                )
        raise ScoreVocabError(
            f"the tokenizer cannot write every score of the scale {lo}-{hi} as one token after the "
            f"cue {fmt.cue!r} (first failure: {problems[0]}). Use a smaller scale or another "
            "output format (--format)."
        )

    @property
    def size(self) -> int:
        return len(self.scores)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Cue + score texts (``"[RESULT] 4"``): generation can stop once one is written, as
        nothing after the score is read."""
        return tuple(self.cue_text + t for t in self.score_texts)

    def forced_cue_text(self, before: str | None = None) -> str:
        """Text appended to a feedback that never wrote the cue: the cue after a space, or
        the bare cue when the feedback ``before`` it ends with whitespace (a newline, a
        space), which then already separates the two."""
        if before and before[-1].isspace():
            return self.cue_text
        return " " + self.cue_text

    def score_of_token(self, token_id: int) -> int | None:
        try:
            return self.scores[self.token_ids.index(token_id)]
        except ValueError:
            return None


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


# characters of the text before a continuation that :func:`encode_continuation` encodes
_CONTEXT_CHARS = 256


def encode_continuation(tokenizer: Any, before: str, text: str) -> list[int]:
    """The tokens that ``text`` adds after the text ``before``: the tail of ``encode(before +
    text)`` when the tokens of ``before`` are its head (none of them merges with ``text``).

    Encoding ``text`` on its own is wrong for SentencePiece tokenizers (Llama-2, Mistral):
    they open a text with a word-start marker, so ``"[RESULT] "`` appended after a newline
    would decode to ``" [RESULT] "`` and ``" [RESULT] "`` after a word to ``"  [RESULT] "``.
    Only the end of ``before`` is encoded (what ``text`` follows; the tokens are the same
    once the context is a few words long). When a token of it merges with ``text``, ``text``
    is encoded after ``before``'s last character alone, and as a last resort on its own."""
    if not before:
        return _encode(tokenizer, text)
    for context in (before[-_CONTEXT_CHARS:], before[-1]):
        head = _encode(tokenizer, context)
        full = _encode(tokenizer, context + text)
        if full[: len(head)] == head and len(full) > len(head):
            return full[len(head) :]
    return _encode(tokenizer, text)


def _single_continuation(tokenizer: Any, cue_text: str, continuation: str) -> int | None:
    """The one token that ``continuation`` adds after ``cue_text`` in every test context."""
    found: int | None = None
    for ctx in _CONTEXTS:
        head = _encode(tokenizer, ctx + cue_text)
        full = _encode(tokenizer, ctx + cue_text + continuation)
        if len(full) != len(head) + 1 or full[: len(head)] != head:
            return None
        if found is not None and full[-1] != found:
            return None
        found = full[-1]
    return found


def find_cue_end(token_texts: Sequence[str], cue_text: str) -> int | None:
    """Number of leading tokens that end exactly where the LAST ``cue_text`` ends.

    ``token_texts`` are the decoded pieces of a generated sequence. The score distribution is
    the model's next-token distribution after that many tokens. Returns ``None`` when the cue
    is absent or when no token boundary falls at its end (the cue would need re-tokenizing).
    """
    text = "".join(token_texts)
    start = text.rfind(cue_text)
    if start < 0:
        return None
    end = start + len(cue_text)
    pos = 0
    for i, piece in enumerate(token_texts):
        pos += len(piece)
        if pos == end:
            return i + 1
        if pos > end:
            return None
    return None
