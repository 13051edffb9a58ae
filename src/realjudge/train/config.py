"""Training configuration: one documented dataclass per method, presets, file loading.

:class:`TrainConfig` holds what every method shares (model, data, optimiser, schedule,
checkpointing, logging); each method has its own subclass that adds its knobs, the way TRL
pairs a ``GRPOConfig`` with its trainer:

=========  =====================  ==========================================================
method     class                  trains
=========  =====================  ==========================================================
``sft``    :class:`SFTConfig`     cross-entropy on the reference feedback and score tokens
``raft``   :class:`RAFTConfig`    ``(y_hat(x) - y)^2``, score read right after the cue
``tract``  :class:`TRACTConfig`   CE on a CoT + ``lambda (y_hat(x, c) - y)^2`` (stage 1 / 2)
``grpo``   :class:`GRPOConfig`    policy gradient with the binary reward ``1[score == y]``
``real``   :class:`REALConfig`    the REAL objective (CoT exploration + prediction refinement)
=========  =====================  ==========================================================

A config is built in layers, each overriding the one before: the class defaults, a preset
(:data:`PRESETS`: ``authors`` or ``cpu-embedded``), a YAML/JSON file, then ``key=value``
overrides from the command line. Keys are the field names below; an unknown key is an error
(with a suggestion), as is a value of the wrong type. The resolved config is written to
``<out>/train_config.yaml`` and into ``<out>/realjudge.json``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METHODS = ("sft", "raft", "tract", "grpo", "real")
REPORT_TO = ("tensorboard", "wandb", "trackio", "none")
EVAL_MODES = ("auto", "score", "cot")
#: metrics ``load_best_model_at_end`` can select on; the last two are better when lower
BEST_METRICS = ("pearson", "spearman", "kendall", "accuracy", "rmse", "mae")
LOWER_IS_BETTER = ("rmse", "mae")
CONFIG_FILE = "train_config.yaml"


class ConfigError(ValueError):
    """A config key, value or file is invalid."""


@dataclass
class TrainConfig:
    """Fields every method shares.

    Sizes are global: ``batch_size`` prompts per step are split evenly over the processes
    (``accelerate launch --num_processes P``), so a run's data order and its effective batch do
    not depend on how many processes it uses.

    Attributes:
        method: one of :data:`METHODS` (fixed by the subclass).
        model: what to start from: ``embedded``, ``tiny``, a checkpoint dir or a hub id. Its
            tokenizer is used, and its weights unless ``init_from`` is given.
        init_from: warm start: weights from any checkpoint dir -- the output dir of any
            ``realjudge train`` run (any method), one of its ``checkpoints/step-*`` dirs, or a
            plain transformers checkpoint. LoRA adapters of that run are merged in.
        data: training data spec for :func:`realjudge.data.loaders.load_records`.
        data_split: split of ``data`` (embedded: ``train``; hub: ``train``; files ignore it).
        data_limit: keep the first N training records (``None``: all).
        eval_data: data for the periodic and final evaluation (``None``: no evaluation).
        eval_split: split of ``eval_data``.
        eval_limit: evaluate on the first N records of ``eval_data``.
        eval_steps: evaluate every N steps (0: only at the end).
        eval_mode: ``score`` (RAIL right after the cue, no CoT: fast), ``cot`` (greedy CoT,
            then RAIL at its cue), or ``auto`` (``score`` for RAFT, ``cot`` otherwise).
        eval_batch_size: prompts per evaluation forward / generation batch, per process.
        load_best_model_at_end: export the weights of the evaluation (periodic or final)
            with the best ``metric_for_best_model`` instead of the last step's -- for tuning
            a run's length on a validation split (``eval_split``), never on a test split.
            They are kept in ``out/best/`` (single process or DDP).
        metric_for_best_model: ``pearson``, ``spearman``, ``kendall``, ``accuracy`` (higher
            is better), ``rmse`` or ``mae`` (lower is better); ties keep the earlier step.
        out: output dir: final model (a transformers checkpoint), ``checkpoints/``, logs.
        overwrite: allow starting a fresh run in an ``out`` that already holds one.
        fmt: output format of the judge (``result``: ``Feedback: ... [RESULT] N``;
            ``overall``: ``... So the overall score is N``).
        rail_normalize: renormalise the score distribution over the score tokens (``True``)
            or keep the raw full-vocabulary probabilities (``False``, the authors' variant).
        lora: train LoRA adapters (``peft``) instead of all weights; merged on export.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling and dropout.
        lora_target_modules: module names to adapt (``["all-linear"]`` for every linear).
        freeze_layers: partial fine-tuning without LoRA: freeze the input embeddings and the
            first N decoder layers (0: train everything). Backward then stops at layer N,
            which is what makes CPU runs of the embedded model affordable. With tied
            embeddings (SmolLM2, Qwen3 small models) the LM head is frozen with them.
        learning_rate: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        adam_beta1, adam_beta2, adam_eps: AdamW settings.
        lr_scheduler: ``constant``, ``linear`` or ``cosine`` (after warm-up).
        warmup_steps: optimiser updates of linear warm-up.
        max_grad_norm: clip the global gradient norm (0: no clipping).
        max_steps: training steps (one step = one batch of prompts).
        batch_size: prompts per step, over all processes.
        grad_accum: micro-batches per optimiser update (per process).
        max_prompt_tokens: prompts longer than this are cut from the left.
        max_new_tokens: CoT budget: rollouts, stage-2 regeneration and CoT evaluation;
            supervised targets longer than this are shortened (their cue and score kept).
        seed: seeds the model init (``tiny``), LoRA init, data order and every sampling step.
        save_steps: write a resumable checkpoint (``out/checkpoints/step-N``: weights,
            optimiser, schedule, random states) every N steps (0: no periodic ones). A run
            killed in between resumes (``resume``) from the latest complete one with the
            weights an uninterrupted run would have had. Default 50.
        save_final: also write one after the last step (default ``True``), so that a finished
            run can be resumed with a larger ``max_steps`` or used as ``init_from`` with its
            optimiser state; ``False`` with ``save_steps: 0`` writes no checkpoint at all (and
            ``resume`` is refused).
        save_total_limit: keep at most N step checkpoints, the newest (``None``: all).
            Default 2.
        logging_steps: log metrics every N steps.
        report_to: ``tensorboard``, ``wandb``, ``trackio`` or ``none`` (accelerate trackers).
        run_name: tracker run name (default: the ``out`` dir's name).
        resume: continue from the latest checkpoint in ``out/checkpoints``.
        device: ``auto``, ``cpu`` or ``cuda`` (``accelerate launch`` decides placement).
        dtype: dtype the weights are kept in (``float32`` is the safe master-weight dtype;
            compute precision is ``mixed_precision``).
        mixed_precision: ``auto`` (bf16 autocast on a GPU that supports it and on a CPU where
            bf16 is fast, see :func:`realjudge.models.pick_mixed_precision`; else none; unless
            ``accelerate launch`` sets it), ``no``, ``bf16`` or ``fp16``.
        gradient_checkpointing: trade compute for activation memory.
        share_prefix_forward: a forward over a mini-batch whose prompts begin with the same
            tokens (a prompt template's system message and task description: 67 tokens of
            the embedded task's ~180) runs that prefix once, its keys and values repeated for
            every row (gradients summed by autograd), when it is at least
            ``MIN_SHARED_PREFIX`` (16) tokens long: the same numbers up to float rounding,
            fewer tokens through the model (``realjudge bench prefix`` measures the supervised
            step). Off by itself under gradient checkpointing, DeepSpeed ZeRO-3 and FSDP, and
            for models with sliding-window attention (which counts columns, not positions). RL
            runs share a whole prompt across its rollouts first (``share_prompt_forward``).
        digest_params: at the end, record a SHA-256 of every process's weights in
            ``metrics.json`` (a replica-consistency check for data-parallel runs; one pass
            over the weights; meaningless for sharded FSDP/ZeRO-3 runs).

    Checkpoints are written atomically: into ``checkpoints/.partial-step-N``, which is renamed
    to ``step-N`` once complete; a write cut short (a killed process) is never resumed from
    and is removed by the next start in that ``out``.
    """

    method: str = ""
    model: str = "embedded"
    init_from: str | None = None
    data: str = "embedded"
    data_split: str | None = "train"
    data_limit: int | None = None
    eval_data: str | None = None
    eval_split: str | None = "test"
    eval_limit: int = 200
    eval_steps: int = 0
    eval_mode: str = "auto"
    eval_batch_size: int = 8
    load_best_model_at_end: bool = False
    metric_for_best_model: str = "pearson"
    out: str = "runs/train"
    overwrite: bool = False
    fmt: str = "result"
    rail_normalize: bool = True
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    freeze_layers: int = 0
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    max_steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    max_prompt_tokens: int = 2048
    max_new_tokens: int = 256
    seed: int = 0
    save_steps: int = 50
    save_final: bool = True
    save_total_limit: int | None = 2
    logging_steps: int = 1
    report_to: str = "tensorboard"
    run_name: str | None = None
    resume: bool = False
    device: str = "auto"
    dtype: str = "float32"
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    share_prefix_forward: bool = True
    digest_params: bool = False

    # -- validation ---------------------------------------------------------------------------

    def __post_init__(self) -> None:
        expected = _METHOD_OF_CLASS.get(type(self).__name__)
        if expected is not None and self.method in ("", None):
            self.method = expected
        if expected is not None and self.method != expected:
            raise ConfigError(
                f"{type(self).__name__} is for method {expected!r}, not {self.method!r}"
            )
        self._check_choice("report_to", REPORT_TO)
        self._check_choice("eval_mode", EVAL_MODES)
        self._check_choice("metric_for_best_model", BEST_METRICS)
        if self.load_best_model_at_end and not (self.eval_data and self.eval_steps):
            raise ConfigError(
                "load_best_model_at_end needs periodic evaluations: set eval_data (a "
                "validation split) and eval_steps"
            )
        self._check_choice("lr_scheduler", ("constant", "linear", "cosine"))
        self._check_choice("mixed_precision", ("auto", "no", "bf16", "fp16"))
        self._check_choice("fmt", ("result", "overall"))
        for name in (
            "max_steps",
            "batch_size",
            "grad_accum",
            "max_prompt_tokens",
            "max_new_tokens",
            "eval_batch_size",
            "logging_steps",
            "lora_r",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("save_steps", "eval_steps", "warmup_steps", "eval_limit", "freeze_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"save_total_limit must be >= 1 or null, got {self.save_total_limit}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lora and self.freeze_layers:
            raise ConfigError("freeze_layers and lora are alternatives: set one of them")

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        if getattr(self, name) not in choices:
            raise ConfigError(f"{name} must be one of {list(choices)}, got {getattr(self, name)!r}")

    # -- (de)serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @property
    def resolved_eval_mode(self) -> str:
        if self.eval_mode != "auto":
            return self.eval_mode
        return "score" if self.method == "raft" else "cot"


@dataclass
class SFTConfig(TrainConfig):
    """SFT (Prometheus style): token-mean cross-entropy over the reference feedback, the cue and
    the gold score token (``prompts.target_text``). Needs ``reference_feedback`` in the data.
    No method-specific knobs."""

    method: str = "sft"


@dataclass
class RAFTConfig(TrainConfig):
    """RAFT: the prompt ends with the cue (no CoT); minimise ``(sum_k k p(k|x) - y)^2``
    (``methods.raft_loss``); ``rail_normalize`` picks renormalised or raw probabilities.

    Attributes:
        raft_lambda_p: weight of ``-log p(y|x)`` added to the squared error (REAL's
            refinement terms, ``refine_terms: both``, on the score read without a CoT); 0 is
            RAFT as published. It keeps a gradient where the squared error's vanishes (every
            input's distribution on one score: ``docs/training.md``).
    """

    method: str = "raft"
    raft_lambda_p: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.raft_lambda_p < 0:
            raise ConfigError(f"raft_lambda_p must be >= 0, got {self.raft_lambda_p}")


@dataclass
class TRACTConfig(TrainConfig):
    """TRACT (CoT-RAFT): CE on a CoT ``c`` (up to and including its cue) +
    ``tract_lambda * (y_hat(x, c) - y)^2`` with ``y_hat`` read right after the cue.

    Stage 1 trains on the reference (annotator) CoTs. Stage 2 (``tract_stage: 2``, usually with
    ``init_from`` = the stage-1 output) first regenerates a CoT for every training record with
    the starting weights, then trains on those (gold unchanged). The regenerated CoTs are cached
    in ``out/tract_stage2_cots.jsonl`` (and reused on resume).

    Attributes:
        tract_lambda: weight of the regression term.
        tract_stage: 1 or 2.
        regen_greedy: stage 2: greedy decoding (``True``) or sampling.
        regen_temperature, regen_top_p: stage 2 sampling settings (when not greedy).
        regen_batch_size: prompts per generation batch, per process.
    """

    method: str = "tract"
    tract_lambda: float = 1.0
    tract_stage: int = 1
    regen_greedy: bool = True
    regen_temperature: float = 1.0
    regen_top_p: float = 1.0
    regen_batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tract_stage not in (1, 2):
            raise ConfigError(f"tract_stage must be 1 or 2, got {self.tract_stage}")
        if self.tract_lambda < 0:
            raise ConfigError(f"tract_lambda must be >= 0, got {self.tract_lambda}")


@dataclass
class RolloutConfig(TrainConfig):
    """Shared by the RL methods (GRPO, REAL): sampling and the policy-update schedule.

    Each step samples ``num_generations`` CoTs for each of ``batch_size`` prompts, then makes
    ``ppo_epochs`` passes over that rollout batch in mini-batches of ``mini_batch_size`` prompts
    (one optimiser update per mini-batch, itself split in ``grad_accum`` micro-batches).

    Attributes:
        num_generations: rollouts per prompt (``G``).
        temperature, top_p: sampling settings of the rollouts.
        ppo_epochs: passes over each rollout batch.
        mini_batch_size: prompts per optimiser update, over all processes (``None``: the whole
            batch, one update per pass).
        clip_eps: PPO ratio clipping (``None``: the plain ``-A log pi`` surrogate). With it, the
            sampling policy's log-probs are computed once per step (one extra no-grad pass).
        pg_agg: reduction of the token-level PG loss (``token-mean``,
            ``seq-mean-token-mean``, ``seq-mean-token-sum``).
        kl_coef, kl_kind: KL(pi || pi_start) penalty (0: off; needs a reference model: the
            adapters switched off with LoRA, a frozen copy otherwise).
        entropy_coef: entropy bonus weight.
        generation_batch_size: prompts per ``generate`` call, per process (``None``: all of
            the process's prompts of the step at once).
        rollout_backend: what samples the rollouts: ``hf`` (transformers ``generate`` on the
            training model; sharded weights gathered with TRL's helpers) or ``vllm`` (vLLM
            through TRL's integration, GPU only, ``pip install realjudge[vllm]``); see
            :mod:`realjudge.train.generation`. Same sampling settings either way.
        vllm_mode: ``colocate`` (a ``vllm.LLM`` in every training process, on its GPU) or
            ``server`` (``trl vllm-serve --model M`` on GPUs of its own; the main process
            talks to it through TRL's ``VLLMClient``). Weights reach vLLM after every
            optimiser step, before the next rollout.
        vllm_server_host, vllm_server_port: where ``trl vllm-serve`` listens (server mode).
        vllm_server_timeout: seconds to wait for the server to come up (server mode).
        vllm_gpu_memory_utilization: fraction of each GPU's memory vLLM may take for weights
            and KV cache (colocate mode; the server takes ``--gpu_memory_utilization``).
        share_prompt_forward: the training forward over a prompt's ``num_generations``
            rollouts runs the prompt once (its keys and values repeated for the rollouts,
            gradients summed by autograd) instead of once per rollout: the same numbers up to
            float rounding, fewer tokens through the model. Off by itself under gradient
            checkpointing, DeepSpeed ZeRO-3 and FSDP.
        disable_dropout: set the probability of every dropout layer (the model's and LoRA's
            ``lora_dropout``) to 0 for the whole run (TRL's ``disable_dropout``). The rollouts,
            their rewards and the sampling log-probs are computed in eval mode (no dropout);
            with dropout on, the update passes would score a different, randomly thinned
            policy: the PPO ratio starts away from 1 and REAL's refinement gradient is noisy.
            Default ``True``; it changes nothing for a model without dropout and without LoRA.
    """

    num_generations: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    ppo_epochs: int = 1
    mini_batch_size: int | None = None
    clip_eps: float | None = None
    pg_agg: str = "token-mean"
    kl_coef: float = 0.0
    kl_kind: str = "k3"
    entropy_coef: float = 0.0
    generation_batch_size: int | None = None
    rollout_backend: str = "hf"
    vllm_mode: str = "colocate"
    vllm_server_host: str = "0.0.0.0"
    vllm_server_port: int = 8000
    vllm_server_timeout: float = 240.0
    vllm_gpu_memory_utilization: float = 0.3
    share_prompt_forward: bool = True
    disable_dropout: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("rollout_backend", ("hf", "vllm"))
        self._check_choice("vllm_mode", ("colocate", "server"))
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            raise ConfigError(
                "vllm_gpu_memory_utilization must be in (0, 1], got "
                f"{self.vllm_gpu_memory_utilization}"
            )
        if self.num_generations < 1 or self.ppo_epochs < 1:
            raise ConfigError("num_generations and ppo_epochs must be >= 1")
        if self.mini_batch_size is not None and (
            self.mini_batch_size < 1 or self.batch_size % self.mini_batch_size
        ):
            raise ConfigError(
                f"mini_batch_size ({self.mini_batch_size}) must divide batch_size ({self.batch_size})"
            )
        if not 0.0 < self.top_p <= 1.0 or self.temperature <= 0:
            raise ConfigError("top_p must be in (0, 1] and temperature > 0")
        self._check_choice("pg_agg", ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"))
        self._check_choice("kl_kind", ("k1", "k2", "k3"))


@dataclass
class GRPOConfig(RolloutConfig):
    """Standard RL baseline: reward ``1[sampled score == round(y)]``; the PG loss covers the
    sampled CoT and the sampled score token.

    Attributes:
        advantage: ``grpo`` (``(r - mean) / std`` in the group) or ``rloo`` (leave-one-out).
    """

    method: str = "grpo"
    advantage: str = "grpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("advantage", ("grpo", "rloo"))


@dataclass
class REALConfig(RolloutConfig):
    """REAL: ``loss = PG(A, CoT tokens) + beta * refine`` (see
    :func:`realjudge.methods.real_loss`). The CoT log-probs and the score distribution come from
    one forward pass over prompt + rollout. The REAL knobs below, ``top_p`` and ``ppo_epochs``
    default to the authors' values (``num_generations`` 8, their quick run); the settings shared
    with the other methods (batch and mini-batch sizes, learning rate, lengths, raw RAIL) keep
    this project's defaults: ``--preset authors`` sets all of theirs.

    Attributes:
        baseline: ``loo`` (leave-one-out) or ``mean`` (group mean).
        normalize_std: divide each advantage part by its group's reward std.
        std_eps: added to that std. 1e-4 (TRL's GRPO value) rather than verl's 1e-6: a nearly
            deterministic judge's rewards differ by float32 rounding (~1e-6), which 1e-6 would
            turn into advantages of full size; a group with one reward gets exactly 0 either way.
        adv_clip: clip each advantage part to ``[-adv_clip, adv_clip]`` (``None``: off).
        lambda_p: weight of the probability reward ``p(y|x,c)`` (authors' ``beta_supp``).
        beta: weight of the refinement term (authors: 0.0 fast, 0.01 best).
        refine_terms: ``sq``, ``nll`` or ``both`` (``(y_hat - y)^2 + lambda_p * -log p(y)``).

    Advantages are those of the sampling policy: computed once per step, before any update,
    by :func:`realjudge.methods.real_advantages` from each rollout's score distribution after
    its cue as the generation pass computed it (a small no-grad forward, or the ``clip_eps``
    forward, for the rows whose generation never saw the canonical cue), and kept fixed over
    the ``ppo_epochs`` passes and every mini-batch, as in the authors' code (rewards computed
    before the update passes); they do not depend on ``mini_batch_size``. The refinement term
    always uses the current model's distribution, from the forward that scores the CoT tokens.
    """

    method: str = "real"
    top_p: float = 0.9
    ppo_epochs: int = 3
    baseline: str = "loo"
    normalize_std: bool = True
    std_eps: float = 1e-4
    adv_clip: float | None = 1.0
    lambda_p: float = 1.0
    beta: float = 0.0
    refine_terms: str = "both"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("baseline", ("loo", "mean"))
        self._check_choice("refine_terms", ("sq", "nll", "both"))
        if self.adv_clip is not None and self.adv_clip <= 0:
            raise ConfigError(f"adv_clip must be positive or null, got {self.adv_clip}")
        if self.std_eps <= 0:
            raise ConfigError(f"std_eps must be positive, got {self.std_eps}")


CONFIG_CLASSES: dict[str, type[TrainConfig]] = {
    "sft": SFTConfig,
    "raft": RAFTConfig,
    "tract": TRACTConfig,
    "grpo": GRPOConfig,
    "real": REALConfig,
}
_METHOD_OF_CLASS = {cls.__name__: m for m, cls in CONFIG_CLASSES.items()}


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------

_AUTHORS_COMMON: dict[str, Any] = {
    "fmt": "overall",  # "... So the overall score is N" at the very end
    "rail_normalize": False,  # raw full-vocabulary probabilities
    "max_prompt_tokens": 2048,  # left truncation
    "max_new_tokens": 1024,
    "batch_size": 256,
    "learning_rate": 1e-6,  # Qwen3 full fine-tuning (x10 for LoRA; ~5e-8 for Mistral-7B)
}
_AUTHORS_RL: dict[str, Any] = {
    "num_generations": 16,  # 8 for a quick run
    "mini_batch_size": 32,
    "temperature": 1.0,
    "top_p": 0.9,
    "ppo_epochs": 3,
    "clip_eps": None,
    "pg_agg": "token-mean",
    "kl_coef": 0.0,
    "entropy_coef": 0.0,
}

#: Named presets: ``{preset: {method: overrides}}``.
#:
#: ``authors``: the defaults of the REAL authors' code (a verl fork), as summarised in
#: ``shared/notes/real-method.md`` ("Defaults in the authors' code"); source: Zhang et al.,
#: "REAL: Regression-Aware Reinforcement Learning for LLM-as-a-Judge", arXiv 2603.17145.
#: For RAFT/TRACT/SFT the notes give only the shared settings (format, lengths, raw RAIL,
#: learning rate of the Qwen3 runs); their other knobs keep our defaults. GRPO gets the same
#: rollout settings as REAL so the two are compared like for like. The authors warm-start RL
#: from a RAFT or TRACT checkpoint: set ``init_from``.
#:
#: ``cpu-embedded``: small runs of the embedded SmolLM2-135M judge on the embedded task, sized
#: for two CPU cores (feedbacks are ~50 tokens).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "authors": {
        "sft": dict(_AUTHORS_COMMON),
        "raft": dict(_AUTHORS_COMMON),
        "tract": dict(_AUTHORS_COMMON),
        "grpo": {**_AUTHORS_COMMON, **_AUTHORS_RL, "advantage": "rloo"},
        "real": {
            **_AUTHORS_COMMON,
            **_AUTHORS_RL,
            "baseline": "loo",
            "normalize_std": True,
            "adv_clip": 1.0,
            "lambda_p": 1.0,  # beta_supp
            "beta": 0.0,  # beta_extra: 0.0 fast default, 0.01 their best
            "refine_terms": "both",
        },
    },
    "cpu-embedded": {
        m: {
            "model": "embedded",
            "data": "embedded",
            "data_split": "train",
            "eval_data": "embedded",
            "eval_split": "test",
            "eval_limit": 50,
            "eval_steps": 25,
            "fmt": "result",
            "rail_normalize": True,
            "device": "cpu",
            "max_prompt_tokens": 512,
            "max_new_tokens": 96,
            "batch_size": 4 if m in ("grpo", "real") else 8,
            "max_steps": 100,
            "learning_rate": 2e-5 if m in ("sft", "raft", "tract") else 5e-6,
            "warmup_steps": 5,
            "save_steps": 50,
            **(
                {"num_generations": 4, "ppo_epochs": 1, "temperature": 1.0, "top_p": 0.9}
                if m in ("grpo", "real")
                else {}
            ),
            **({"beta": 0.01} if m == "real" else {}),
        }
        for m in METHODS
    },
}


def preset_values(name: str, method: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name][method])


# ---------------------------------------------------------------------------------------------
# building a config from layers
# ---------------------------------------------------------------------------------------------


def config_class(method: str) -> type[TrainConfig]:
    try:
        return CONFIG_CLASSES[method]
    except KeyError:
        raise ConfigError(f"unknown method {method!r}; choose one of {list(METHODS)}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping (JSON is YAML, so one reader does both)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML/JSON: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are read as YAML scalars/lists (``lr=1e-5``,
    ``lora=true``, ``clip_eps=null``, ``lora_target_modules=[q_proj,v_proj]``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def build_config(
    method: str | None = None,
    *,
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Resolve a config: class defaults < preset < file < overrides.

    ``method`` and ``preset`` may also come from the file or the overrides (the explicit
    argument wins). Raises :class:`ConfigError` on unknown keys or bad values.
    """
    file_values = read_config_file(file) if file is not None else {}
    over = dict(overrides or {})
    method = method or over.pop("method", None) or file_values.get("method")
    over.pop("method", None)
    if method is None:
        raise ConfigError("no method given: pass --method or set 'method' in the config file")
    cls = config_class(str(method))
    if file_values.get("method") not in (None, method):
        raise ConfigError(f"config file is for method {file_values['method']!r}, not {method!r}")
    preset = preset or over.pop("preset", None) or file_values.get("preset")
    over.pop("preset", None)
    values: dict[str, Any] = {}
    if preset:
        values.update(preset_values(str(preset), str(method)))
    for source, layer in (("config file", file_values), ("overrides", over)):
        layer = {k: v for k, v in layer.items() if k not in ("method", "preset")}
        _check_keys(cls, layer, source)
        values.update(layer)
    typed = {k: _coerce(cls, k, v) for k, v in values.items()}
    try:
        return cls(method=str(method), **typed)
    except TypeError as e:  # pragma: no cover - keys are checked above
        raise ConfigError(str(e)) from None


def load_saved_config(out_dir: str | Path) -> TrainConfig:
    """The config a run saved in its output dir (or in one of its checkpoints)."""
    values = read_config_file(Path(out_dir) / CONFIG_FILE)
    cls = config_class(values.get("method", ""))
    names = set(cls.field_names())
    return cls(**{k: _coerce(cls, k, v) for k, v in values.items() if k in names})


def _check_keys(cls: type[TrainConfig], layer: dict[str, Any], source: str) -> None:
    names = cls.field_names()
    for key in layer:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            other = [m for m, c in CONFIG_CLASSES.items() if key in c.field_names()]
            msg = f"unknown config key {key!r} in {source} for method {_METHOD_OF_CLASS[cls.__name__]!r}"
            if hint:
                msg += f"; did you mean {hint[0]!r}?"
            elif other:
                msg += f" (it belongs to method(s) {other})"
            raise ConfigError(msg)


def _coerce(cls: type[TrainConfig], key: str, value: Any) -> Any:
    """Check ``value`` against the field's annotation, converting the harmless cases."""
    hint = typing.get_type_hints(cls)[key]
    if key == "mixed_precision" and value is False:
        value = "no"  # YAML 1.1 reads an unquoted `mixed_precision: no` as false
    try:
        return _coerce_to(hint, value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config key {key!r}: {value!r} is not a valid {_type_name(hint)}"
        ) from None


def _coerce_to(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce_to(arg, value)
            except (TypeError, ValueError):
                continue
        raise ValueError(value)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError(value)
        return [_coerce_to(item, v) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise TypeError(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(value)
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(value)
        return float(value)
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise TypeError(value)
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def dump_json(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2)
