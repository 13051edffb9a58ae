"""Render a :class:`JudgeRecord` into chat messages and the judge's expected output.

The judge is asked to write a feedback (its chain of thought) and end with a score cue followed
by an integer, e.g. ``Feedback: ... [RESULT] 4`` (Prometheus) or ``... So the overall score is 4``
(the REAL authors' format). :class:`OutputFormat` holds those strings; nothing here knows a
token id -- see :mod:`realjudge.scoring.vocab` for that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from realjudge.data.records import JudgeRecord

DEFAULT_SYSTEM = "You are a fair judge. You grade a response strictly by the given score rubric."


@dataclass(frozen=True)
class OutputFormat:
    """How the judge's answer is laid out.

    ``feedback_prefix`` opens the answer, ``cue`` comes right before the score (keep its
    trailing space: the score follows it directly).
    """

    name: str
    feedback_prefix: str
    cue: str
    instruction: str

    def answer(self, feedback: str, score: int | str) -> str:
        """The full target text for a feedback and a score."""
        return f"{self.feedback_prefix}{feedback.strip()} {self.cue}{score}"

    def score_only_prefix(self) -> str:
        """What the assistant turn starts with when the score is read without a chain of thought."""
        return self.cue


FORMATS: dict[str, OutputFormat] = {
    "result": OutputFormat(
        name="result",
        feedback_prefix="Feedback: ",
        cue="[RESULT] ",
        instruction=(
            "Write a short feedback that assesses the response strictly by the rubric, then "
            'end with "[RESULT] N" where N is an integer from {lo} to {hi}.'
        ),
    ),
    "overall": OutputFormat(
        name="overall",
        feedback_prefix="",
        cue="So the overall score is ",
        instruction=(
            "Write a short feedback that assesses the response strictly by the rubric, then "
            'end with "So the overall score is N" where N is an integer from {lo} to {hi}.'
        ),
    ),
}


def get_format(name_or_format: str | OutputFormat) -> OutputFormat:
    if isinstance(name_or_format, OutputFormat):
        return name_or_format
    try:
        return FORMATS[name_or_format]
    except KeyError:
        raise ValueError(
            f"unknown output format {name_or_format!r}; choose one of {sorted(FORMATS)}"
        ) from None


def render_user_prompt(record: JudgeRecord, fmt: OutputFormat) -> str:
    """The user turn: task, instruction, response, reference answer, rubric.

    A record with ``rendered_prompt`` (Prometheus benchmark files) is used verbatim.
    """
    if record.rendered_prompt is not None:
        return record.rendered_prompt
    lo, hi = record.scale
    parts = [
        "###Task: " + fmt.instruction.format(lo=lo, hi=hi),
        "###Instruction:\n" + record.instruction.strip(),
        "###Response:\n" + record.response.strip(),
    ]
    if record.reference_answer:
        parts.append(f"###Reference answer (score {hi}):\n" + record.reference_answer.strip())
    if record.rubric is not None:
        rubric = [f"###Score rubric: [{record.rubric.criterion.strip()}]"]
        rubric += [
            f"Score {k}: {record.rubric.descriptions[k].strip()}"
            for k in record.scores
            if k in record.rubric.descriptions
        ]
        parts.append("\n".join(rubric))
    return "\n".join(parts)


def build_messages(
    record: JudgeRecord, fmt: OutputFormat, system: str | None = DEFAULT_SYSTEM
) -> list[dict[str, str]]:
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": render_user_prompt(record, fmt)})
    return messages


def render_prompt(
    record: JudgeRecord,
    tokenizer: Any,
    fmt: str | OutputFormat = "result",
    system: str | None = DEFAULT_SYSTEM,
) -> str:
    """The prompt text up to (and including) the start of the assistant turn.

    Uses the tokenizer's chat template when it has one, else a plain fallback layout. The
    template is rendered with ``enable_thinking=False``: a template that reads it (Qwen3)
    then opens the answer itself instead of a thinking block -- the feedback is the judge's
    chain of thought, and the score cue must follow it. Templates that do not use the
    variable ignore it.
    """
    fmt = get_format(fmt)
    messages = build_messages(record, fmt, system)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
    body = "\n\n".join(m["content"] for m in messages)
    return f"{body}\n\n### Answer:\n"


def target_text(record: JudgeRecord, fmt: str | OutputFormat, score: int | None = None) -> str:
    """The supervised answer for a record: its reference feedback then the cue and the score."""
    fmt = get_format(fmt)
    if record.reference_feedback is None:
        raise ValueError(f"record {record.id} has no reference_feedback to train on")
    if score is None:
        if record.gold is None:
            raise ValueError(f"record {record.id} has no gold score")
        score = round_score(record.gold, record.scale)
    return fmt.answer(record.reference_feedback, score)


def round_score(value: float, scale: tuple[int, int]) -> int:
    """Round half up (4.5 -> 5, as annotator means are read) and clamp to the scale."""
    import math

    lo, hi = scale
    return int(min(hi, max(lo, math.floor(value + 0.5))))
