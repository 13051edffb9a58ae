"""Grade records with a judge model: RAIL (expected score) or decoded score, with or without CoT.

:class:`Judge` turns :class:`~realjudge.data.records.JudgeRecord` items into prediction rows,
one per record, in input order, and never stops on a bad item. Two ways to read a score:

- score-only (``cot=False``): the prompt is followed directly by the score cue
  (``[RESULT] `` or ``So the overall score is ``) and one forward pass gives the distribution
  of the next token over the score tokens;
- chain of thought (``cot=True``): the judge writes ``samples`` feedbacks (batched
  generation with the KV cache, :func:`~realjudge.inference.rollout.sample`), each is cut right
  after its cue (or gets the cue appended when it never wrote it). Where the judge wrote the
  canonical cue itself, the score distribution is the generation pass's next-step logits
  after the cue (their context is exactly prompt + feedback; recorded by
  :class:`~realjudge.inference.rollout.CueLogitsRecorder`, as REAL's trainer reads its
  rewards); the other feedbacks (cue forced or re-tokenized) are read from the generation's
  KV cache: the feedback cut where the cue goes, then only the cue's tokens run through the
  model (:func:`~realjudge.inference.rollout.logits_after_rollouts`; the context of a forward
  pass over prompt + feedback + cue, without computing it again).
  ``JudgeConfig.reread_cue`` sends every feedback through ONE batched
  :func:`~realjudge.inference.batch.judge_forward` over prompt + feedback instead, the same
  layout and forward pass that training uses, read at the position after the cue.

From the distribution ``p`` over the scores ``k``:

- ``mode="rail"``: the prediction is the expected score ``sum_k k p_k`` (averaged over samples);
- ``mode="decode"``: the prediction is the score the model wrote itself after the cue; when it
  wrote none (the cue was forced, or something else followed it), the score that
  :func:`parse_score` finds in its full text, else the argmax of ``p`` at the cue (counted in
  ``n_decode_fallback``).

Both numbers are in every row (``expected_score`` and ``decoded_score``), so one run can be
scored both ways.

Prediction row keys:

``id``, ``gold``
    from the record.
``prediction``
    ``expected_score`` in rail mode, ``decoded_score`` in decode mode.
``expected_score``
    ``sum_k k * distribution[k]`` (mean over samples).
``decoded_score``
    the decoded score (an int with one sample, the mean over samples with several).
``distribution``
    ``K`` floats: the score probabilities, mean over samples. They sum to 1 when
    ``normalize=True``; to ``1 - leaked_mass`` with raw probabilities.
``leaked_mass``
    probability mass on tokens that are not scores (mean over samples).
``feedback``
    the chain of thought up to and including the cue (a list with several samples; ``""``
    without CoT).
``status``
    ``ok`` | ``retokenized_cue`` | ``forced_cue`` (the worst over samples) | ``error: ...``.
``samples``, ``n_forced``, ``n_decode_fallback``
    number of samples; samples whose cue had to be appended (forced or re-tokenized);
    samples whose decoded score came from the argmax rather than from the model's text.
``truncated``
    the prompt was cut on the left to ``max_prompt_tokens``.
``sample_expected``, ``sample_decoded``
    per-sample values, only with several samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from realjudge.data.records import JudgeRecord
from realjudge.inference.batch import judge_forward, make_batch
from realjudge.inference.items import JudgeItem, SampleOutcome
from realjudge.inference.parse import parse_score
from realjudge.inference.rollout import (
    FORCED_CUE,
    OK,
    RETOKENIZED_CUE,
    CacheFull,
    CueLogitsRecorder,
    GenerationState,
    compact_score_distribution,
    finish_rollout,
    logits_after_cue,
    logits_after_rollouts,
    sample,
    stop_token_ids,
    written_text,
)
from realjudge.inference.settings import (
    BACKENDS,
    MODES,
    JudgeConfig,
    describe_reading,
    resolve_kv_cache,
    setting_sources,
)
from realjudge.scoring.prompts import render_prompt
from realjudge.scoring.rail import score_distribution
from realjudge.scoring.vocab import ScoreVocab, encode_continuation
from realjudge.seeds import derive_seed

__all__ = [
    "BACKENDS",
    "MODES",
    "Judge",
    "JudgeConfig",
    "JudgeItem",
    "SampleOutcome",
    "TransformersBackend",
    "build_row",
    "encode_prompt",
    "error_row",
    "load_judge",
    "parse_score",
    "resolve_backend",
    "score_prompt_ids",
    "vllm_available",
]

log = logging.getLogger(__name__)

_STATUS_RANK = {OK: 0, RETOKENIZED_CUE: 1, FORCED_CUE: 2}


# ------------------------------------------------------------------------------------------
# items, per-sample outcomes and rows (shared by every backend)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt, without adding special tokens.

    The chat template already writes whatever special tokens the model expects (BOS included),
    and training (:mod:`realjudge.train.examples`) tokenizes the same way, so a prompt gets the
    same ids at training and at evaluation time.
    """
    return list(tokenizer.encode(text, add_special_tokens=False))


