"""Rollout backends for the RL objectives: transformers ``generate`` or vLLM through TRL.

:func:`rollout_backend` gives :func:`realjudge.train.rl.sample_groups` an object with one
method, ``sample(tokenizer, prompt_ids, *, num_samples, max_new_tokens, temperature, top_p,
greedy, stop_strings, ...)`` -> ``len(prompt_ids) * num_samples`` token lists, the samples of
a prompt next to each other, each then cut at its cue by
:func:`~realjudge.inference.rollout.finish_rollout`. Which one is ``cfg.rollout_backend``:

* ``hf`` -- :class:`HFRollouts`: :func:`realjudge.inference.rollout.sample` (``generate``) on
  the training model as :func:`generation_model` hands it out. Single process and DDP: the
  unwrapped module (``accelerator.unwrap_model``). DeepSpeed ZeRO-3 and FSDP: TRL's
  ``unwrap_model_for_generation`` (ZeRO-3: all parameters gathered, DeepSpeed's hooks
  removed for the duration) plus TRL's ``DistributedBackend.summon_full_params(model,
  recurse=False)`` (FSDP1: the parameters of the top-level unit -- embeddings, final norm,
  LM head -- gathered; the inner units gather their own in their forward; FSDP2: nothing
  to do), and under FSDP ``generate`` runs with ``synced_gpus=True`` so that every process
  makes the same number of forward passes (transformers only turns that on by itself for a
  module that is itself FSDP-wrapped). TRL is imported only in the sharded cases (its
  import pulls in ``datasets``).
* ``vllm`` -- :class:`VLLMRollouts`: TRL's ``VLLMGeneration`` builds the engine
  (``vllm_mode=colocate``: a ``vllm.LLM`` in every process with
  ``distributed_executor_backend="external_launcher"``, as TRL's ``GRPOTrainer`` does;
  ``server``: TRL's ``VLLMClient`` on the main process, talking to ``trl vllm-serve``) and
  pushes the weights (``sync_weights``: PEFT adapters merged, ZeRO-3 / FSDP parameters
  gathered one by one, TRL's code). The trainer calls :func:`after_optimizer_step` after each
  optimiser step; the new weights are pushed before the next rollout (and before the first
  one), so vLLM always samples from the current policy and several updates between two
  rollouts cost one transfer.

Sampling settings are the HF path's (:func:`vllm_sampling_kwargs`): temperature, top-p, no
top-k, ``max_new_tokens``, the score vocabulary's stop strings (kept in the output, so the cue
and the score token are there to read) and the end-of-turn token ids, ``n = G`` per prompt,
greedy as temperature 0. Seeds: colocate gives each prompt its own seed, the one
``sample_groups`` derives from the run's seed and the prompt's position in the run
(:func:`~realjudge.train.rl.rollout_seeds`, as on the HF path), so a run is reproducible given
its vLLM build, whatever the number of processes; vLLM seeds the ``G`` samples of a prompt
``seed, seed + 1, ...``. Server mode sends one request for all prompts of a call, and
one seed for all of them would correlate the samples of different prompts, so it sends none:
the server's own random state (``trl vllm-serve --seed``) decides and runs are not
reproducible. Either way the samples differ from ``generate``'s for the same seed (another
sampler), not their distribution.

The FSDP1 gather is tested on real shards (two CPU processes, torchrun + gloo); ZeRO-3 and
FSDP2 only through fakes. The vLLM path is tested on CPU against fakes of the boundary TRL exposes
(``tests/train/test_generation.py``): a fake ``vllm`` module (``LLM``, ``SamplingParams``) and
a fake ``VLLMClient`` with TRL's method names. It has not been run with a real vLLM here.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from realjudge.inference.rollout import sample, stop_token_ids
from realjudge.train.examples import derive_seed

BACKENDS = ("hf", "vllm")
VLLM_MODES = ("colocate", "server")

# ---------------------------------------------------------------------------------------------
# transformers generate
# ---------------------------------------------------------------------------------------------


def sharding(accelerator: Any) -> str | None:
    """``"zero3"`` (DeepSpeed ZeRO-3), ``"fsdp"`` (FSDP 1 or 2) or ``None`` (single process,
    DDP, ZeRO-1/2: every process holds the whole model)."""
    kind = accelerator.distributed_type.name
    if kind == "FSDP":
        return "fsdp"
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if kind == "DEEPSPEED" and plugin is not None and plugin.zero_stage == 3:
        return "zero3"
    return None


class _SyncedGenerate:
    """Forwards everything to ``model`` but generates with ``synced_gpus=True`` (FSDP: every
    process must run the same number of forward passes, or the all-gathers of the units
    deadlock)."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, **kwargs: Any) -> Any:
        return self._model.generate(synced_gpus=True, **kwargs)


