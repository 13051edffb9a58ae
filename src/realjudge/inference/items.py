"""What a backend receives and returns: :class:`JudgeItem` in, :class:`SampleOutcome` out.

Shared by :mod:`realjudge.inference.judge` (the transformers backend and the :class:`Judge`)
and :mod:`realjudge.inference.vllm_backend`, so that neither imports the other's module.
"""

from __future__ import annotations

from dataclasses import dataclass

from realjudge.data.records import JudgeRecord
from realjudge.inference.rollout import OK
from realjudge.scoring.vocab import ScoreVocab


@dataclass
class JudgeItem:
    """One record ready for a backend.

    ``prompt_ids`` ends with the score cue when the config reads scores without a CoT.
    """

    record: JudgeRecord
    vocab: ScoreVocab
    prompt_ids: list[int]
    truncated: bool = False


@dataclass
class SampleOutcome:
    """What one sample (one chain of thought, or the score-only read) gave."""

    probs: list[float]  # score probabilities (normalised or raw)
    leaked: float  # 1 - sum of the raw score probabilities
    status: str = OK  # ok | retokenized_cue | forced_cue
    feedback: str = ""  # the chain of thought up to and including the cue
    sampled_score: int | None = None  # the score token the model wrote right after the cue
    parsed_score: int | None = None  # the score parse_score found in the full generated text
