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

import inspect
import weakref
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import torch

from realjudge.attention import use_decode_attention
from realjudge.linear import use_packed_linears
from realjudge.scoring.vocab import ScoreVocab, encode_continuation
from realjudge.seeds import derive_seed

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
    # the generation pass's raw logits right after the cue: ``[K + 1]``, the score tokens' and
    # the vocabulary's log-normaliser (:func:`compact_logits`); set by callers that asked
    # ``sample`` for them, only where the model itself wrote the canonical cue (status ok)
    cue_logits: torch.Tensor | None = None

    @property
    def written_score(self) -> int | None:
        """The score the model wrote: its score token after the cue, else the parsed one."""
        return self.sampled_score if self.sampled_score is not None else self.parsed_score


def stop_token_ids(tokenizer: Any, model: Any = None, generation_config: Any = None) -> set[int]:
    """The token ids that end a generation: the tokenizer's end token and every
    ``eos_token_id`` of the model's generation config, or of ``generation_config`` where the
    model is not a transformers model (a ``vllm.LLM``; chat models often list several)."""
    ids: set[int] = set()
    sources = (tokenizer, getattr(model, "generation_config", None), generation_config)
    for source in sources:
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


class _PrefixDecoder:
    """Decodes of the leading tokens of ``ids`` (``decode(ids[:k])``), memoised.

    Decoding prefixes as a whole, never token by token, is what keeps the text right for
    every tokenizer: a SentencePiece token decoded alone drops its word-start space
    (``"▁word"`` -> ``"word"``), and a byte token that is part of a multi-byte character
    decodes to a replacement character."""

    def __init__(self, ids: list[int], tokenizer: Any) -> None:
        self.ids, self.tokenizer = ids, tokenizer
        self._texts: dict[int, str] = {0: ""}

    def __call__(self, k: int) -> str:
        text = self._texts.get(k)
        if text is None:
            text = self._texts[k] = self.tokenizer.decode(self.ids[:k])
        return text

    def fewest_reaching(self, pos: int) -> int:
        """The fewest leading tokens whose decode is at least ``pos`` characters long (the
        whole ``ids`` must be). Searched from the end, with steps that double, then by
        bisection: the cue sits near the end of a rollout, so this decodes a handful of
        prefixes, ``O(T log d)`` for a cue ``d`` tokens before the end instead of the
        ``O(T^2)`` of a scan over growing prefixes."""
        hi, step = len(self.ids), 1
        lo = max(hi - step, 0)
        while lo > 0 and len(self(lo)) >= pos:
            hi, step = lo, step * 2
            lo = max(hi - step, 0)
        if len(self(lo)) >= pos:  # pos <= 0
            return lo
        while hi - lo > 1:  # len(self(lo)) < pos <= len(self(hi))
            mid = (lo + hi) // 2
            if len(self(mid)) >= pos:
                hi = mid
            else:
                lo = mid
        return hi


# how many more prefixes are tried around the first guess before a boundary is given up
_BOUNDARY_SLACK = 4


def _tokens_ending_at(prefixes: _PrefixDecoder, text: str, end: int) -> int | None:
    """The fewest leading tokens that decode exactly to ``text[:end]``, or ``None`` when no
    token boundary falls there."""
    first = prefixes.fewest_reaching(end)
    for k in range(first, min(first + _BOUNDARY_SLACK, len(prefixes.ids)) + 1):
        decoded = prefixes(k)
        if decoded == text[:end]:
            return k
        if len(decoded) > end + _BOUNDARY_SLACK:
            break
    return None


def _tokens_before(prefixes: _PrefixDecoder, text: str, start: int) -> int:
    """The most leading tokens that decode to a prefix of ``text[:start]`` (whole
    characters: a multi-byte character cut by the boundary is left out with its bytes)."""
    k = prefixes.fewest_reaching(start + 1) - 1
    for cut in range(k, max(k - _BOUNDARY_SLACK, 0) - 1, -1):
        decoded = prefixes(cut)
        if len(decoded) <= start and text.startswith(decoded):
            return cut
    return max(k, 0)