def score_prompt_ids(tokenizer: Any, prompt_text: str, vocab: ScoreVocab) -> list[int]:
    """Prompt + score cue, so that the next token is the score.

    The text is tokenized whole when the prompt's tokens stay a prefix of it (or the cue's own
    tokens end it). When the cue's tokens merge with the end of the template, the cue is laid
    out after the prompt's tokens as it continues their text
    (:func:`~realjudge.scoring.vocab.encode_continuation`; a SentencePiece tokenizer would
    open a cue encoded on its own with a word-start space of its own).
    """
    ids = encode_prompt(tokenizer, prompt_text + vocab.cue_text)
    cue = encode_prompt(tokenizer, vocab.cue_text)
    if ids[-len(cue) :] == cue:
        return ids
    head = encode_prompt(tokenizer, prompt_text)
    if ids[: len(head)] == head and len(ids) > len(head):
        return ids
    return head + encode_continuation(tokenizer, prompt_text, vocab.cue_text)


def _gold(record: Any) -> float | None:
    gold = getattr(record, "gold", None)
    return None if gold is None else float(gold)


def error_row(record: Any, error: BaseException | str) -> dict[str, Any]:
    """The row of an item that could not be graded (same keys as a prediction row)."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    message = " ".join(str(message).split())[:500]
    return {
        "id": getattr(record, "id", None),
        "gold": _gold(record),
        "prediction": None,
        "expected_score": None,
        "decoded_score": None,
        "distribution": None,
        "leaked_mass": None,
        "feedback": None,
        "status": f"error: {message}",
        "samples": 0,
        "n_forced": 0,
        "n_decode_fallback": 0,
        "truncated": None,
    }


def build_row(item: JudgeItem, outcomes: Sequence[SampleOutcome], config: JudgeConfig) -> dict:
    """Aggregate the samples of one item into its prediction row (see the module doc)."""
    if not outcomes:
        raise ValueError("no samples to aggregate")
    scores = item.vocab.scores
    n = len(outcomes)
    probs = [sum(o.probs[j] for o in outcomes) / n for j in range(len(scores))]
    leaked = sum(o.leaked for o in outcomes) / n
    per_expected = [sum(k * p for k, p in zip(scores, o.probs, strict=True)) for o in outcomes]
    expected = sum(per_expected) / n
    per_decoded: list[int] = []
    n_fallback = 0
    for o in outcomes:
        if o.sampled_score is not None:
            per_decoded.append(o.sampled_score)
        elif o.parsed_score is not None:
            per_decoded.append(o.parsed_score)
        else:
            best = max(range(len(scores)), key=lambda j: o.probs[j])
            per_decoded.append(scores[best])
            n_fallback += int(config.cot)  # without a CoT the argmax IS the decode
    decoded: float | int = per_decoded[0] if n == 1 else sum(per_decoded) / n
    status = max((o.status for o in outcomes), key=lambda s: _STATUS_RANK.get(s, 3))
    row: dict[str, Any] = {
        "id": item.record.id,
        "gold": _gold(item.record),
        "prediction": expected if config.mode == "rail" else decoded,
        "expected_score": expected,
        "decoded_score": decoded,
        "distribution": probs,
        "leaked_mass": leaked,
        "feedback": outcomes[0].feedback if n == 1 else [o.feedback for o in outcomes],
        "status": status,
        "samples": n,
        "n_forced": sum(1 for o in outcomes if o.status != OK),
        "n_decode_fallback": n_fallback,
        "truncated": item.truncated,
    }
    if n > 1:
        row["sample_expected"] = per_expected
        row["sample_decoded"] = per_decoded
    return row


# ------------------------------------------------------------------------------------------
# the transformers backend


class TransformersBackend:
    """Runs items through a transformers causal LM (batched generate + one judge_forward)."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, config: JudgeConfig) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.stop_ids = stop_token_ids(tokenizer, model)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def run(self, items: Sequence[JudgeItem]) -> list[list[SampleOutcome]]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                if self.config.cot:
                    return self._run_cot(items)
                return self._run_score_only(items)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def _distributions(
        self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], vocabs
    ) -> list[tuple[list[float], float]]:
        """Score distribution after each (prompt, response), ``batch_size`` rows per pass."""
        out: list[tuple[list[float], float]] = []
        step = self.config.batch_size
        for start in range(0, len(prompts), step):
            batch = make_batch(
                prompts[start : start + step], responses[start : start + step], self.pad_id
            ).to(self.device)
            logits = judge_forward(self.model, batch).score_logits
            for i, vocab in enumerate(vocabs[start : start + step]):
                out.append(self._distribution(logits[i], vocab))
        return out

    def _distribution(self, logits: torch.Tensor, vocab: ScoreVocab) -> tuple[list[float], float]:
        """The score distribution and leaked mass of one row's next-token ``logits``."""
        ids = torch.tensor(vocab.token_ids, dtype=torch.long, device=logits.device)
        probs, leaked = score_distribution(logits, ids, normalize=self.config.normalize)
        return probs.tolist(), float(leaked)

    def _run_score_only(self, items: Sequence[JudgeItem]) -> list[list[SampleOutcome]]:
        dists = self._distributions(
            [it.prompt_ids for it in items], [[] for _ in items], [it.vocab for it in items]
        )
        return [[SampleOutcome(probs=p, leaked=leak)] for p, leak in dists]

    def _run_cot(self, items: Sequence[JudgeItem]) -> list[list[SampleOutcome]]:
        cfg = self.config
        k = cfg.effective_samples
        # the score distribution after a cue the judge wrote itself comes from the generation
        # pass (one recorder needs one score vocabulary for the whole batch)
        score_ids = {tuple(it.vocab.token_ids) for it in items}
        recorder = None
        if not cfg.reread_cue and len(score_ids) == 1:
            recorder = CueLogitsRecorder(next(iter(score_ids)))
        # and after a forced (or re-tokenized) cue from the generation's KV cache: only the
        # cue's tokens run through the model
        state = GenerationState() if not cfg.reread_cue and _is_torch_model(self.model) else None
        generated = sample(
            self.model,
            self.tokenizer,
            [it.prompt_ids for it in items],
            num_samples=k,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.effective_temperature or 1.0,
            top_p=cfg.top_p,
            greedy=cfg.greedy,
            stop_strings=sorted({t for it in items for t in it.vocab.stop_strings}),
            recorder=recorder,
            state=state,
            kv_cache=resolve_kv_cache(cfg.kv_cache, self.device),
            # sampled chains drawn per record (seed, id): an item's chains do not depend on
            # which items share its batch, on --batch-size, --limit or the input's order
            prompt_seeds=(
                [derive_seed("judge", cfg.seed, it.record.id) for it in items]
                if not cfg.greedy and cfg.seed is not None
                else None
            ),
        )
        steps = recorder.result() if recorder is not None else None
        partial, dists, reread = [], [], []
        for j, gen in enumerate(generated):
            item = items[j // k]
            rollout = finish_rollout(gen, self.tokenizer, item.vocab, self.stop_ids)
            parsed = None
            if rollout.sampled_score is None:
                parsed = parse_score(self._full_text(gen), item.record.scale)
            partial.append((rollout, parsed))
            compact = logits_after_cue(steps[j], rollout) if steps is not None else None
            if compact is None:
                reread.append(j)
                dists.append(None)
            else:
                probs, leaked = compact_score_distribution(compact, normalize=cfg.normalize)
                dists.append((probs.tolist(), float(leaked)))
        cached_logits = None
        if reread and state is not None and state.ready:
            try:
                cached_logits = logits_after_rollouts(
                    state, reread, [partial[j][0] for j in reread]
                )
            except CacheFull:  # a static cache without room for the cue: the forward below
                pass
        if cached_logits is not None:
            for j, row in zip(reread, cached_logits, strict=True):
                dists[j] = self._distribution(row, items[j // k].vocab)
        elif reread:
            rows = [(items[j // k], partial[j][0]) for j in reread]
            got = self._distributions(
                [it.prompt_ids for it, _ in rows],
                [r.response_ids for _, r in rows],
                [it.vocab for it, _ in rows],
            )
            for j, dist in zip(reread, got, strict=True):
                dists[j] = dist
        outcomes: list[list[SampleOutcome]] = [[] for _ in items]
        for j, ((rollout, parsed), (p, leak)) in enumerate(zip(partial, dists, strict=True)):
            outcomes[j // k].append(
                SampleOutcome(
                    probs=p,
                    leaked=leak,
                    status=rollout.status,
                    feedback=rollout.feedback,
                    sampled_score=rollout.sampled_score,
                    parsed_score=parsed,
                )
            )
        return outcomes

    def _full_text(self, generated: Sequence[int]) -> str:
        return written_text(generated, self.tokenizer, self.stop_ids)


# ------------------------------------------------------------------------------------------
# the judge


def _is_torch_model(model: Any) -> bool:
    return isinstance(model, torch.nn.Module)


class Judge:
    """Grade records with ``model`` (a transformers causal LM, or a ``vllm.LLM`` with
    ``backend="vllm"``) and its ``tokenizer``.

    ``predict`` yields one row per record, in input order; see the module doc for the keys.
    Items are grouped by prompt length inside windows of ``16 * batch_size`` records, so rows
    stream out window by window.

    Settings left ``None`` in ``config`` get :data:`~realjudge.inference.settings.FALLBACKS`
    (:func:`load_judge` fills in the model's own first). ``sources`` says where each came from
    (:func:`~realjudge.inference.settings.setting_sources`; :func:`load_judge` passes it).
    ``generation_config``: the checkpoint's generation config for a ``vllm.LLM``, whose end
    tokens then end a CoT as they do in vLLM (a transformers model brings its own).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: JudgeConfig | None = None,
        *,
        sources: Mapping[str, str] | None = None,
        generation_config: Any = None,
    ) -> None:
        config = config or JudgeConfig()
        self.sources = dict(sources) if sources is not None else setting_sources(config, {})
        self.config = config.with_model_defaults()
        self.tokenizer = tokenizer
        self.model = model
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
        use_vllm = self.config.backend == "vllm" or (
            self.config.backend == "auto" and not _is_torch_model(model)
        )
        if use_vllm:
            from realjudge.inference.vllm_backend import VLLMBackend

            self.backend: Any = VLLMBackend(
                model, tokenizer, self.config, generation_config=generation_config
            )
        else:
            if not _is_torch_model(model):
                raise TypeError(
                    f"backend 'transformers' needs a torch model, got {type(model).__name__}"
                )
            self.backend = TransformersBackend(model, tokenizer, self.config)
        if self.config.samples > 1 and not self.config.cot:
            log.warning(
                "samples=%d ignored: score-only reading is deterministic", self.config.samples
            )
        self._vocabs: dict[tuple[int, int], ScoreVocab] = {}
        self.window = 16 * self.config.batch_size

    @property
    def reading(self) -> str:
        """The reading mode in words (:func:`~realjudge.inference.settings.describe_reading`)."""
        return describe_reading(self.config, self.sources)

    # -- preparation ---------------------------------------------------------------------

    def vocab_for(self, scale: tuple[int, int]) -> ScoreVocab:
        scale = (int(scale[0]), int(scale[1]))
        if scale not in self._vocabs:
            self._vocabs[scale] = ScoreVocab.from_tokenizer(self.tokenizer, self.config.fmt, scale)
        return self._vocabs[scale]

    def prepare(self, record: JudgeRecord) -> JudgeItem:
        """Render, tokenize and (left-)truncate one record."""
        cfg = self.config
        vocab = self.vocab_for(record.scale)
        text = render_prompt(record, self.tokenizer, cfg.fmt, cfg.system or None)
        if cfg.cot:
            ids = encode_prompt(self.tokenizer, text)
        else:
            ids = score_prompt_ids(self.tokenizer, text, vocab)
        truncated = False
        if cfg.max_prompt_tokens is not None and len(ids) > cfg.max_prompt_tokens:
            ids = ids[-cfg.max_prompt_tokens :]
            truncated = True
        if not ids:
            raise ValueError("the rendered prompt is empty")
        return JudgeItem(record=record, vocab=vocab, prompt_ids=ids, truncated=truncated)

    # -- running -------------------------------------------------------------------------

    def _run_guarded(self, items: list[JudgeItem]) -> list[list[SampleOutcome] | BaseException]:
        """Run a batch; when it fails, run its items one by one so only bad ones fail."""
        try:
            results = self.backend.run(items)
            if len(results) != len(items):
                raise RuntimeError(f"backend returned {len(results)} results for {len(items)}")
            return list(results)
        except Exception as e:  # noqa: BLE001 - one bad item must not stop the run
            if len(items) == 1:
                return [e]
            log.warning("batch of %d failed (%s); retrying item by item", len(items), e)
        out: list[list[SampleOutcome] | BaseException] = []
        for item in items:
            try:
                out.append(self.backend.run([item])[0])
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out

    def _predict_window(self, records: list[Any], bar: Any) -> Iterator[dict]:
        """Grade one window, shortest prompts first; yield rows in input order as soon as
        every earlier row of the window is done."""
        rows: list[dict | None] = [None] * len(records)
        prepared: list[tuple[int, JudgeItem]] = []
        for pos, record in enumerate(records):
            try:
                prepared.append((pos, self.prepare(record)))
            except Exception as e:  # noqa: BLE001
                rows[pos] = error_row(record, e)
                bar.update(1)
        prepared.sort(key=lambda pi: len(pi[1].prompt_ids))
        step = self.config.batch_size
        done = 0  # rows[:done] were yielded
        for start in range(0, len(prepared), step):
            chunk = prepared[start : start + step]
            results = self._run_guarded([item for _, item in chunk])
            for (pos, item), result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    rows[pos] = error_row(item.record, result)
                    continue
                try:
                    rows[pos] = build_row(item, result, self.config)
                except Exception as e:  # noqa: BLE001
                    rows[pos] = error_row(item.record, e)
            bar.update(len(chunk))
            while done < len(rows) and rows[done] is not None:
                yield rows[done]  # type: ignore[misc]
                done += 1
        while done < len(rows):  # only error rows can be left (no batch ran after them)
            yield rows[done]  # type: ignore[misc]
            done += 1

    def predict(self, records: Iterable[JudgeRecord]) -> Iterator[dict]:
        """Yield one prediction row per record, in input order (see the module doc)."""
        from tqdm.auto import tqdm

        total = len(records) if hasattr(records, "__len__") else None  # type: ignore[arg-type]
        if self.config.seed is not None:
            torch.manual_seed(self.config.seed)
        desc = ("cot " if self.config.cot else "score-only ") + self.config.mode
        with tqdm(
            total=total, disable=not self.config.progress, unit="item", desc=desc, leave=False
        ) as bar:
            window: list[Any] = []
            for record in records:
                window.append(record)
                if len(window) >= self.window:
                    yield from self._predict_window(window, bar)
                    window = []
            if window:
                yield from self._predict_window(window, bar)

    def predict_all(self, records: Iterable[JudgeRecord]) -> list[dict]:
        return list(self.predict(records))


# ------------------------------------------------------------------------------------------
# loading


def vllm_available() -> bool:
    """vLLM is importable and a CUDA GPU is present."""
    import importlib.util
    import sys

    try:
        found = importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):  # a module without a spec, e.g. a stub
        found = "vllm" in sys.modules
    return found and torch.cuda.is_available()


def resolve_backend(backend: str, model_spec: str) -> str:
    """``"transformers"`` or ``"vllm"`` for a config's ``backend`` and a ``--model`` spec."""
    if backend == "transformers":
        return "transformers"
    if backend == "vllm":
        if not vllm_available():
            raise RuntimeError(
                "backend 'vllm' needs the vllm package and a CUDA GPU "
                "(pip install 'realjudge[vllm]'); use --backend transformers"
            )
        if model_spec == "tiny":
            raise ValueError("the 'tiny' test model exists only in memory; vLLM cannot load it")
        return "vllm"
    if backend != "auto":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return "vllm" if model_spec != "tiny" and vllm_available() else "transformers"


def load_judge(
    model: str,
    config: JudgeConfig | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    seed: int = 0,
) -> Judge:
    """Load ``model`` (a :func:`realjudge.models.load_model` spec) behind the configured backend.

    Settings left ``None`` in ``config`` (``cot``, ``samples``, ``max_new_tokens``, ``fmt``,
    ``normalize``) become what the model was trained with
    (:func:`realjudge.models.read_judge_defaults`: a CoT-trained judge is read with a CoT),
    else :data:`~realjudge.inference.settings.FALLBACKS`; ``Judge.sources`` records which.
    """
    from realjudge import models

    config = config or JudgeConfig()
    backend = resolve_backend(config.backend, model)
    defaults = models.read_judge_defaults(model)
    sources = setting_sources(config, defaults)
    config = config.with_model_defaults(defaults)
    if backend == "vllm":
        from realjudge.inference.vllm_backend import load_llm

        path = str(models._embedded_checkpoint()) if model == "embedded" else model
        tokenizer = models.load_tokenizer(path)
        llm = load_llm(path, dtype=dtype, seed=seed)
        return Judge(
            llm,
            tokenizer,
            replace(config, backend="vllm"),
            sources=sources,
            generation_config=models.load_generation_config(path),
        )
    loaded = models.load_model(model, device=device, dtype=dtype, seed=seed)
    return Judge(
        loaded.model, loaded.tokenizer, replace(config, backend="transformers"), sources=sources
    )
