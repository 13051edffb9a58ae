"""How a judge reads scores: :class:`JudgeConfig`, shared by the judge and every backend.

A setting left ``None`` (``cot``, ``samples``, ``max_new_tokens``, ``fmt``, ``normalize``) is
the model's own: what a checkpoint written by ``realjudge train`` was trained with
(:func:`realjudge.models.read_judge_defaults`), else :data:`FALLBACKS`. :meth:`JudgeConfig.
with_model_defaults` fills them in, :func:`setting_sources` says where each came from and
:func:`describe_reading` puts the result in words for the console and the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from realjudge.scoring.prompts import DEFAULT_SYSTEM, get_format

MODES = ("rail", "decode")
BACKENDS = ("auto", "transformers", "vllm")
KV_CACHES = ("auto", "static", "dynamic")

FALLBACKS: dict[str, Any] = {
    "cot": False,
    "samples": 1,
    "max_new_tokens": 256,
    "fmt": "result",
    "normalize": True,
}
"""The value of a setting left ``None`` when the model records none."""

FROM_MODEL = "model"  # the checkpoint's realjudge.json
GIVEN = "given"  # set by the caller (a command-line flag, a Python argument)
FALLBACK = "default"  # neither: FALLBACKS


@dataclass
class JudgeConfig:
    """How a :class:`~realjudge.inference.judge.Judge` reads scores.

    Attributes:
        mode: ``"rail"`` predicts the expected score ``sum_k k p_k``; ``"decode"`` predicts the
            score the judge wrote (see :mod:`realjudge.inference.judge` for the fallbacks).
        cot: write a chain of thought (feedback) before the score. ``False`` (score-only) puts
            the score cue right after the prompt: one forward pass per item. ``None``
            (default): how the model was trained -- ``True`` for a TRACT, GRPO or REAL
            checkpoint of ``realjudge train``, else ``False``.
        samples: chains of thought per item (``K``); their distributions and scores are
            averaged. Score-only reading is deterministic, so it always uses one. ``None``
            (default): the model's (its ``realjudge.json``; training evaluates one greedy
            chain), else 1.
        normalize: renormalise the score probabilities over the score tokens (RAIL proper).
            ``False`` keeps the raw full-vocabulary probabilities, as the REAL and TRACT
            authors' code does; the expected score is then ``sum_k k p_k`` of those raw
            probabilities and ``leaked_mass`` tells how much is missing. ``None`` (default):
            what the model was trained with (``rail_normalize`` in the ``realjudge.json`` of a
            ``realjudge train`` output, read by ``load_judge``), else ``True``.
        fmt: output format, ``"result"`` (``Feedback: ... [RESULT] N``, Prometheus) or
            ``"overall"`` (``... So the overall score is N``, the REAL authors'). ``None``
            (default): the model's training format (``realjudge.json``), else ``"result"``.
        max_new_tokens: length limit of a chain of thought. ``None`` (default): the CoT budget
            a CoT-trained model was trained with (``max_new_tokens`` of its training config),
            else 256.
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
            a CUDA GPU is present, else transformers; decided by ``load_judge``).
        progress: show a progress bar (tqdm).
        seed: seeds torch before sampling, so sampled chains of thought are reproducible
            (``None`` leaves the generator alone).
        reread_cue: with a chain of thought (transformers backend), read every feedback's
            score distribution with a second forward pass over prompt + feedback. ``False``
            (default): a feedback in which the judge wrote the canonical cue itself gets it
            from the generation pass (the logits of the step after the cue, whose context is
            exactly prompt + feedback), and the others (cue forced or re-tokenized) from the
            generation's KV cache with only the cue's tokens run through the model.
            ``True`` is how evaluation read every row before, and the fp32 baseline of
            ``realjudge bench cpu``.
        kv_cache: the KV cache of chain-of-thought generation (transformers backend).
            ``"static"``: ``transformers``' ``StaticCache``, allocated once per batch for the
            prompt, ``max_new_tokens`` and a forced cue, written in place at every step;
            ``"dynamic"``: ``DynamicCache``, which copies every layer's keys and values into
            a new tensor at every step. ``"auto"`` (default): static on a CPU (where those
            copies are a measured part of a decode step: ``realjudge bench cpu``), dynamic
            elsewhere. Rollouts that share a prompt's prefill keep that shared cache.
    """

    mode: str = "rail"
    cot: bool | None = None
    samples: int | None = None
    normalize: bool | None = None
    fmt: str | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float = 0.9
    batch_size: int = 8
    max_prompt_tokens: int | None = 2048
    system: str | None = DEFAULT_SYSTEM
    backend: str = "auto"
    progress: bool = True
    seed: int | None = 0
    reread_cue: bool = False
    kv_cache: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {KV_CACHES}, got {self.kv_cache!r}")
        if self.fmt is not None:
            get_format(self.fmt)  # raises on an unknown format
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 8:
            raise ValueError(f"max_prompt_tokens must be >= 8, got {self.max_prompt_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.cot and (self.samples or 1) > 1 and self.greedy:
            raise ValueError(
                "several samples need sampling: set temperature > 0 (or leave it unset for 1.0)"
            )

    def with_model_defaults(self, defaults: Mapping[str, Any] | None = None) -> JudgeConfig:
        """This config with every setting left ``None`` (:data:`FALLBACKS`' keys) taken from
        ``defaults`` (a model's, :func:`realjudge.models.read_judge_defaults`), else from
        :data:`FALLBACKS`; values set explicitly are kept."""
        defaults = defaults or {}
        filled = {
            name: defaults.get(name, fallback)
            for name, fallback in FALLBACKS.items()
            if getattr(self, name) is None
        }
        return replace(self, **filled)

    @property
    def effective_samples(self) -> int:
        """Samples actually drawn: 1 without a chain of thought."""
        return (self.samples or 1) if self.cot else 1

    @property
    def effective_temperature(self) -> float:
        """The sampling temperature; 0.0 means greedy decoding."""
        if self.temperature is None:
            return 1.0 if (self.samples or 1) > 1 else 0.0
        return float(self.temperature)

    @property
    def greedy(self) -> bool:
        return self.effective_temperature == 0.0


def setting_sources(config: JudgeConfig, defaults: Mapping[str, Any] | None) -> dict[str, str]:
    """Where each of :data:`FALLBACKS`' settings of ``config`` (before
    :meth:`~JudgeConfig.with_model_defaults`) comes from: :data:`GIVEN`, :data:`FROM_MODEL`
    or :data:`FALLBACK`."""
    defaults = defaults or {}
    return {
        name: GIVEN
        if getattr(config, name) is not None
        else (FROM_MODEL if name in defaults else FALLBACK)
        for name in FALLBACKS
    }


def resolve_kv_cache(kv_cache: str, device: Any) -> str:
    """The KV cache ``kv_cache`` (:attr:`JudgeConfig.kv_cache`) means on ``device``:
    ``"auto"`` is ``"static"`` on a CPU and ``"dynamic"`` elsewhere."""
    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache must be one of {KV_CACHES}, got {kv_cache!r}")
    if kv_cache != "auto":
        return kv_cache
    import torch

    return "static" if torch.device(device).type == "cpu" else "dynamic"


def describe_reading(config: JudgeConfig, sources: Mapping[str, str] | None = None) -> str:
    """The reading mode of a resolved ``config`` in words, e.g. ``"CoT (1 sample, greedy, up
    to 64 new tokens) + RAIL, format result, renormalised; cot, max_new_tokens from the
    model"``."""
    if config.cot:
        k = config.effective_samples
        how = "greedy" if config.greedy else f"temperature {config.effective_temperature:g}"
        head = (
            f"CoT ({k} sample{'s' if k != 1 else ''}, {how}, "
            f"up to {config.max_new_tokens} new tokens)"
        )
    else:
        head = "score-only"
    text = f"{head} + {'RAIL' if config.mode == 'rail' else 'decode'}, format {config.fmt}, "
    text += "renormalised" if config.normalize else "raw probabilities"
    relevant = [n for n in FALLBACKS if config.cot or n not in ("samples", "max_new_tokens")]
    inherited = [n for n in relevant if (sources or {}).get(n) == FROM_MODEL]
    if inherited:
        text += f"; {', '.join(inherited)} from the model"
    return text