def finish_rollout(
    generated: Sequence[int], tokenizer: Any, vocab: ScoreVocab, stop_ids: set[int]
) -> Rollout:
    """Trim a sampled continuation at its end token and cut it right after its (last) cue.

    The cue is found in the decode of the whole continuation and mapped back to a token
    boundary by decoding a few prefixes (:class:`_PrefixDecoder`), so the kept feedback is
    exactly ``tokenizer.decode(response_ids)`` whatever the tokenizer (byte-level BPE,
    SentencePiece, byte fallback). A cue that ends inside a token is cut before and written
    anew; a missing one is appended -- both as the tokens the cue adds after the kept text
    (:func:`~realjudge.scoring.vocab.encode_continuation`)."""
    ids = list(generated)
    for j, t in enumerate(ids):
        if t in stop_ids:
            ids = ids[:j]
            break
    text = tokenizer.decode(ids)
    prefixes = _PrefixDecoder(ids, tokenizer)
    start = text.rfind(vocab.cue_text)
    if start >= 0:
        end = _tokens_ending_at(prefixes, text, start + len(vocab.cue_text))
        if end is not None:
            after = ids[end] if end < len(ids) else None
            score = vocab.score_of_token(after) if after is not None else None
            kept = ids[:end]
            return Rollout(kept, len(kept), OK, score, prefixes(end))
    start = text.rfind(vocab.cue_text.rstrip())
    status = FORCED_CUE
    before = text
    if start >= 0:
        # The cue is there but tokenized oddly: keep the tokens before it, write it canonically.
        status = RETOKENIZED_CUE
        cut = _tokens_before(prefixes, text, start)
        ids, before = ids[:cut], prefixes(cut)
    cue = encode_continuation(tokenizer, before, vocab.forced_cue_text(before))
    kept = ids + cue
    return Rollout(kept, len(ids), status, None, tokenizer.decode(kept))