@contextmanager
def generation_model(accelerator: Any, model: Any) -> Iterator[Any]:
    """The model to call ``generate`` on, with sharded weights gathered for the duration (see
    the module doc). ``model``: the model as ``accelerator.prepare`` returned it."""
    kind = sharding(accelerator)
    if kind is None:
        yield accelerator.unwrap_model(model)
        return
    try:
        from trl.distributed import DistributedBackend
        from trl.models.utils import unwrap_model_for_generation
    except ImportError as err:  # pragma: no cover - trl is a dependency
        raise ImportError(
            f"rollouts under {kind} need TRL's generation helpers: pip install trl"
        ) from err
    with (
        unwrap_model_for_generation(model, accelerator) as unwrapped,
        DistributedBackend(accelerator).summon_full_params(model, recurse=False),
    ):
        yield _SyncedGenerate(unwrapped) if kind == "fsdp" else unwrapped


class HFRollouts:
    """``generate`` on the training model (:func:`realjudge.inference.rollout.sample`)."""

    name = "hf"

    def __init__(self, model: Any) -> None:
        self.model = model

    def sample(self, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], **kwargs: Any):
        return sample(self.model, tokenizer, prompt_ids, **kwargs)


# ---------------------------------------------------------------------------------------------
# vLLM through TRL
# ---------------------------------------------------------------------------------------------


def vllm_sampling_kwargs(
    *,
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    greedy: bool,
    stop_strings: Sequence[str] | None,
    stop_ids: Sequence[int],
) -> dict[str, Any]:
    """vLLM ``SamplingParams`` fields for the settings ``sample`` gives ``generate``: the same
    temperature and top-p, no top-k, at most ``max_new_tokens``, stopping at a stop string
    (kept in the output: the cue and the score token are read from it) or an end token;
    greedy is temperature 0."""
    return {
        "n": num_samples,
        "temperature": 0.0 if greedy else float(temperature),
        "top_p": 1.0 if greedy else float(top_p),
        "top_k": 0,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "max_tokens": int(max_new_tokens),
        "stop": list(stop_strings or []),
        "include_stop_str_in_output": True,
        "stop_token_ids": sorted(int(t) for t in stop_ids),
    }


