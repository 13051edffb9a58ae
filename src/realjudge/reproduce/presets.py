"""Experiment presets of ``realjudge reproduce``: what is trained, on what, for how long.

An :class:`Experiment` is a list of :class:`RunSpec` (the base model and one training run per
method, with warm starts named by run) and a list of :class:`Benchmark` (in-domain and
out-of-domain evaluation sets). Every training run starts from the same ``train_preset``
(:data:`realjudge.train.config.PRESETS`) plus the experiment's ``common`` keys plus the run's
own ``overrides``; budgets are visible here, method by method.

Compute is matched the way the paper matches it: the supervised runs see the same number of
training examples; the RL runs (GRPO, REAL) share every rollout setting and start from the
same TRACT checkpoint, so REAL and binary-reward RL differ only in their reward and loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Benchmark:
    """One evaluation set.

    Attributes:
        name: column name in the results table.
        data: data spec (:func:`realjudge.data.loaders.load_records`); ``{data_dir}`` is
            replaced by the experiment's prepared-data directory (``OUT/data``).
        split: split of ``data``.
        limit: first N records (``None``: all).
        domain: ``in`` or ``out`` (out of domain).
    """

    name: str
    data: str
    split: str | None = None
    limit: int | None = None
    domain: str = "in"


@dataclass
class RunSpec:
    """One row of the comparison.

    Attributes:
        name: row label (``base``, ``SFT``, ``RAFT``, ``TRACT``, ``TRACT-2``, ``GRPO``,
            ``REAL``, or a sweep variant such as ``REAL[beta=0.1]``).
        method: training method (:data:`realjudge.train.config.METHODS`); ``None``: the
            starting model, evaluated as is.
        max_steps: training steps.
        init_from: name of the run whose final model this one starts from (warm start).
        cot: evaluate with the judge's own feedback (CoT) before the score; ``False``:
            score right after the prompt (RAFT predicts without a CoT).
        overrides: training config keys of this run only.
        variant_of: the run this one is a sweep variant of (``--variant``), else ``None``.
    """

    name: str
    method: str | None = None
    max_steps: int = 0
    init_from: str | None = None
    cot: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)
    variant_of: str | None = None


@dataclass
class Experiment:
    """A full comparison (the contents of a ``--preset``).

    Attributes:
        name, description: what it is, for the report.
        model: starting model of every run.
        train_data, train_split: training data spec.
        benchmarks: evaluation sets, in table order.
        runs: rows of the table, in order; a run's ``init_from`` must come before it.
        train_preset: the :func:`realjudge.train.build_config` preset every run starts from.
        common: training keys shared by all runs (after the preset, before the run's own).
        seeds: default number of seeds.
        max_new_tokens: CoT budget of the evaluations (training uses ``common``'s).
        eval_batch_size: prompts per evaluation batch.
        curve_benchmark, curve_limit, curve_points: the correlation-vs-step curves come from
            the trainer's periodic evaluation on the first ``curve_limit`` items of this
            benchmark, about ``curve_points`` times per run (0: no curves).
        validation: a split drawn from the training data (never a test split); when set, the
            curves come from it instead of ``curve_benchmark``, so that whatever is read off
            them (budgets, the best step) is tuned without touching the test sets.
        vicuna_split: prepare a train/held-out split of a Prometheus file by question
            (``{"path": ..., "test_fraction": ...}``), written to ``{data_dir}``.
        runnable_here: runs on the 2-core CPU of this project's CI machines.
        notes: anything the report should say about the setting.
    """

    name: str
    description: str
    model: str
    train_data: str
    benchmarks: list[Benchmark]
    runs: list[RunSpec]
    train_split: str | None = "train"
    train_preset: str = "cpu-embedded"
    common: dict[str, Any] = field(default_factory=dict)
    seeds: int = 3
    max_new_tokens: int = 96
    eval_batch_size: int = 16
    curve_benchmark: str | None = None
    curve_limit: int = 16
    curve_points: int = 2
    validation: Benchmark | None = None
    vicuna_split: dict[str, Any] | None = None
    runnable_here: bool = True
    notes: str = ""

    def run(self, name: str) -> RunSpec:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(
            f"no run {name!r} in preset {self.name}; runs: {[r.name for r in self.runs]}"
        )


def _comparison(
    sup_steps: int,
    raft_steps: int,
    stage2_steps: int,
    rl_steps: int,
    sup: dict[str, Any],
    rl: dict[str, Any],
    real: dict[str, Any],
) -> list[RunSpec]:
    """The paper's rows: base, SFT, RAFT, TRACT (stages 1 and 2), then GRPO and REAL
    warm-started from TRACT with identical rollout settings."""
    return [
        RunSpec("base"),
        RunSpec("SFT", "sft", sup_steps, overrides=dict(sup)),
        RunSpec("RAFT", "raft", raft_steps, cot=False, overrides=dict(sup)),
        RunSpec("TRACT", "tract", sup_steps, overrides=dict(sup)),
        RunSpec(
            "TRACT-2", "tract", stage2_steps, init_from="TRACT", overrides={**sup, "tract_stage": 2}
        ),
        RunSpec("GRPO", "grpo", rl_steps, init_from="TRACT", overrides=dict(rl)),
        RunSpec("REAL", "real", rl_steps, init_from="TRACT", overrides={**rl, **real}),
    ]


#: The embedded task on two CPU cores (sized so three seeds fit in an hour and a half).
#: Supervised runs: 8 examples a step; RL runs: 2 prompts x 4 rollouts a step. The lower 15 of
#: the 30 layers are frozen everywhere (``freeze_layers``): backward stops half-way (a TRACT
#: step of 8 examples took 5.7 s instead of ~10 s on this project's 2-core machine).
_CPU_SUP = {"learning_rate": 1e-4, "batch_size": 8, "warmup_steps": 2}
_CPU_RL = {
    "learning_rate": 1e-5,
    "batch_size": 2,
    "num_generations": 4,
    "temperature": 1.0,
    "top_p": 0.9,
}

PRESETS: dict[str, Experiment] = {
    "cpu-embedded": Experiment(
        name="cpu-embedded",
        description="SmolLM2-135M-Instruct (embedded) on the embedded checklist task; "
        "in-domain test split and the out-of-domain fact-summary split",
        model="embedded",
        train_data="embedded",
        benchmarks=[
            Benchmark("embedded-test", "embedded", "test", 40, "in"),
            Benchmark("embedded-ood", "embedded-ood", "ood", 40, "out"),
        ],
        runs=_comparison(30, 30, 10, 8, _CPU_SUP, _CPU_RL, {"beta": 0.01}),
        common={
            "freeze_layers": 15,
            "max_new_tokens": 64,
            "device": "cpu",
            "eval_batch_size": 16,
        },
        seeds=3,
        max_new_tokens=96,
        curve_benchmark="embedded-test",
        curve_limit=12,
        curve_points=1,
    ),
    "cpu-vicuna": Experiment(
        name="cpu-vicuna",
        description="SmolLM2-135M-Instruct (embedded) trained on Vicuna Bench questions of a "
        "train split by question id (GPT-4 feedback as the reference CoT), evaluated on the "
        "held-out questions (and any --eval-data files, out of domain)",
        model="embedded",
        train_data="{data_dir}/vicuna-train.jsonl",
        train_split=None,
        benchmarks=[Benchmark("vicuna-heldout", "{data_dir}/vicuna-test.jsonl", None, 40, "in")],
        runs=_comparison(
            12,
            12,
            4,
            4,
            {"learning_rate": 5e-5, "batch_size": 4, "warmup_steps": 1},
            {**_CPU_RL, "batch_size": 1},
            {"beta": 0.01},
        ),
        common={
            "freeze_layers": 24,
            "max_new_tokens": 96,
            "max_prompt_tokens": 1024,
            "device": "cpu",
            "eval_batch_size": 8,
        },
        seeds=1,
        max_new_tokens=96,
        eval_batch_size=8,
        curve_benchmark=None,
        vicuna_split={"path": "../shared/data/vicuna_eval.json", "test_fraction": 0.25},
        notes="Vicuna prompts are ~900 tokens: a forward+backward of the embedded model takes "
        "~9 s on 2 cores, so budgets are tiny and the upper 6 layers only are trained.",
    ),
    "gpu-small": Experiment(
        name="gpu-small",
        description="The embedded comparison with larger budgets for one H100/H200 GPU "
        "(vLLM rollouts when installed, else transformers); full fine-tuning in bf16",
        model="embedded",
        train_data="embedded",
        benchmarks=[
            Benchmark("embedded-test", "embedded", "test", 200, "in"),
            Benchmark("embedded-ood", "embedded-ood", "ood", 200, "out"),
        ],
        runs=_comparison(
            150,
            150,
            50,
            60,
            {"learning_rate": 5e-5, "batch_size": 32, "warmup_steps": 5},
            {**_CPU_RL, "learning_rate": 5e-6, "batch_size": 16, "num_generations": 8},
            {"beta": 0.01},
        ),
        common={"max_new_tokens": 128, "device": "auto", "eval_batch_size": 64},
        seeds=3,
        max_new_tokens=128,
        eval_batch_size=64,
        curve_benchmark="embedded-test",
        curve_limit=100,
        curve_points=5,
        runnable_here=False,
    ),
}


#: supervised runs of the 200-item embedded presets: 8 examples a step
_SUP_8 = {"learning_rate": 1e-4, "batch_size": 8, "warmup_steps": 10}
#: keep the weights of the best periodic evaluation on the validation split
_BEST = {"load_best_model_at_end": True, "metric_for_best_model": "pearson"}
#: RL settings of the lighter 200-item presets (cpu-raft-start, cpu-raft-tract): 40 steps
_RL_40 = {**_CPU_RL, "num_generations": 4}


def _continued_grpo_real(start: str, method: str, *, cot: bool = True) -> list[RunSpec]:
    """The three runs that share the warm start ``start`` in the 40-step presets: ``start+``
    (``method`` continued, no warm-up, on as many training prompts as an RL run -- the
    control for "more training"), then GRPO and REAL with identical rollout settings
    (:data:`_RL_40`, 40 steps; REAL's refinement weight beta 0.01)."""
    rl, rl_steps = _RL_40, 40
    more = rl_steps * rl["batch_size"] // _SUP_8["batch_size"]  # 40 steps x 2 prompts
    return [
        RunSpec(
            f"{start}+",
            method,
            more,
            init_from=start,
            cot=cot,
            overrides={**_SUP_8, "warmup_steps": 0},
        ),
        RunSpec("GRPO", "grpo", rl_steps, init_from=start, overrides=dict(rl)),
        RunSpec("REAL", "real", rl_steps, init_from=start, overrides={**rl, "beta": 0.01}),
    ]


def _raft_150() -> RunSpec:
    """The score-only RAFT judge of cpu-raft-start and cpu-raft-tract (one spec, so the
    second preset can adopt the first's runs with ``--reuse``): 150 steps of 8, the weights
    of its best validation evaluation, read score-only."""
    return RunSpec("RAFT", "raft", 150, cot=False, overrides={**_SUP_8, **_BEST})


def _embedded_200(
    *,
    name: str,
    description: str,
    runs: list[RunSpec],
    save_steps: int,
    curve_points: int,
    notes: str,
) -> Experiment:
    """A comparison on the embedded task sized to tell methods apart: 200 in-domain and 200
    out-of-domain items, 3 seeds, the lower 15 layers frozen, curves on 60 items of the
    validation split drawn from the train generator (never a test split)."""
    return Experiment(
        name=name,
        description=description,
        model="embedded",
        train_data="embedded",
        benchmarks=[
            Benchmark("embedded-test", "embedded", "test", 200, "in"),
            Benchmark("embedded-ood", "embedded-ood", "ood", 200, "out"),
        ],
        runs=runs,
        common={
            "freeze_layers": 15,
            "max_new_tokens": 64,
            "device": "cpu",
            "eval_batch_size": 16,
            "save_steps": save_steps,
        },
        seeds=3,
        max_new_tokens=96,
        curve_benchmark="embedded-validation",
        curve_limit=60,
        curve_points=curve_points,
        validation=Benchmark("embedded-validation", "embedded", "validation", 60, "in"),
        notes=notes,
    )


def _powered() -> Experiment:
    """REAL against its controls with enough items, steps and rollouts to see a difference of
    about 0.1 Pearson (``docs/reproduce.md``, "cpu-powered")."""
    tract, best = _SUP_8, _BEST
    rl = {**_CPU_RL, "num_generations": 8}
    rl_steps = 100
    # continued TRACT sees as many training prompts as an RL run: 100 steps x 2 prompts
    more_tract = rl_steps * rl["batch_size"] // tract["batch_size"]
    return _embedded_200(
        name="cpu-powered",
        description="The embedded comparison with power: a TRACT judge trained until it "
        "checks items (300 steps of 8), then REAL and binary-reward GRPO from it for 100 "
        "steps of 2 prompts x 8 rollouts, TRACT continued on as many prompts as the control; "
        "200 in-domain and 200 out-of-domain items, 3 seeds; curves on a validation split "
        "drawn from the train generator",
        runs=[
            RunSpec("base"),
            # trained to their best on the validation split: the exported weights are those
            # of the best periodic evaluation there (load_best_model_at_end)
            RunSpec("SFT", "sft", 300, overrides={**tract, **best}),
            RunSpec("RAFT", "raft", 300, cot=False, overrides={**tract, **best}),
            RunSpec("TRACT", "tract", 300, overrides=dict(tract)),
            RunSpec("TRACT+", "tract", more_tract, init_from="TRACT", overrides=dict(tract)),
            RunSpec("GRPO", "grpo", rl_steps, init_from="TRACT", overrides=dict(rl)),
            RunSpec("REAL", "real", rl_steps, init_from="TRACT", overrides={**rl, "beta": 0.01}),
        ],
        save_steps=25,
        curve_points=5,
        notes="Budgets: TRACT's 300 steps of 8 are where its curve flattens "
        "(docs/results-notes.md); SFT and RAFT get the same 300 steps and keep the weights of "
        "their best evaluation on the validation split. Cost on 2 CPU cores: about 2 h 50 min for "
        "seed 0 in bf16 on an AMD EPYC, split over two single-thread processes (its timings_s "
        "in docs/results/parts/cpu-powered/seed0.json) -- run one seed a session "
        "(--first-seed K --seeds 1), export each and join them with `realjudge report "
        "--merge` (docs/reproduce.md); a killed run resumes from its last checkpoint.",
    )


def _raft_start() -> Experiment:
    """REAL and GRPO warm-started from score-only RAFT, the paper's other warm start: the
    judge's score reads the response itself (RAFT transfers out of domain), and RL then
    trains the feedback it writes before that score (``docs/results-notes.md``)."""
    return _embedded_200(
        name="cpu-raft-start",
        description="REAL and binary-reward GRPO warm-started from a score-only RAFT judge "
        "(150 steps of 8, the weights of its best validation evaluation), 40 steps of 2 "
        "prompts x 4 rollouts each, RAFT continued on as many prompts as the control; "
        "200 in-domain and 200 out-of-domain items, 3 seeds; curves on a validation split "
        "drawn from the train generator",
        runs=[
            RunSpec("base"),
            _raft_150(),
            *_continued_grpo_real("RAFT", "raft", cot=False),
        ],
        save_steps=10,
        curve_points=3,
        notes="RAFT's budget is the 150 steps of its curve in docs/results-notes.md (it "
        "keeps its best validation evaluation); the RL runs are the main job's REAL settings "
        "(quickstart --start raft) run for 40 steps. RAFT and RAFT+ are read score-only, "
        "as RAFT predicts; GRPO and REAL write their feedback first. Cost: 34-44 min a seed "
        "on 2 CPU cores (Intel Xeon with AMX, bf16; seeds 0-1 in one single-thread process "
        "beside seed 2's; timings_s in docs/results/cpu-raft-start.json), plus 3 min for the "
        "base model's evaluation.",
    )


def _raft_tract() -> Experiment:
    """REAL and GRPO warm-started from a CoT judge that writes checks and whose score
    transfers: RAFT (the score alone) first, then TRACT from it (the feedback, then the
    score). RAFT's score reads the response and carries over out of domain; TRACT on top of
    it teaches the item-by-item feedback without losing that (``docs/results-notes.md``,
    "RAFT then TRACT"), so the RL runs start from a judge that writes a feedback and a score
    -- GRPO's binary reward has something to compare, unlike from RAFT alone."""
    return _embedded_200(
        name="cpu-raft-tract",
        description="REAL and binary-reward GRPO warm-started from RAFT then TRACT (150 "
        "steps of 8 each: the score first, then the feedback and the score), 40 steps of 2 "
        "prompts x 4 rollouts each, TRACT continued on as many prompts as the control; "
        "200 in-domain and 200 out-of-domain items, 3 seeds; curves on a validation split "
        "drawn from the train generator",
        runs=[
            RunSpec("base"),
            _raft_150(),  # cpu-raft-start's (--reuse runs/cpu-raft-start adopts it)
            RunSpec("TRACT", "tract", 150, init_from="RAFT", overrides=dict(_SUP_8)),
            *_continued_grpo_real("TRACT", "tract"),
        ],
        save_steps=10,
        curve_points=3,
        notes="TRACT's 150 steps from RAFT are where its validation curve and item checks "
        "stood at 0.94 and 0.93 in a first run (docs/results-notes.md); the RL runs are "
        "cpu-raft-start's. RAFT is read score-only, every other run writes its feedback "
        "first. RAFT and the base model's evaluations are cpu-raft-start's: pass --reuse "
        "runs/cpu-raft-start to adopt them.",
    )


def _paper(model: str, name: str) -> Experiment:
    """The paper's setting: Feedback Collection, four benchmarks, authors' defaults
    (``authors`` preset: lr 1e-6, batch 256, G 8, response 1024, raw RAIL, LOO baseline). The
    evaluation files are the Prometheus releases, passed by path. Run on a cluster with
    ``accelerate launch --config_file configs/accelerate/... -m realjudge reproduce ...``."""
    # The four benchmarks of the paper's main table: Feedback Bench is in-domain, the rest OOD.
    benches = [
        Benchmark("feedback-bench", "prometheus-eval/Feedback-Bench", "train", None, "in"),
        Benchmark("flask", "{data_dir}/flask_eval.json", None, None, "out"),
        Benchmark("vicuna", "{data_dir}/vicuna_eval.json", None, None, "out"),
        Benchmark("mt-bench", "{data_dir}/mt_bench_eval.json", None, None, "out"),
    ]
    sup = {"learning_rate": 1e-6, "batch_size": 256}
    rl: dict[str, Any] = {}
    return Experiment(
        name=name,
        description=f"{model} on Feedback Collection (the paper's setting), four benchmarks",
        model=model,
        train_data="prometheus-eval/Feedback-Collection",
        benchmarks=benches,
        # one epoch of Feedback Collection's ~100k rows at 256 prompts a step (~390 steps) for
        # every run; the RL step count is our choice (the notes give no number of steps)
        runs=_comparison(390, 390, 390, 390, sup, rl, {"beta": 0.01}),
        train_preset="authors",
        common={"device": "auto", "gradient_checkpointing": True, "eval_batch_size": 64},
        seeds=1,
        max_new_tokens=1024,
        eval_batch_size=64,
        curve_benchmark="feedback-bench",
        curve_limit=500,
        curve_points=5,
        runnable_here=False,
        notes="Put flask_eval.json, vicuna_eval.json and mt_bench_eval.json (Prometheus "
        "format) in OUT/data before the run. Budgets: one epoch of Feedback Collection "
        "per run; change them with --set RUN.max_steps=N.",
    )


PRESETS["cpu-powered"] = _powered()
PRESETS["cpu-raft-start"] = _raft_start()
PRESETS["cpu-raft-tract"] = _raft_tract()
PRESETS["paper-qwen3-8b"] = _paper("Qwen/Qwen3-8B", "paper-qwen3-8b")
PRESETS["paper-qwen3-32b"] = _paper("Qwen/Qwen3-32B", "paper-qwen3-32b")


def get_preset(name: str) -> Experiment:
    """A deep copy of a preset (so a caller can change it freely)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
