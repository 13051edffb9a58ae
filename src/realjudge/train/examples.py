"""Records -> token ids for training, and the deterministic data order.

Every method builds its rows for :func:`realjudge.inference.batch.make_batch` here, so prompt
rendering, truncation and the cue/score layout are written once:

* :meth:`Encoder.prompt_ids`: the rendered judge prompt (chat template), cut from the left to
  ``max_prompt_tokens`` (the authors' truncation side).
* :meth:`Encoder.score_prompt_ids`: the prompt followed by the cue, for score-only reading.
* :meth:`Encoder.target`: feedback + cue (+ the gold score token), for SFT and TRACT.

Data order: step ``s`` takes global positions ``s * B ... s * B + B - 1`` of an endless stream
made of one seeded permutation of the records per epoch; process ``r`` of ``P`` takes the
``r``-th contiguous ``B / P`` of them. The order depends only on ``(seed, step)``, so a resumed
run sees exactly the batches an uninterrupted one would, whatever the number of processes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from realjudge.data.records import JudgeRecord
from realjudge.inference.judge import encode_prompt, score_prompt_ids
from realjudge.scoring.prompts import OutputFormat, get_format, render_prompt, round_score
from realjudge.scoring.vocab import ScoreVocab
from realjudge.seeds import derive_seed


@lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(derive_seed("data-order", seed, epoch)).shuffle(order)
    return tuple(order)


def global_batch_indices(n: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Record indices of step ``step`` (all processes together)."""
    if n <= 0:
        raise ValueError("no training records")
    out = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(pos, n)
        out.append(_epoch_permutation(n, seed, epoch)[i])
    return out


def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """The ``rank``-th contiguous slice of ``items`` (``len(items)`` must divide by ``world``)."""
    if len(items) % world:
        raise ValueError(f"{len(items)} items do not split evenly over {world} processes")
    per = len(items) // world
    return list(items[rank * per : (rank + 1) * per])


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@dataclass
class Example:
    """One row of a :class:`~realjudge.inference.batch.JudgeBatch`, before padding.

    ``score_index``: response tokens before the score; ``loss_len``: leading response tokens
    that enter the token-level loss.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    score_index: int
    loss_len: int
    gold: float


class Encoder:
    """Turns records into token ids for one tokenizer, output format and score vocabulary."""

    def __init__(
        self,
        tokenizer: Any,
        vocab: ScoreVocab,
        fmt: str | OutputFormat,
        max_prompt_tokens: int,
        max_new_tokens: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.fmt = get_format(fmt)
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self._cue_ids = self.encode(vocab.cue_text)
        self._forced_cue_ids = self.encode(vocab.forced_cue_text())

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def _left_cut(self, ids: list[int]) -> list[int]:
        return ids[-self.max_prompt_tokens :]

    def prompt_ids(self, record: JudgeRecord) -> list[int]:
        """The judge prompt up to the start of the assistant turn (left-truncated)."""
        return self._left_cut(self.encode(render_prompt(record, self.tokenizer, self.fmt)))

    def score_prompt_ids(self, record: JudgeRecord) -> list[int]:
        """Prompt + cue: the next token is the score (RAFT, score-only evaluation). Laid out by
        the same function the :class:`~realjudge.inference.judge.Judge` uses."""
        text = render_prompt(record, self.tokenizer, self.fmt)
        return self._left_cut(score_prompt_ids(self.tokenizer, text, self.vocab))

    def score_token(self, gold: float, scale: tuple[int, int]) -> int:
        return self.vocab.token_ids[self.vocab.scores.index(round_score(gold, scale))]

    def target(self, record: JudgeRecord, feedback: str | None = None) -> tuple[list[int], int]:
        """``(ids, cue_end)``: feedback, cue and gold score token; ``ids[:cue_end]`` is the CoT
        up to and including the cue, ``ids[cue_end]`` the score token.

        Kept within ``max_new_tokens`` by cutting the feedback (cue and score stay)."""
        feedback = record.reference_feedback if feedback is None else feedback
        if feedback is None:
            raise ValueError(f"record {record.id} has no reference_feedback to train on")
        if record.gold is None:
            raise ValueError(f"record {record.id} has no gold score")
        score_id = self.score_token(record.gold, record.scale)
        text = self.fmt.answer(feedback, round_score(record.gold, record.scale))
        ids = self.encode(text)
        if not ids or ids[-1] != score_id:
            # The score fused with what precedes it: lay the parts out token by token.
            ids = self.encode(self.fmt.feedback_prefix + feedback.strip()) + self._forced_cue_ids
            ids.append(score_id)
        if len(ids) > self.max_new_tokens:
            tail = [*self._forced_cue_ids, score_id]
            keep = max(0, self.max_new_tokens - len(tail))
            ids = ids[:keep] + tail
        return ids, len(ids) - 1


def check_records(records: Sequence[JudgeRecord], what: str) -> tuple[int, int]:
    """All records have a gold score and one common scale; returns the scale."""
    if not records:
        raise ValueError(f"{what}: no records")
    scales = {tuple(r.scale) for r in records}
    if len(scales) != 1:
        raise ValueError(f"{what}: records mix score scales {sorted(scales)}; train on one scale")
    missing = [r.id for r in records if r.gold is None]
    if missing:
        raise ValueError(f"{what}: {len(missing)} records have no gold score (e.g. {missing[0]})")
    return next(iter(scales))  # type: ignore[return-value]
