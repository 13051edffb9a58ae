"""The one record type for absolute grading, shared by every loader, trainer and evaluator."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rubric:
    """A scoring rubric: the criterion and one description per integer score."""

    criterion: str
    descriptions: dict[int, str]


@dataclass
class JudgeRecord:
    """One item to grade on an absolute integer scale.

    Either the parts (``instruction``, ``response``, ``rubric``, ...) are given and rendered
    by :mod:`realjudge.scoring.prompts`, or ``rendered_prompt`` holds a judge prompt that was
    rendered upstream (the Prometheus benchmark files ship them that way).
    """

    id: str
    instruction: str
    response: str
    gold: float | None = None
    rubric: Rubric | None = None
    reference_answer: str | None = None
    reference_feedback: str | None = None
    group_id: str | None = None
    scale: tuple[int, int] = (1, 5)
    rendered_prompt: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def scores(self) -> list[int]:
        lo, hi = self.scale
        return list(range(lo, hi + 1))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"] = list(self.scale)
        if self.rubric is not None:
            d["rubric"] = {
                "criterion": self.rubric.criterion,
                "descriptions": {str(k): v for k, v in self.rubric.descriptions.items()},
            }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JudgeRecord:
        """Inverse of :meth:`to_dict`; raises ``KeyError``/``TypeError``/``ValueError`` on bad input."""
        rubric = d.get("rubric")
        if rubric is not None:
            rubric = Rubric(
                criterion=str(rubric["criterion"]),
                descriptions={int(k): str(v) for k, v in rubric["descriptions"].items()},
            )
        gold = d.get("gold")
        scale = tuple(int(x) for x in d.get("scale", (1, 5)))
        if len(scale) != 2 or scale[0] >= scale[1]:
            raise ValueError(f"scale must be [lo, hi] with lo < hi, got {d.get('scale')!r}")
        return cls(
            id=str(d["id"]),
            instruction=str(d["instruction"]),
            response=str(d["response"]),
            gold=None if gold is None else float(gold),
            rubric=rubric,
            reference_answer=d.get("reference_answer"),
            reference_feedback=d.get("reference_feedback"),
            group_id=None if d.get("group_id") is None else str(d["group_id"]),
            scale=scale,  # type: ignore[arg-type]
            rendered_prompt=d.get("rendered_prompt"),
            meta=dict(d.get("meta") or {}),
        )
