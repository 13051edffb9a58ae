"""Grade records with a judge model: RAIL (expected score) or decoded score, with or without CoT.

:class:`Judge` turns :class:`~realjudge.data.records.JudgeRecord` items into prediction rows,
one per record, in input order, and never stops on a bad item. Two ways to read a score:

- score-only (``cot=False``): the prompt is followed directly by the score cue
  (``[RESULT] `` or ``So the overall score is ``) and one forward pass gives the distribution
  of the next token over the score tokens;
- chain of thought (``cot=True``): the judge writes ``samples`` feedbacks (batched
  generation with the KV cache, :func:`~realjudge.inference.rollout.sample`), each is cut right
  after its cue (or gets the cue appended when it never wrote it), and ONE batched
  :func:`~realjudge.inference.batch.judge_forward` over prompt + feedback reads the score
  distribution at the position after the cue -- the same layout and forward pass that training
  uses, so the score position cannot drift between them.

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
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from realjudge.data.records import JudgeRecord
from realjudge.inference.batch import judge_forward, make_batch
from realjudge.inference.rollout import (
    FORCED_CUE,
    OK,
    RETOKENIZED_CUE,
    finish_rollout,
    sample,
    stop_token_ids,
    written_text,
)
from realjudge.scoring.prompts import DEFAULT_SYSTEM, get_format, render_prompt
from realjudge.scoring.rail import score_distribution
from realjudge.scoring.vocab import ScoreVocab

log = logging.getLogger(__name__)

MODES = ("rail", "decode")
BACKENDS = ("auto", "transformers", "vllm")
_STATUS_RANK = {OK: 0, RETOKENIZED_CUE: 1, FORCED_CUE: 2}


@dataclass
class JudgeConfig:
    """How a :class:`Judge` reads scores.

    Attributes:
        mode: ``"rail"`` predicts the expected score ``sum_k k p_k``; ``"decode"`` predicts the
            score the judge wrote (see the module doc for the fallbacks).
        cot: write a chain of thought (feedback) before the score. ``False`` (score-only) puts
            the score cue right after the prompt: one forward pass per item.
        samples: chains of thought per item (``K``); their distributions and scores are
            averaged. Score-only reading is deterministic, so it always uses one.
        normalize: renormalise the score probabilities over the score tokens (RAIL proper).
            ``False`` keeps the raw full-vocabulary probabilities, as the REAL and TRACT
            authors' code does; the expected score is then ``sum_k k p_k`` of those raw
            probabilities and ``leaked_mass`` tells how much is missing. ``None`` (default):
            what the model was trained with (``rail_normalize`` in the ``realjudge.json`` of a
            ``realjudge train`` output, read by :func:`load_judge`), else ``True``.
        fmt: output format, ``"result"`` (``Feedback: ... [RESULT] N``, Prometheus) or
            ``"overall"`` (``... So the overall score is N``, the REAL authors'). ``None``
            (default): the model's training format (``realjudge.json``), else ``"result"``.
        max_new_tokens: length limit of a chain of thought.
        temperature: sampling temperature of the chain of thought. ``None`` means 1.0 when
            ``samples > 1`` and greedy decoding with one sample; 0 means greedy.
        top_p: nucleus sampling threshold (ignored when greedy); 0.9 is the REAL authors'
            rollout setting.
        batch_size: items per generation batch, and rows per scoring forward pass. With
            vLLM it is the number of requests handed over at once: use a large value (256).
        max_prompt_tokens: prompts longer than this are cut on the left (the REAL authors'
            truncation side); ``None`` keeps them whole.
        system: system prompt (``None`` or ``""`` for none).
        backend: ``"transformers"``, ``"vllm"``, or ``"auto"`` (vLLM when it is installed and
            a CUDA GPU is present, else transformers; decided by :func:`load_judge`).
        progress: show a progress bar (tqdm).
        seed: seeds torch before sampling, so sampled chains of thought are reproducible
            (``None`` leaves the generator alone).
    """

    mode: str = "rail"
    cot: bool = False
    samples: int = 1
    normalize: bool | None = None
    fmt: str | None = None
    max_new_tokens: int = 256
    temperature: float | None = None
    top_p: float = 0.9
    batch_size: int = 8
    max_prompt_tokens: int | None = 2048
    system: str | None = DEFAULT_SYSTEM
    backend: str = "auto"
    progress: bool = True
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.fmt is not None:
            get_format(self.fmt)  # raises on an unknown format
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 8:
            raise ValueError(f"max_prompt_tokens must be >= 8, got {self.max_prompt_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.cot and self.samples > 1 and self.greedy:
            raise ValueError(
                "several samples need sampling: set temperature > 0 (or leave it unset for 1.0)"
            )

    def with_model_defaults(self, defaults: Mapping[str, Any] | None = None) -> JudgeConfig:
        """This config with ``fmt`` / ``normalize`` that are ``None`` taken from ``defaults``
        (a model's, :func:`realjudge.models.read_judge_defaults`), else ``"result"`` / ``True``;
        values set explicitly are kept."""
        defaults = defaults or {}
        fmt = self.fmt if self.fmt is not None else defaults.get("fmt", "result")
        normalize = self.normalize
        if normalize is None:
            normalize = bool(defaults.get("normalize", True))
        return replace(self, fmt=fmt, normalize=normalize)

    @property
    def effective_samples(self) -> int:
        """Samples actually drawn: 1 without a chain of thought."""
        return self.samples if self.cot else 1

    @property
    def effective_temperature(self) -> float:
        """The sampling temperature; 0.0 means greedy decoding."""
        if self.temperature is None:
            return 1.0 if self.samples > 1 else 0.0
        return float(self.temperature)

    @property
    def greedy(self) -> bool:
        return self.effective_temperature == 0.0


# ------------------------------------------------------------------------------------------
# free-text score parser

_NUM = r"(\d+(?:\.\d+)?)"
_DEN = r"(?:\s*/\s*(\d+))?"
_PATTERNS = [
    # "[RESULT] 4", "[RESULT]: 4/5", "[RESULT] (4)", "[RESULT] **4**"
    re.compile(r"\[RESULT\]\s*[:=\-]?\s*[(\[]?\s*\**\s*" + _NUM + _DEN + r"(?!\d)", re.I),
    # "Score: 4", "So the overall score is 4.", "Rating - 4/5", "overall score is **4**"
    re.compile(r"\b(?:score|rating|grade)\b[^\d\n]{0,24}?" + _NUM + _DEN + r"(?!\d)", re.I),
    # "**4**", "**4/5**"
    re.compile(r"\*\*\s*" + _NUM + _DEN + r"\s*\*\*"),
    # the whole text is the score: "4", "4/5", "(4).", "[4]"
    re.compile(r"^\s*[(\[]?\s*" + _NUM + _DEN + r"\s*[)\]]?\s*\.?\s*$"),
]


def parse_score(text: str, scale: tuple[int, int] = (1, 5)) -> int | None:
    """The integer score a free-text judge output states, or ``None``.

    Patterns are tried from the most to the least explicit: ``[RESULT] N`` (also ``[RESULT]:
    N/5``), then ``score/rating/grade ... N`` (``Score: 4``, ``So the overall score is 4.``),
    then a bold ``**N**``, then a text that is only the number. The first pattern that occurs
    decides, using its LAST occurrence (judges state the verdict at the end). ``N/D`` counts
    only when ``D`` is the top of the scale. A non-integer or out-of-scale number gives
    ``None``: the output states a score, but not one of the scale.
    """
    if not text:
        return None
    lo, hi = scale
    for pattern in _PATTERNS:
        last = None
        for last in pattern.finditer(text):  # noqa: B007 - the last match is wanted
            pass
        if last is None:
            continue
        number, denominator = last.group(1), last.group(2)
        if denominator is not None and int(denominator) != hi:
            return None
        value = float(number)
        if not value.is_integer():
            return None
        value_int = int(value)
        return value_int if lo <= value_int <= hi else None
    return None


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

    When the cue's tokens merge with the end of the template, the cue is laid out on its own
    instead, so it is always tokenized exactly as the score vocabulary was checked.
    """
    ids = encode_prompt(tokenizer, prompt_text + vocab.cue_text)
    cue = encode_prompt(tokenizer, vocab.cue_text)
    if ids[-len(cue) :] != cue:
        ids = encode_prompt(tokenizer, prompt_text) + cue
    return ids


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
                ids = torch.tensor(vocab.token_ids, dtype=torch.long, device=logits.device)
                probs, leaked = score_distribution(logits[i], ids, normalize=self.config.normalize)
                out.append((probs.tolist(), float(leaked)))
        return out

    def _run_score_only(self, items: Sequence[JudgeItem]) -> list[list[SampleOutcome]]:
        dists = self._distributions(
            [it.prompt_ids for it in items], [[] for _ in items], [it.vocab for it in items]
        )
        return [[SampleOutcome(probs=p, leaked=leak)] for p, leak in dists]

    def _run_cot(self, items: Sequence[JudgeItem]) -> list[list[SampleOutcome]]:
        cfg = self.config
        k = cfg.effective_samples
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
        )
        prompts, responses, vocabs, partial = [], [], [], []
        for j, gen in enumerate(generated):
            item = items[j // k]
            rollout = finish_rollout(gen, self.tokenizer, item.vocab, self.stop_ids)
            prompts.append(item.prompt_ids)
            responses.append(rollout.response_ids)
            vocabs.append(item.vocab)
            parsed = None
            if rollout.sampled_score is None:
                parsed = parse_score(self._full_text(gen), item.record.scale)
            partial.append((rollout, parsed))
        dists = self._distributions(prompts, responses, vocabs)
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
    """

    def __init__(self, model: Any, tokenizer: Any, config: JudgeConfig | None = None) -> None:
        # fmt / normalize left unset: the usual defaults (load_judge fills in the model's first)
        self.config = (config or JudgeConfig()).with_model_defaults()
        self.tokenizer = tokenizer
        self.model = model
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
        use_vllm = self.config.backend == "vllm" or (
            self.config.backend == "auto" and not _is_torch_model(model)
        )
        if use_vllm:
            from realjudge.inference.vllm_backend import VLLMBackend

            self.backend: Any = VLLMBackend(model, tokenizer, self.config)
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

    ``fmt`` and ``normalize`` left ``None`` in ``config`` become what the model was trained with
    (:func:`realjudge.models.read_judge_defaults`), else ``"result"`` / ``True``.
    """
    from realjudge import models

    config = config or JudgeConfig()
    backend = resolve_backend(config.backend, model)
    if backend == "vllm":
        from realjudge.inference.vllm_backend import load_llm

        path = str(models._embedded_checkpoint()) if model == "embedded" else model
        tokenizer = models.load_tokenizer(path)
        llm = load_llm(path, dtype=dtype, seed=seed)
        config = config.with_model_defaults(models.read_judge_defaults(model))
        return Judge(llm, tokenizer, replace(config, backend="vllm"))
    loaded = models.load_model(model, device=device, dtype=dtype, seed=seed)
    config = config.with_model_defaults(loaded.judge_defaults)
    return Judge(loaded.model, loaded.tokenizer, replace(config, backend="transformers"))
