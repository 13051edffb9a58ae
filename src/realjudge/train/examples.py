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

from realjudge.data.loaders import (
    FORMAT_FEEDBACK_COLLECTION,
    FORMAT_PROMETHEUS,
    BadRow,
    LoadResult,
    row_location,
)
from realjudge.data.records import JudgeRecord
from realjudge.inference.judge import encode_prompt, score_prompt_ids
from realjudge.scoring.prompts import OutputFormat, get_format, render_prompt, round_score
from realjudge.scoring.vocab import ScoreVocab, encode_continuation
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

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def forced_cue_ids(self, before: str) -> list[int]:
        """The cue's tokens appended after the text ``before``, as a rollout that missed its
        cue gets them (:func:`~realjudge.inference.rollout.finish_rollout`): what the cue adds
        after that text, not the cue encoded on its own (a SentencePiece tokenizer would open
        it with a word-start space)."""
        return encode_continuation(self.tokenizer, before, self.vocab.forced_cue_text(before))

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
            text = self.fmt.feedback_prefix + feedback.strip()
            ids = [*self.encode(text), *self.forced_cue_ids(text), score_id]
        if len(ids) > self.max_new_tokens:
            # the most feedback tokens that leave room for the cue as it follows them
            keep = self.max_new_tokens - 1
            while True:
                cue = self.forced_cue_ids(self.tokenizer.decode(ids[:keep]))
                if keep + len(cue) + 1 <= self.max_new_tokens or keep == 0:
                    break
                keep -= 1
            ids = [*ids[:keep], *cue, score_id]
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


def needed_fields(method: str, tract_stage: int = 1) -> tuple[str, ...]:
    """The record fields training with ``method`` reads besides the prompt: the gold score
    always; the reference feedback for the methods whose targets are made of it (SFT, and TRACT
    stage 1 -- stage 2 trains on CoTs it regenerates)."""
    if method == "sft" or (method == "tract" and tract_stage == 1):
        return ("gold", "reference_feedback")
    return ("gold",)


#: Where a record field comes from in the file schemas that name it otherwise.
_SOURCE_FIELD = {
    FORMAT_FEEDBACK_COLLECTION: {"gold": "orig_score", "reference_feedback": "orig_feedback"},
    FORMAT_PROMETHEUS: {"gold": "gpt4_score", "reference_feedback": "gpt4_feedback"},
}
_WHY = {
    "gold": "missing field: no gold score",
    "reference_feedback": "missing field: method {method!r} trains on the reference feedback",
}


def training_bad_rows(
    loaded: LoadResult, fields: Sequence[str], method: str = "training"
) -> list[BadRow]:
    """Every row of ``loaded`` that training cannot use, in row order: the rows the loader
    rejected, the records lacking one of ``fields`` (named by row and by the field of the
    file's schema) and the records whose scale differs from the most common one."""
    bad = list(loaded.bad_rows)
    rows = loaded.record_rows or list(range(len(loaded.records)))
    names = _SOURCE_FIELD.get(loaded.format, {})
    for record, row in zip(loaded.records, rows, strict=True):
        for name in fields:
            if getattr(record, name) is None:
                why = _WHY.get(name, "missing field").format(method=method)
                bad.append(BadRow(loaded.source, row, names.get(name, name), why, loaded.row_kind))
    scales: dict[tuple[int, int], int] = {}
    for record in loaded.records:
        scales[tuple(record.scale)] = scales.get(tuple(record.scale), 0) + 1  # type: ignore[index]
    if len(scales) > 1:
        common = max(scales, key=lambda k: scales[k])  # the first of the most common
        lo, hi = common
        for record, row in zip(loaded.records, rows, strict=True):
            if tuple(record.scale) != common:
                message = (
                    f"scale {record.scale[0]}..{record.scale[1]} differs from the {lo}..{hi} of "
                    f"{scales[common]} other rows; train on one scale"
                )
                bad.append(BadRow(loaded.source, row, "scale", message, loaded.row_kind))
    return sorted(bad, key=lambda b: b.row)


def format_bad_rows(bad: Sequence[BadRow], what: str, max_groups: int = 30) -> str:
    """All of ``bad`` in a few lines: the rows sharing a field and a message on one line (their
    rows joined into ranges); past ``max_groups`` such lines, the remaining rows by field only."""
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for b in bad:
        groups.setdefault((b.source, b.row_kind, b.field, b.message), []).append(b.row)
    n = f"{len(bad)} bad row" + ("" if len(bad) == 1 else "s")
    lines = [f"{what}: {n} (fix or drop them; nothing was trained):"]
    items = list(groups.items())
    for (source, kind, name, message), rows in items[:max_groups]:
        lines.append(f"  {row_location(source, rows, kind)}, field {name!r}: {message}")
    rest: dict[tuple[str, str, str], list[int]] = {}
    for (source, kind, name, _), rows in items[max_groups:]:
        rest.setdefault((source, kind, name), []).extend(rows)
    for (source, kind, name), rows in rest.items():
        lines.append(f"  {row_location(source, rows, kind)}, field {name!r}: bad as well")
    return "\n".join(lines)
