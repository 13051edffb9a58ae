"""Sample judge feedbacks (chains of thought) and cut each one at its score cue.

A rollout is kept up to and including the cue; the score is then read from the distribution
at that position (RAIL) or from the token the model sampled there (decode). A rollout that
never wrote the cue gets it appended -- counted in ``status``, never a crash -- and the appended
tokens are not part of what the policy sampled (``n_sampled``).

The score a rollout wrote is the score token right after a canonically tokenized cue
(``sampled_score``); when there is none (the cue was re-tokenized or forced, or other text
follows it), callers may set ``parsed_score`` from the free-text parser over
:func:`written_text`, as evaluation's decode mode does -- :attr:`Rollout.written_score` is
then the first of the two that exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from realjudge.scoring.vocab import ScoreVocab, find_cue_end

OK = "ok"
FORCED_CUE = "forced_cue"
RETOKENIZED_CUE = "retokenized_cue"


@dataclass
class Rollout:
    response_ids: list[int]  # the feedback up to and including the cue
    n_sampled: int  # leading tokens of response_ids that the model sampled
    status: str  # ok | forced_cue | retokenized_cue
    sampled_score: int | None  # the score token the model wrote after the cue, if any
    feedback: str  # decoded response_ids
    parsed_score: int | None = None  # the score the parser read in written_text, if set

    @property
    def written_score(self) -> int | None:
        """The score the model wrote: its score token after the cue, else the parsed one."""
        return self.sampled_score if self.sampled_score is not None else self.parsed_score


def stop_token_ids(tokenizer: Any, model: Any = None) -> set[int]:
    ids: set[int] = set()
    for source in (tokenizer, getattr(model, "generation_config", None)):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif eos is not None:
            ids.update(int(e) for e in eos)
    return ids


def written_text(generated: Sequence[int], tokenizer: Any, stop_ids: set[int]) -> str:
    """The whole text of a sampled continuation, up to its first end token (special tokens
    skipped): what a free-text score parser reads."""
    ids = list(generated)
    for j, t in enumerate(ids):
        if t in stop_ids:
            ids = ids[:j]
            break
    return tokenizer.decode(ids, skip_special_tokens=True)


def finish_rollout(
    generated: Sequence[int], tokenizer: Any, vocab: ScoreVocab, stop_ids: set[int]
) -> Rollout:
    """Trim a sampled continuation at its end token and cut it right after its (last) cue."""
    ids = list(generated)
    for j, t in enumerate(ids):
        if t in stop_ids:
            ids = ids[:j]
            break
    pieces = [tokenizer.decode([t]) for t in ids]
    end = find_cue_end(pieces, vocab.cue_text)
    if end is not None:
        after = ids[end] if end < len(ids) else None
        score = vocab.score_of_token(after) if after is not None else None
        kept = ids[:end]
        return Rollout(kept, len(kept), OK, score, "".join(pieces[:end]))
    text = "".join(pieces)
    start = text.rfind(vocab.cue_text.rstrip())
    status = FORCED_CUE
    if start >= 0:
        # The cue is there but tokenized oddly: keep the tokens before it, write it canonically.
        status = RETOKENIZED_CUE
        pos, cut = 0, 0
        for j, piece in enumerate(pieces):
            if pos + len(piece) > start:
                break
            pos += len(piece)
            cut = j + 1
        ids = ids[:cut]
    kept = ids + list(tokenizer.encode(vocab.forced_cue_text(), add_special_tokens=False))
    return Rollout(kept, len(ids), status, None, tokenizer.decode(kept))


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    stop_strings: Sequence[str] | None = None,
) -> list[list[int]]:
    """Batched generation with the KV cache; returns ``len(prompt_ids) * num_samples``
    continuations, the samples of one prompt next to each other.

    ``stop_strings`` (usually :attr:`ScoreVocab.stop_strings`, cue + score): a row stops as
    soon as its text ends with one of them -- nothing after the score is read, and a judge that
    was never trained to end its turn would otherwise write on to ``max_new_tokens``. Rows
    that stop early are padded with the pad token."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    P = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), P), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompt_ids):
        ids[i, P - len(p) :] = torch.tensor(list(p))
        att[i, P - len(p) :] = 1
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        num_return_sequences=num_samples,
    )
    if greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    if stop_strings:
        kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), **kwargs)
    model.train(was_training)
    return [row.tolist() for row in out[:, P:].cpu()]