def left_padded(prompt_ids: Sequence[Sequence[int]], pad_id: int):
    """``(input_ids, attention_mask)`` ``[rows, longest]`` of the prompts, padded on the left
    (as ``generate`` wants them)."""
    P = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), P), pad_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompt_ids):
        ids[i, P - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        att[i, P - len(p) :] = 1
    return ids, att


def generation_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows as ``generate`` derives them from the mask (pads: 0)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def shared_prefill(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, copies: int
) -> Any:
    """The KV cache of each row's prompt but its last token, computed once per row and then
    repeated ``copies`` times (rows ``i * copies ... i * copies + copies - 1`` hold row ``i``).

    Passed to ``generate`` as ``past_key_values`` with the rows repeated the same way, it lets
    the ``G`` samples of a prompt share one prefill: ``generate`` runs only the last prompt
    token and what follows. (The last token stays out of the cache because ``generate`` needs
    at least one new input token to start from.)"""
    out = model(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=generation_position_ids(attention_mask)[:, :-1],
        use_cache=True,
        logits_to_keep=1,
    )
    cache = returned_cache(out)
    if copies > 1:
        cache.batch_repeat_interleave(copies)
    return cache


def returned_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (``cache``; ``past_key_values`` before
    transformers 5.24)."""
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache


def cache_kwarg(model: Any) -> str:
    """The name under which ``model`` takes a KV cache: ``cache`` (transformers >= 5.24) or
    ``past_key_values``."""
    # a DDP or peft wrapper's forward hands its keywords on to the model it wraps
    model = getattr(model, "module", model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


_GENERATION_COPIES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def generation_copy(model: Any, dtype: torch.dtype) -> Any:
    """``model`` in ``dtype`` for sampling, e.g. bf16 weights of a model trained with fp32
    master weights: decoding reads every weight once per token, so half the bytes is close to
    half the time on a CPU. The copy is kept (one per model, dropped with it) and its weights
    refreshed from ``model`` on every call, so it always samples from the current policy."""
    copy = _GENERATION_COPIES.get(model)
    if copy is None:
        copy = deepcopy(model).to(dtype)
        copy.eval()
        use_decode_attention(copy)
        use_packed_linears(copy)  # refreshed weights are repacked on their next use
        _GENERATION_COPIES[model] = copy
        return copy
    with torch.no_grad():
        for dst, src in zip(copy.parameters(), model.parameters(), strict=True):
            dst.copy_(src)
        for dst, src in zip(copy.buffers(), model.buffers(), strict=True):
            dst.copy_(src)
    return copy


def compact_logits(logits: torch.Tensor, score_ids: torch.Tensor) -> torch.Tensor:
    """``[..., V]`` next-token logits -> ``[..., K + 1]`` (fp32): the logits of the ``K`` score
    tokens, then the log-normaliser ``logsumexp`` over the whole vocabulary -- all that the
    score distribution and its leaked mass need (:func:`compact_score_distribution`)."""
    logits = logits.float()
    picked = logits.index_select(-1, score_ids.to(logits.device))
    return torch.cat([picked, torch.logsumexp(logits, dim=-1, keepdim=True)], dim=-1)


def compact_score_distribution(
    compact: torch.Tensor, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probs [..., K], leaked [...])`` from :func:`compact_logits`; the same values as
    :func:`realjudge.scoring.rail.score_distribution` of the full logits."""
    score_logits, log_z = compact[..., :-1].float(), compact[..., -1].float()
    leaked = -torch.expm1(torch.logsumexp(score_logits, dim=-1) - log_z)
    if normalize:
        probs = torch.softmax(score_logits, dim=-1)
    else:
        probs = torch.exp(score_logits - log_z.unsqueeze(-1))
    return probs, leaked


def nucleus(
    probs: torch.Tensor, top_p: float, first_k: int = 64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-p nucleus of probability rows ``[..., vocab]`` with ``transformers``'
    ``TopPLogitsWarper`` semantics -- a token is kept when the probability mass ranked
    strictly above it is below ``top_p`` (so the smallest head whose mass reaches ``top_p``;
    the most likely token always) -- found among the ``first_k`` most likely tokens (``topk``)
    instead of a sort of the whole vocabulary; ``k`` grows eightfold, up to the vocabulary,
    while some row's nucleus is not inside it. Returns the ``k`` largest probabilities
    (descending), their token ids and which of them are kept (a prefix of each row).

    A generation step's distribution is peaked, so its nucleus is a few tokens: the full sort
    of ``[rows, vocab]`` was a fifth of a bf16 rollout on a CPU. The kept set is the warper's
    up to rounding of the cumulative sums and the order among tied probabilities at the edge
    (``tests/inference/test_seeded_sampling.py``)."""
    vocab = probs.shape[-1]
    k = min(max(int(first_k), 1), vocab)
    while True:
        top, idx = probs.topk(k, dim=-1)  # descending
        above = top.cumsum(dim=-1) - top  # mass ranked strictly above each token
        beyond = above[..., -1] + top[..., -1]  # mass above the first token left out
        if k == vocab or bool(((1.0 - beyond) <= (1.0 - top_p)).all()):
            break
        k = min(k * 8, vocab)
    keep = (1.0 - above) > (1.0 - top_p)
    keep[..., 0] = True
    return top, idx, keep


def nucleus_filter(scores: torch.Tensor, top_p: float, first_k: int = 64) -> torch.Tensor:
    """``scores`` with every token outside the top-p :func:`nucleus` set to ``-inf`` (what
    ``TopPLogitsWarper`` returns)."""
    if top_p >= 1.0:
        return scores
    _, idx, keep = nucleus(scores.float().softmax(dim=-1), top_p, first_k)
    remove = torch.ones_like(scores, dtype=torch.bool).scatter_(-1, idx, ~keep)
    return scores.masked_fill(remove, float("-inf"))


class NucleusFilter:
    """:func:`nucleus_filter` as a ``transformers`` logits processor."""

    def __init__(self, top_p: float, first_k: int = 64) -> None:
        if not 0.0 < float(top_p) <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p = float(top_p)
        self.first_k = first_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return nucleus_filter(scores, self.top_p, self.first_k)


TOP_P_IMPLS = ("topk", "sort")
#: How :func:`sample` finds the top-p nucleus unless told otherwise (recorded by ``reproduce``).
TOP_P_IMPL = "topk"


def sampling_warpers(temperature: float, top_p: float, top_p_impl: str = TOP_P_IMPL) -> list[Any]:
    """The logits warpers of sampling, in ``generate``'s order: temperature, then top-p (no
    top-k). ``top_p_impl``: ``topk`` (:class:`NucleusFilter`) or ``sort`` (``transformers``'
    ``TopPLogitsWarper``, a sort of the whole vocabulary: what ``realjudge bench cpu``'s fp32
    baseline samples with)."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    if top_p_impl not in TOP_P_IMPLS:
        raise ValueError(f"top_p_impl must be one of {TOP_P_IMPLS}, got {top_p_impl!r}")
    warpers: list[Any] = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_p < 1.0:
        warpers.append(NucleusFilter(top_p) if top_p_impl == "topk" else TopPLogitsWarper(top_p))
    return warpers


class RowSeededSampler:
    """Samples every row's next token from its own ``torch.Generator``, so that what a row
    draws depends on its seed alone -- not on which rows share its batch, how many processes
    split the prompts, or the generation batch size.

    It runs as ``generate``'s last logits processor in a greedy ``generate`` call: it warps
    the logits as sampling would (temperature, then top-p, no top-k), draws one token per row
    with that row's generator and returns logits that are ``-inf`` everywhere but there, so
    the greedy pick is the draw. The distribution is ``generate``'s sampling distribution;
    only the random stream differs. ``top_p_impl``: ``topk`` (default) finds each row's
    :func:`nucleus` on its own and draws among its tokens only; ``sort`` runs
    ``transformers``' warpers and draws over the whole vocabulary (the code before ``topk``,
    and ``realjudge bench cpu``'s fp32 baseline)."""

    def __init__(
        self,
        seeds: Sequence[int],
        temperature: float,
        top_p: float,
        device: torch.device,
        top_p_impl: str = TOP_P_IMPL,
    ) -> None:
        from transformers import LogitsProcessorList

        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        # what a step computes: the rows' sampling probabilities, then one draw per row
        self._probs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        self._draw_row: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
        if top_p_impl == "topk" and self.top_p < 1.0:
            self._probs = lambda ids, scores: torch.softmax(scores.float() / self.temperature, -1)
            self._draw_row = self._draw_in_nucleus
        else:
            warpers = LogitsProcessorList(sampling_warpers(temperature, top_p, top_p_impl))
            self._probs = lambda ids, scores: torch.softmax(warpers(ids, scores.float()), -1)
            self._draw_row = lambda p, g: torch.multinomial(p, 1, generator=g)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows for {len(self.generators)} row seeds")
        probs = self._probs(input_ids, scores)
        picks = torch.cat(
            [self._draw_row(p, g) for p, g in zip(probs, self.generators, strict=True)]
        )
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, picks.unsqueeze(1), 0.0)

    def _draw_in_nucleus(self, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One row: its nucleus found on its own (its width, so its draws, never depend on the
        other rows), one draw among the nucleus's tokens in proportion to their probability.
        The tokens are laid out in vocabulary order for the draw, not in ``topk``'s order of
        probability: two nearly equal probabilities that float noise swaps (another
        micro-batching, another kernel) must not swap what the random numbers pick."""
        top, idx, keep = nucleus(probs, self.top_p)
        n = int(keep.sum())
        ids, order = idx[:n].sort()
        return ids[torch.multinomial(top[:n][order], 1, generator=generator)]


def row_seeds(prompt_seeds: Sequence[int], num_samples: int) -> list[int]:
    """One seed per generated row (the ``num_samples`` rows of a prompt next to each other),
    derived from its prompt's seed and its sample index."""
    return [derive_seed("sample", s, k) for s in prompt_seeds for k in range(num_samples)]


class CueLogitsRecorder:
    """Records, at every generation step, the raw next-token logits of the score tokens and the
    vocabulary's log-normaliser (:func:`compact_logits`), for every row.

    Passed to :func:`sample`, it runs as a ``transformers`` logits processor: ``generate``
    hands the custom processors its raw logits (the same tensor ``output_logits=True``
    returns, fp32) before temperature and top-p, which run after them -- unless the model's
    generation config turns on a processor that ``generate`` puts first (repetition penalty,
    banned words, ...; :func:`raw_logits_reach_custom_processors`), in which case ``sample``
    leaves the recorder off and :meth:`result` is ``None``. Keeping ``K + 1`` numbers a step
    instead of the vocabulary is what makes this affordable for long rollouts."""

    def __init__(self, score_ids: Sequence[int] | torch.Tensor) -> None:
        self.score_ids = torch.as_tensor(score_ids, dtype=torch.long)
        self.steps: list[torch.Tensor] = []
        self.active = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(compact_logits(scores, self.score_ids))
        return scores

    def result(self) -> torch.Tensor | None:
        """``[rows, steps, K + 1]`` on the CPU (step ``j`` is the distribution of generated
        token ``j``), or ``None`` when nothing was recorded."""
        if not self.active or not self.steps:
            return None
        return torch.stack(self.steps, dim=1).cpu()


class GenerationState:
    """What a :func:`sample` call leaves behind when passed as ``state``: the model that
    generated (the ``dtype`` copy when one was used), its KV cache after the last step and
    the rows' prompt masks, so that :func:`logits_after_rollouts` can read the score after a
    forced cue by running only the cue tokens on top of the generated prefix."""

    def __init__(self) -> None:
        self.model: Any = None
        self.cache: Any = None
        self.prompt_mask: torch.Tensor | None = None  # [rows, P], left-padded, rows repeated
        # positions the cache can hold in all (a static cache), None: no limit (dynamic)
        self.capacity: int | None = None

    @property
    def ready(self) -> bool:
        return self.cache is not None


#: Positions a static cache (:func:`sample` with ``kv_cache="static"``) keeps after the
#: prompt and ``max_new_tokens``, for a cue :func:`logits_after_rollouts` appends.
CUE_ROOM = 16


class CacheFull(ValueError):
    """A static cache has no room for the tokens :func:`logits_after_rollouts` would append."""


def static_cache(model: Any, capacity: int) -> Any:
    """An empty ``transformers`` ``StaticCache`` for ``model``, ``capacity`` positions per row;
    it takes its batch size, dtype and device from the first keys written into it."""
    from transformers import StaticCache

    model = getattr(model, "module", model)
    return StaticCache(config=model.config, max_cache_len=capacity)


@torch.no_grad()
def logits_after_rollouts(
    state: GenerationState, rows: Sequence[int], rollouts: Sequence[Rollout]
) -> torch.Tensor:
    """The next-token logits after each rollout's whole ``response_ids`` (``[len(rows), V]``,
    fp32): generated row ``rows[i]`` cut to its first ``n_sampled`` tokens, then the tokens
    appended to it (a forced or re-tokenized cue).

    The prompt and the kept generated tokens are read from the generation's KV cache; only
    the appended tokens (and the last generated one, which generation sampled but never ran)
    go through the model, with the cached positions after the cut masked out and the
    positions counted on from the cut. The same context as a forward pass over prompt +
    response (:func:`~realjudge.inference.batch.judge_forward`), without computing it again.
    Consumes the cache: call it once per :func:`sample` call. Raises :class:`CacheFull`,
    leaving the cache alone, when a static cache has no room for the appended tokens."""
    if not state.ready or state.prompt_mask is None:
        raise ValueError("the generation state is empty: pass it to sample() first")
    if len(rows) != len(rollouts):
        raise ValueError(f"{len(rows)} rows for {len(rollouts)} rollouts")
    P = state.prompt_mask.shape[1]
    cached = int(state.cache.get_seq_length()) - P  # generated tokens whose keys/values are cached
    # at least the last token runs again: a rollout whose whole response (its own cue
    # included) is cached still needs the logits after it
    cuts = [min(r.n_sampled, cached, len(r.response_ids) - 1) for r in rollouts]
    new = [r.response_ids[c:] for r, c in zip(rollouts, cuts, strict=True)]
    if any(not n for n in new):
        raise ValueError("a rollout adds no token after its generated prefix")
    n, L = len(rows), max(len(t) for t in new)
    if state.capacity is not None and P + cached + L > state.capacity:
        raise CacheFull(f"{L} tokens after {P + cached} do not fit a cache of {state.capacity}")
    cache, state.cache = state.cache, None
    device = state.prompt_mask.device
    index = torch.tensor(list(rows), dtype=torch.long, device=device)
    if list(rows) != list(range(state.prompt_mask.shape[0])):  # not every row, in order
        cache.reorder_cache(index)  # keeps these rows; a static cache's too
    prompt_mask = state.prompt_mask[index]
    ids = torch.zeros((n, L), dtype=torch.long, device=device)
    mask = torch.zeros((n, P + cached + L), dtype=torch.long, device=device)
    mask[:, :P] = prompt_mask
    for i, (tokens, c) in enumerate(zip(new, cuts, strict=True)):
        ids[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[i, P : P + c] = 1
        mask[i, P + cached : P + cached + len(tokens)] = 1
    start = prompt_mask.sum(-1) + torch.tensor(cuts, device=device)
    position_ids = start[:, None] + torch.arange(L, device=device)[None, :]
    out = state.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids,
        use_cache=True,
        **{cache_kwarg(state.model): cache},
    )
    last = torch.tensor([len(t) - 1 for t in new], device=device)
    return out.logits[torch.arange(n, device=device), last].float()


def logits_after_cue(steps: torch.Tensor, rollout: Rollout) -> torch.Tensor | None:
    """The recorded generation-step logits (``steps``: ``[steps, K + 1]`` of one row) right
    after ``rollout``'s cue: step ``n_sampled`` -- its context is exactly prompt + response --
    when the model wrote the canonical cue itself (status ok) and generation ran that step.
    ``None`` otherwise (a forced or re-tokenized cue was never seen by the generation pass; the
    cue came last before ``max_new_tokens`` ran out): such rows need a forward pass."""
    if rollout.status != OK or rollout.n_sampled >= steps.shape[0]:
        return None
    return steps[rollout.n_sampled].clone()


# generation-config settings under which ``generate`` runs processors before the custom ones
_EARLY_PROCESSORS = (
    ("repetition_penalty", 1.0),
    ("encoder_repetition_penalty", 1.0),
    ("no_repeat_ngram_size", 0),
    ("encoder_no_repeat_ngram_size", 0),
    ("bad_words_ids", None),
    ("sequence_bias", None),
    ("min_length", 0),
    ("min_new_tokens", None),
    ("forced_bos_token_id", None),
    ("forced_eos_token_id", None),
    ("exponential_decay_length_penalty", None),
    ("suppress_tokens", None),
    ("begin_suppress_tokens", None),
    ("guidance_scale", 1.0),
)


def raw_logits_reach_custom_processors(generation_config: Any) -> bool:
    """Whether ``generate`` passes its raw logits to the custom logits processors: no
    processor that it places before them is switched on in ``generation_config``."""
    if generation_config is None:
        return True
    for name, neutral in _EARLY_PROCESSORS:
        value = getattr(generation_config, name, None)
        if value is not None and value != neutral and value != 0 and value != []:
            return False
    return True


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
    dtype: torch.dtype | None = None,
    share_prefill: bool = True,
    recorder: CueLogitsRecorder | None = None,
    prompt_seeds: Sequence[int] | None = None,
    top_p_impl: str = TOP_P_IMPL,
    state: GenerationState | None = None,
    kv_cache: str = "dynamic",
) -> list[list[int]]:
    """Batched generation with the KV cache; returns ``len(prompt_ids) * num_samples``
    continuations, the samples of one prompt next to each other.

    ``stop_strings`` (usually :attr:`ScoreVocab.stop_strings`, cue + score): a row stops as
    soon as its text ends with one of them -- nothing after the score is read, and a judge that
    was never trained to end its turn would otherwise write on to ``max_new_tokens``. Rows
    that stop early are padded with the pad token.

    ``dtype``: sample from a copy of the weights in this dtype (:func:`generation_copy`) when
    the model's own differ (CPU only; default: the model as it is). ``share_prefill``: with
    ``num_samples > 1``, run each prompt through the model once and give its samples copies
    of that KV cache (:func:`shared_prefill`) instead of repeating the prompt ``num_samples``
    times before the prefill; the same distributions, a ``num_samples``-th of the prefill.

    ``recorder``: also record each step's raw score-token logits (:class:`CueLogitsRecorder`;
    its ``result()`` after the call, rows as returned). They come from the model that
    generates, in its precision: the ``dtype`` copy when one is used (e.g. bf16 on a CPU),
    else the model as called (under accelerate's autocast in a mixed-precision run).

    ``prompt_seeds`` (one per prompt; sampling only): draw each row from its own generator
    (:class:`RowSeededSampler`, seeds :func:`row_seeds`) instead of the global random state,
    so a prompt's samples are the same whatever batch it is generated in.

    Sampling warps the logits with :func:`sampling_warpers` (temperature, then top-p;
    ``top_p_impl``: ``topk``, the default, finds the nucleus without sorting the vocabulary,
    ``sort`` is ``transformers``' warper), run as logits processors after ``recorder``.

    ``state`` (a torch module only): keep the generating model, its KV cache and the prompt
    masks there, for :func:`logits_after_rollouts`.

    ``kv_cache`` (a torch module only): ``"static"`` generates into a ``StaticCache``
    (:func:`static_cache`) with room for ``max_new_tokens`` and :data:`CUE_ROOM` more tokens
    after the prompt, written in place, instead of ``generate``'s ``DynamicCache``, which
    copies every layer's keys and values into a new tensor at every step; ``"dynamic"``
    (default) is ``generate``'s own. A shared prefill keeps its own (dynamic) cache."""
    device = next(model.parameters()).device
    is_module = isinstance(model, torch.nn.Module)
    if (
        dtype is not None
        and is_module
        and device.type == "cpu"
        and next(model.parameters()).dtype != dtype
    ):
        model = generation_copy(model, dtype)
    pad = tokenizer.pad_token_id
    ids, att = left_padded(prompt_ids, pad)
    P = ids.shape[1]
    ids, att = ids.to(device), att.to(device)
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=pad)
    processors: list[Any] = []
    if recorder is not None:
        recorder.steps.clear()
        recorder.active = raw_logits_reach_custom_processors(
            getattr(model, "generation_config", None)
        )
        if recorder.active:
            processors.append(recorder)
    if greedy or prompt_seeds is not None:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if not greedy:
            if len(prompt_seeds) != len(prompt_ids):
                raise ValueError(f"{len(prompt_seeds)} seeds for {len(prompt_ids)} prompts")
            seeds = row_seeds(prompt_seeds, num_samples)
            processors.append(RowSeededSampler(seeds, temperature, top_p, device, top_p_impl))
    else:
        # ``generate`` samples from what the warpers leave (its own ones switched off)
        kwargs.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
        processors.extend(sampling_warpers(temperature, top_p, top_p_impl))
    if stop_strings:
        kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    if processors:
        from transformers import LogitsProcessorList

        kwargs["logits_processor"] = LogitsProcessorList(processors)
    was_training = model.training
    model.eval()
    try:
        if share_prefill and num_samples > 1 and P > 1 and is_module:
            kwargs[cache_kwarg(model)] = shared_prefill(model, ids, att, num_samples)
        elif kv_cache == "static" and is_module:
            capacity = P + max_new_tokens + CUE_ROOM
            kwargs[cache_kwarg(model)] = static_cache(model, capacity)
            kwargs["disable_compile"] = True  # a cache written in place, not a compiled graph
            if state is not None:
                state.capacity = capacity
        elif kv_cache not in ("static", "dynamic"):
            raise ValueError(f"kv_cache must be 'static' or 'dynamic', got {kv_cache!r}")
        # the samples of a prompt next to each other (what ``num_return_sequences`` does, which
        # greedy ``generate`` -- the row-seeded path -- refuses)
        ids = ids.repeat_interleave(num_samples, dim=0)
        att = att.repeat_interleave(num_samples, dim=0)
        if state is not None and is_module:
            kwargs["return_dict_in_generate"] = True
        out = model.generate(input_ids=ids, attention_mask=att, **kwargs)
    finally:
        model.train(was_training)
    if state is not None and is_module:
        state.model, state.cache, state.prompt_mask = model, returned_cache(out), att
        out = out.sequences
    return [row.tolist() for row in out[:, P:].cpu()]