class VLLMRollouts:
    """Rollouts from vLLM (see the module doc). ``engine``: TRL's ``VLLMGeneration`` (or
    anything with its ``mode``, ``llm`` / ``generate``, ``sync_weights`` and sampling
    attributes)."""

    name = "vllm"

    def __init__(self, engine: Any, stop_ids: Sequence[int]) -> None:
        self.engine = engine
        self.stop_ids = sorted(int(t) for t in stop_ids)
        self.stale = True  # vLLM holds the checkpoint's weights, not necessarily the model's
        self.syncs = 0

    @classmethod
    def create(cls, ctx: Any, model: Any) -> VLLMRollouts:
        """TRL's ``VLLMGeneration`` for the run: colocate builds a ``vllm.LLM`` per process from
        the starting checkpoint (``model.name_or_path``), server connects to ``trl vllm-serve``
        (main process). Collective."""
        from trl.generation.vllm_generation import VLLMGeneration

        acc, cfg = ctx.accelerator, ctx.cfg
        # FSDP1 keeps the top-level unit's parameters on the wrapper: TRL walks the wrapped
        # model; elsewhere the plain module carries the names vLLM knows.
        target = model if sharding(acc) == "fsdp" else acc.unwrap_model(model)
        engine = VLLMGeneration(
            model=target,
            accelerator=acc,
            processing_class=ctx.tokenizer,
            mode=cfg.vllm_mode,
            server_host=cfg.vllm_server_host,
            server_port=cfg.vllm_server_port,
            server_timeout=cfg.vllm_server_timeout,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
            max_model_length=cfg.max_prompt_tokens + cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_completion_length=cfg.max_new_tokens,
            logprobs=None,
        )
        return cls(engine, stop_token_ids(ctx.tokenizer, acc.unwrap_model(model)))

    # -- weights ------------------------------------------------------------------------------

    def after_optimizer_step(self) -> None:
        """The training weights changed: push them before the next rollout."""
        self.stale = True

    def sync(self) -> None:
        """Push the current weights to vLLM if they changed since the last push (collective:
        gathering sharded parameters needs every process)."""
        if self.stale:
            self.engine.sync_weights()
            self.stale = False
            self.syncs += 1

    # -- sampling -----------------------------------------------------------------------------

    def sample(
        self,
        tokenizer: Any,
        prompt_ids: Sequence[Sequence[int]],
        *,
        num_samples: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = False,
        stop_strings: Sequence[str] | None = None,
        prompt_seeds: Sequence[int] | None = None,
        dtype: Any = None,
        share_prefill: bool = True,
        recorder: Any = None,
    ) -> list[list[int]]:
        """Like :func:`realjudge.inference.rollout.sample`. ``prompt_seeds`` (colocate: each
        prompt's ``SamplingParams.seed``; default: derived from ``torch.initial_seed()`` and
        the prompt's index). ``dtype``, ``share_prefill`` and ``recorder`` are ``generate``'s
        and ignored: vLLM returns no logits at the cue, so REAL reads its rollouts' score
        distributions with one forward pass (:meth:`RealObjective.finish_prepare
        <realjudge.train.rl.RealObjective.finish_prepare>`)."""
        self.sync()
        kwargs = vllm_sampling_kwargs(
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            greedy=greedy,
            stop_strings=stop_strings,
            stop_ids=self.stop_ids,
        )
        prompts = [list(p) for p in prompt_ids]
        if self.engine.mode == "colocate":
            if prompt_seeds is None:
                base = torch.initial_seed()
                prompt_seeds = [derive_seed("vllm", base, i) for i in range(len(prompts))]
            outs = self._colocate(prompts, kwargs, list(prompt_seeds))
        else:
            outs = self._server(prompts, kwargs)
        if len(outs) != len(prompts) * num_samples:
            raise RuntimeError(
                f"vLLM returned {len(outs)} completions for {len(prompts)} prompts x {num_samples}"
            )
        return outs

    def _colocate(self, prompts: list[list[int]], kwargs: dict[str, Any], seeds: list[int]):
        from vllm import SamplingParams

        params = [SamplingParams(**kwargs, seed=s) for s in seeds]
        outputs = self.engine.llm.generate(
            [{"prompt_token_ids": p} for p in prompts], sampling_params=params, use_tqdm=False
        )
        outs: list[list[int]] = []
        for out in outputs:
            if len(out.outputs) != kwargs["n"]:
                raise RuntimeError(f"vLLM returned {len(out.outputs)} samples, not {kwargs['n']}")
            outs.extend(list(c.token_ids) for c in out.outputs)
        return outs

    def _server(self, prompts: list[list[int]], kwargs: dict[str, Any]):
        """TRL's ``VLLMGeneration.generate``: the prompts of all processes go to the server in
        one request from the main process; each process gets its own completions back."""
        e, n = self.engine, kwargs["n"]
        e.temperature, e.top_p, e.top_k = kwargs["temperature"], kwargs["top_p"], kwargs["top_k"]
        e.min_p, e.repetition_penalty = kwargs["min_p"], kwargs["repetition_penalty"]
        e.max_completion_length = kwargs["max_tokens"]
        e.generation_kwargs = {
            k: kwargs[k] for k in ("stop", "include_stop_str_in_output", "stop_token_ids")
        }
        # TRL's convention: each prompt repeated n times, n completions asked per distinct one.
        repeated = [p for p in prompts for _ in range(n)]
        _, completions, _, _ = e.generate(prompts=repeated, images=None, num_generations=n)
        return [list(c) for c in completions]


# ---------------------------------------------------------------------------------------------
# choosing a backend
# ---------------------------------------------------------------------------------------------

_VLLM: weakref.WeakKeyDictionary[Any, VLLMRollouts] = weakref.WeakKeyDictionary()


@contextmanager
def rollout_backend(ctx: Any, model: Any) -> Iterator[Any]:
    """The backend ``ctx.cfg.rollout_backend`` names, for ``model`` (the prepared training
    model). The vLLM engine is built on first use and kept for the model's lifetime."""
    backend = getattr(ctx.cfg, "rollout_backend", "hf")
    if backend == "vllm":
        engine = _VLLM.get(model)
        if engine is None:
            engine = _VLLM[model] = VLLMRollouts.create(ctx, model)
        yield engine
        return
    if backend != "hf":
        raise ValueError(f"rollout_backend must be one of {list(BACKENDS)}, got {backend!r}")
    with generation_model(ctx.accelerator, model) as gen:
        yield HFRollouts(gen)


def after_optimizer_step(model: Any) -> None:
    """Hook for the trainer, after each optimiser step: the vLLM backend of ``model`` (if
    any) pushes the new weights before its next rollout. A no-op for ``hf``."""
    engine = _VLLM.get(model)
    if engine is not None:
        engine.after_optimizer_step()
