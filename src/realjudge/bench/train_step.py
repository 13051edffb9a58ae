"""Training step: REAL vs GRPO, through the trainer's own code.

:func:`bench_train_step` runs REAL and GRPO training steps side by side on the same model,
prompts and rollouts, and reports the REAL/GRPO ratios of step time and peak memory (REAL
should cost what GRPO costs: one forward pass gives both the CoT log-probs and the score
distribution). Its machinery -- :func:`train_step_harness` (model, optimiser and accelerator
as the trainer builds them, snapshot/restore of the starting point, interleaved measured
rounds) and the summaries :func:`summarize_step_runs` / :func:`step_ratios` -- is shared with
:func:`realjudge.bench.sweep.bench_sweep`, which measures how both steps grow with group size,
prompt length and response length.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from realjudge.bench.common import (
    _fmt,
    _median,
    _MemoryProbe,
    _mib,
    _ratio,
    _sync,
    torch_threads,
    write_json,
)

METHODS = ("real", "grpo")


def round_order(i: int) -> tuple[str, ...]:
    """The methods in round ``i``: REAL GRPO, then GRPO REAL, ... Whatever the position in a
    round costs (caches, the other tenants of a shared machine) falls on both methods alike."""
    return METHODS if i % 2 == 0 else METHODS[::-1]


@dataclass
class StepSetup:
    """What one shape of training step needs, for both methods: the configs (the harness's
    shared settings with a few changed), their :class:`~realjudge.train.objectives.Context`
    objects, the objectives, the encoder and the micro-batch size (prompts)."""

    cfgs: dict[str, Any]
    ctxs: dict[str, Any]
    objectives: dict[str, Any]
    encoder: Any
    micro: int


def _method_configs(shared: dict[str, Any], beta: float) -> dict[str, Any]:
    from realjudge.train import build_config

    return {
        "real": build_config("real", overrides={**shared, "beta": beta}),
        "grpo": build_config("grpo", overrides=shared),
    }


class TrainStepHarness:
    """One model, optimiser and accelerator on which REAL and GRPO training steps are measured
    through the trainer's own code (built by :func:`train_step_harness`).

    The model is loaded and prepared as the trainer does it (``load_start``,
    ``prepare_for_training``), the AdamW optimiser and constant scheduler are built as the
    trainer builds them and everything goes through ``accelerator.prepare``. A step is
    :func:`realjudge.train.trainer.run_updates` (forward via ``judge_forward``, loss, backward,
    gradient clipping, AdamW step) of the method's objective on a list of
    :class:`~realjudge.train.rl.PromptGroup`. :meth:`restore` puts back the starting weights
    and the optimiser state kept by :meth:`keep_optimizer_state`, so that every measured step
    starts from the same point; each step gets fresh copies of the groups (no REAL advantages
    carried over from an earlier step), as every trainer step does.
    """

    def __init__(
        self,
        acc: Any,
        shared: dict[str, Any],
        beta: float,
        data: str,
        split: str | None,
        prompts: int,
    ) -> None:
        import torch
        from transformers import get_scheduler

        from realjudge.data.loaders import load_records
        from realjudge.scoring.vocab import ScoreVocab
        from realjudge.train.examples import check_records
        from realjudge.train.modeling import load_start, prepare_for_training

        self.acc, self.shared, self.beta = acc, shared, beta
        c = _method_configs(shared, beta)["real"]
        self.seed = c.seed
        torch.manual_seed(c.seed)
        net, tokenizer = load_start(c)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        net = prepare_for_training(net, c)
        records = load_records(data, split, limit=prompts, seed=c.seed).records[:prompts]
        if len(records) < prompts:
            raise ValueError(f"{data!r} holds {len(records)} records, {prompts} asked for")
        self.records = records
        self.scale = check_records(records, f"benchmark data {data}")
        self.vocab = ScoreVocab.from_tokenizer(tokenizer, c.fmt, self.scale)
        self.tokenizer = tokenizer
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(  # as the trainer builds it
            params,
            lr=c.learning_rate,
            betas=(c.adam_beta1, c.adam_beta2),
            eps=c.adam_eps,
            weight_decay=c.weight_decay,
        )
        scheduler = get_scheduler(
            "constant_with_warmup", optimizer, num_warmup_steps=0, num_training_steps=10**6
        )
        self.net, self.optimizer, self.scheduler = acc.prepare(net, optimizer, scheduler)
        self.device = acc.device
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]
        self.weights0 = [p.detach().to("cpu", copy=True) for p in self.trainable]
        self.inner = getattr(self.optimizer, "optimizer", self.optimizer)
        self.opt_state0: list[dict[str, Any]] = []
        self.optimizer_kept = False

    def setup(self, **changes: Any) -> StepSetup:
        """Both methods' step pieces for the shared settings with ``changes`` (config keys:
        ``num_generations``, ``max_new_tokens``, ``max_prompt_tokens``, ...)."""
        from realjudge.train.examples import Encoder
        from realjudge.train.objectives import Context
        from realjudge.train.trainer import check_sizes, make_objective

        cfgs = _method_configs({**self.shared, **changes}, self.beta)
        c = cfgs["real"]
        encoder = Encoder(self.tokenizer, self.vocab, c.fmt, c.max_prompt_tokens, c.max_new_tokens)
        ctxs = {
            m: Context(cfgs[m], self.acc, self.tokenizer, encoder, self.vocab, self.scale)
            for m in METHODS
        }
        objectives = {m: make_objective(cfgs[m]) for m in METHODS}
        return StepSetup(cfgs, ctxs, objectives, encoder, check_sizes(c, self.acc.num_processes))

    def describe(self) -> dict[str, Any]:
        """Where the steps run: device, dtype, mixed precision, memory measure, threads."""
        import torch

        return {
            "device": str(self.device),
            "dtype": str(next(self.net.parameters()).dtype),
            "mixed_precision": str(self.acc.mixed_precision),
            "memory_measure": _MemoryProbe(self.device).kind,
            "torch_threads": torch.get_num_threads(),
        }

    def restore(self) -> None:
        """The starting weights and the kept optimiser state, in place; no gradients."""
        import torch

        with torch.no_grad():
            for p, w in zip(self.trainable, self.weights0, strict=True):
                p.copy_(w)
            for p, saved in zip(self.trainable, self.opt_state0, strict=False):
                for k, v in saved.items():
                    cur = self.inner.state[p].get(k)
                    if isinstance(v, torch.Tensor) and isinstance(cur, torch.Tensor):
                        cur.copy_(v)
                    else:
                        self.inner.state[p][k] = v
        self.optimizer.zero_grad(set_to_none=True)

    def keep_optimizer_state(self) -> None:
        """Keep the optimiser state that the warm-up allocated, with its moments zeroed: every
        later step starts from it, with no momentum carried over from the other method, so a
        step moves the weights only through its own gradient."""
        import torch

        self.opt_state0 = [
            {
                k: (
                    (v.detach().to("cpu", copy=True) if k == "step" else torch.zeros_like(v))
                    if isinstance(v, torch.Tensor)
                    else v
                )
                for k, v in self.inner.state[p].items()
            }
            for p in self.trainable
        ]
        self.optimizer_kept = True

    def weight_change(self) -> float:
        """Largest absolute change of a trainable weight since the start."""
        import torch

        with torch.no_grad():
            return max(
                float((p.detach().cpu() - w).abs().max())
                for p, w in zip(self.trainable, self.weights0, strict=True)
            )

    def update(self, m: str, setup: StepSetup, items: Sequence[Any]) -> dict[str, float]:
        """One training step of method ``m`` on ``items`` (see :func:`fresh_groups`)."""
        import torch

        from realjudge.train.trainer import run_updates

        torch.manual_seed(self.seed)
        self.net.train()
        return run_updates(
            self.acc,
            setup.ctxs[m],
            self.net,
            self.optimizer,
            self.scheduler,
            setup.objectives[m],
            items,
            setup.micro,
        )

    def warm_up(self, setup: StepSetup, groups: Sequence[Any], steps: int) -> None:
        """``steps`` unmeasured steps per method (first-call allocations and kernel choices
        stay out of the timings); the first warm-up keeps the optimiser state."""
        for _ in range(steps):
            for m in METHODS:
                self.restore()
                self.update(m, setup, fresh_groups(groups))
        if not self.optimizer_kept:
            self.keep_optimizer_state()

    def warm_up_method(self, m: str, setup: StepSetup, groups: Sequence[Any]) -> None:
        """One unmeasured step of method ``m`` alone; keeps the optimiser state it made."""
        self.restore()
        self.update(m, setup, fresh_groups(groups))
        if not self.optimizer_kept:
            self.keep_optimizer_state()

    def measure(
        self, m: str, setup: StepSetup, groups: Sequence[Any], probe: _MemoryProbe
    ) -> dict[str, Any]:
        """Time (wall and process CPU) and peak memory of one step of ``m`` from the current
        weights, then the weight change, loss, gradient norm and zero-std group fraction."""
        items = fresh_groups(groups)
        probe.start()
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = self.update(m, setup, items)
        _sync(self.device)
        run: dict[str, Any] = {
            "update_s": time.perf_counter() - t0,
            "update_cpu_s": time.process_time() - c0,
        }
        run["peak_bytes"], run["footprint_bytes"] = probe.stop()
        run["weight_change"] = self.weight_change()
        run["loss"] = metrics.get("loss")
        run["grad_norm"] = metrics.get("grad_norm")
        run["frac_groups_zero_std"] = metrics.get("frac_groups_zero_std")
        return run

    def measure_rounds(
        self,
        setup: StepSetup,
        groups: Sequence[Any],
        repeats: int,
        probe: _MemoryProbe,
        before_update: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """``repeats`` rounds of one step per method in :func:`round_order`, each from the
        restored starting point; ``before_update(method, run)`` runs after the restore and may
        add to the round's record. Restores once more at the end."""
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
        for i in range(repeats):
            for m in round_order(i):
                run: dict[str, Any] = {}
                self.restore()
                if before_update is not None:
                    before_update(m, run)
                run.update(self.measure(m, setup, groups, probe))
                runs[m].append(run)
        self.restore()
        return runs


def fresh_groups(groups: Sequence[Any]) -> list[Any]:
    """Copies of the prompt groups without stored REAL advantages (a trainer step's groups
    come fresh from sampling; REAL computes their advantages in its first forward pass)."""
    return [replace(g, advantages=None) for g in groups]


@contextmanager
def train_step_harness(
    *,
    model: str,
    data: str,
    split: str | None,
    prompts: int,
    group_size: int,
    max_new_tokens: int,
    max_prompt_tokens: int,
    lora: bool,
    device: str | None,
    dtype: str | None,
    fmt: str,
    beta: float,
    temperature: float,
    top_p: float,
    learning_rate: float,
    seed: int,
    threads: int | None,
    mixed_precision: str = "auto",
    freeze_layers: int = 0,
    share_prompt_forward: bool = True,
) -> Iterator[TrainStepHarness]:
    """A :class:`TrainStepHarness` for one step of ``prompts`` prompts x ``group_size``
    rollouts; torch runs on ``threads`` threads (default: unchanged) until the block ends, and
    the accelerator is released then. ``mixed_precision``: the config key (``auto``: as the
    trainer picks it); ``freeze_layers``: the config key (the lower layers and the input
    embeddings frozen, backward stopping above them); ``share_prompt_forward``: the config key
    (each prompt run once for its rollouts in the training forward), and
    ``share_prefix_forward`` with it (off: the plain full pass)."""
    import tempfile
    from pathlib import Path

    from realjudge.train.trainer import _release, make_accelerator

    with tempfile.TemporaryDirectory(prefix="realjudge-bench-") as tmp:
        shared: dict[str, Any] = dict(
            model=model,
            data=data,
            data_split=split,
            out=str(Path(tmp) / "run"),
            device=device or "auto",
            dtype=dtype or "float32",
            report_to="none",
            fmt=fmt,
            lora=lora,
            seed=seed,
            batch_size=prompts,
            max_steps=1,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            learning_rate=learning_rate,
            num_generations=group_size,
            ppo_epochs=1,
            temperature=temperature,
            top_p=top_p,
            mixed_precision=mixed_precision,
            freeze_layers=freeze_layers,
            share_prompt_forward=share_prompt_forward,
            share_prefix_forward=share_prompt_forward,
        )
        acc = make_accelerator(_method_configs(shared, beta)["real"])
        try:
            with torch_threads(threads):
                yield TrainStepHarness(acc, shared, beta, data, split, prompts)
        finally:
            _release(acc)


def summarize_step_runs(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per method, medians over rounds (and the per-round lists) of a
    :meth:`TrainStepHarness.measure_rounds` result."""
    results: dict[str, dict[str, Any]] = {}
    for m, rs in runs.items():
        results[m] = {
            "update_s": _median([r["update_s"] for r in rs]),
            "update_s_all": [r["update_s"] for r in rs],
            "update_cpu_s": _median([r["update_cpu_s"] for r in rs]),
            "update_cpu_s_all": [r["update_cpu_s"] for r in rs],
            "peak_mib": _median([_mib(r["peak_bytes"]) for r in rs]),
            "footprint_mib": _median([_mib(r["footprint_bytes"]) for r in rs]),
            "footprint_mib_all": [_mib(r["footprint_bytes"]) for r in rs],
            "weight_change_min": min(r["weight_change"] for r in rs),
            "loss": _median([r["loss"] for r in rs]),
            "grad_norm": _median([r["grad_norm"] for r in rs]),
            "frac_groups_zero_std": _median([r["frac_groups_zero_std"] for r in rs]),
        }
    return results


def paired_ratio(
    runs: dict[str, list[dict[str, Any]]], value: Callable[[dict[str, Any]], float | None]
) -> float | None:
    """Median over rounds of REAL/GRPO within the round: the two steps of a round ran back to
    back, so a slow drift of the machine's load cancels out."""
    pairs = zip(runs["real"], runs["grpo"], strict=True)
    return _median([_ratio(value(a), value(b)) for a, b in pairs])


def step_ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float | None]:
    """The paired REAL/GRPO ratios of update time (wall and CPU), step memory footprint and
    absolute peak memory."""
    return {
        "time": paired_ratio(runs, lambda r: r["update_s"]),
        "cpu_time": paired_ratio(runs, lambda r: r["update_cpu_s"]),
        "memory": paired_ratio(runs, lambda r: r["footprint_bytes"]),
        "absolute_peak_memory": paired_ratio(runs, lambda r: r["peak_bytes"]),
    }


def bench_train_step(
    model: str = "embedded",
    data: str = "embedded",
    prompts: int = 2,
    group_size: int = 4,
    max_new_tokens: int = 48,
    repeats: int = 3,
    *,
    lora: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    split: str | None = "train",
    fmt: str = "result",
    max_prompt_tokens: int = 512,
    beta: float = 0.01,
    temperature: float = 1.0,
    top_p: float = 0.9,
    learning_rate: float = 1e-5,
    seed: int = 0,
    warmup: int = 1,
    generation: bool = True,
    threads: int | None = None,
    show: bool = True,
    json_out: str | None = None,
) -> dict[str, Any]:
    """One REAL and one GRPO training step on the same model, prompts and rollouts.

    Both methods go through the trainer's own code (see :class:`TrainStepHarness`): configs
    from :func:`realjudge.train.build_config`, rollouts from
    :func:`realjudge.train.rl.sample_groups`, the objectives
    :class:`~realjudge.train.rl.REALObjective` / :class:`~realjudge.train.rl.GRPOObjective`
    and :func:`realjudge.train.trainer.run_updates` (forward via ``judge_forward``, loss,
    backward, gradient clipping, AdamW step). Rollouts are sampled once with a fixed seed and
    shared by both methods; before every step the trainable weights and the optimiser state are
    restored in place from a snapshot, so each measured step starts from the same point.

    After ``warmup`` unmeasured steps per method, ``repeats`` rounds run REAL and GRPO,
    interleaved (the order flips every round: REAL GRPO GRPO REAL REAL ...). Each
    round times the update phase (the headline ratio) and measures its peak memory (see
    :class:`_MemoryProbe`); with ``generation`` it also times each method's own rollout
    sampling (``objective.prepare``, same seed: the same rollouts), reported separately and
    in the full-step ratio. ``beta`` is REAL's refinement weight (0.01: the authors' best; the
    default 0.0 computes the same graph scaled by zero). Returns a dict (also written to
    ``json_out``) with, each the median over rounds of the round's REAL/GRPO ratio,
    ``ratios["time"]`` (update phase, wall clock), ``ratios["cpu_time"]``
    (the same steps in process CPU time, steadier than wall time on a shared CPU),
    ``ratios["full_step_time"]`` and ``ratios["memory"]`` (step footprints); prints a table when
    ``show``. ``threads``: torch threads for the run (default: unchanged).
    """
    from realjudge.train.rl import sample_groups

    if min(prompts, group_size, max_new_tokens, repeats, warmup) < 1:
        # warmup >= 1: the untimed step also builds the optimiser state that every measured
        # step is restored to (with none, AdamW's counts and moments carried over)
        raise ValueError("prompts, group_size, max_new_tokens, repeats and warmup must be >= 1")
    with train_step_harness(
        model=model,
        data=data,
        split=split,
        prompts=prompts,
        group_size=group_size,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
        lora=lora,
        device=device,
        dtype=dtype,
        fmt=fmt,
        beta=beta,
        temperature=temperature,
        top_p=top_p,
        learning_rate=learning_rate,
        seed=seed,
        threads=threads,
    ) as h:
        setup = h.setup()
        # ---- the shared rollouts: sampled once, seeded, with the starting weights ----
        h.net.train()
        groups, rollout_stats = sample_groups(
            setup.ctxs["real"],
            h.net,
            h.records,
            group_size=group_size,
            temperature=temperature,
            top_p=top_p,
        )
        flat = [r.response_ids for g in groups for r in g.rollouts]
        h.warm_up(setup, groups, warmup)
        indexed = list(enumerate(h.records))
        same_rollouts = [True]

        def time_generation(m: str, run: dict[str, Any]) -> None:
            h.net.train()
            _sync(h.device)
            t0 = time.perf_counter()
            items, _ = setup.objectives[m].prepare(setup.ctxs[m], h.net, indexed, 0)
            _sync(h.device)
            run["generation_s"] = time.perf_counter() - t0
            same_rollouts[0] &= [r.response_ids for g in items for r in g.rollouts] == flat

        probe = _MemoryProbe(h.device)
        runs = h.measure_rounds(
            setup, groups, repeats, probe, time_generation if generation else None
        )
        where = h.describe()

    results = summarize_step_runs(runs)
    for m in METHODS:
        rs = runs[m]
        results[m]["generation_s"] = _median([r.get("generation_s") for r in rs])
        results[m]["full_step_s"] = (
            _median([r["generation_s"] + r["update_s"] for r in rs]) if generation else None
        )
    real, grpo = results["real"], results["grpo"]
    ratios = {
        **step_ratios(runs),
        "full_step_time": (
            paired_ratio(runs, lambda r: r["generation_s"] + r["update_s"]) if generation else None
        ),
        "time_of_medians": _ratio(real["update_s"], grpo["update_s"]),
        "memory_of_medians": _ratio(real["footprint_mib"], grpo["footprint_mib"]),
    }
    n_rows = len(flat)
    out = {
        "config": {
            "model": model,
            "data": data,
            "prompts": prompts,
            "group_size": group_size,
            "rows": n_rows,
            "max_new_tokens": max_new_tokens,
            "repeats": repeats,
            "warmup": warmup,
            "lora": lora,
            "beta": beta,
            **where,
        },
        "rollouts": {
            **rollout_stats,
            "mean_response_tokens": sum(len(r) for r in flat) / max(1, n_rows),
            "identical_when_resampled": same_rollouts[0] if generation else None,
        },
        "results": results,
        "ratios": ratios,
    }
    if json_out:
        write_json(out, json_out)
    if show:
        print_train_step_bench(out)
    return out


def train_step_ratio_lines(result: dict[str, Any]) -> list[str]:
    r = result["ratios"]
    return [
        f"real/grpo step time ratio: {_fmt(r['time'])}",
        f"real/grpo peak memory ratio: {_fmt(r['memory'])}",
    ]


def print_train_step_bench(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg, res, ro = result["config"], result["results"], result["rollouts"]
    table = Table(
        title=(
            f"train step: {cfg['model']} on {cfg['data']}, {cfg['prompts']} prompts x "
            f"{cfg['group_size']} rollouts ({ro['mean_response_tokens']:.0f} tokens each), "
            f"{cfg['device']} {cfg['dtype']}{' LoRA' if cfg['lora'] else ''}, "
            f"median of {cfg['repeats']}"
        )
    )
    for col in (
        "method",
        "update s",
        "update CPU s",
        "generation s",
        "full step s",
        "step memory MiB",
        "peak MiB",
        "grad norm",
        "max |dw|",
    ):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m, r in res.items():
        table.add_row(
            m.upper(),
            _fmt(r["update_s"]),
            _fmt(r["update_cpu_s"]),
            _fmt(r["generation_s"]),
            _fmt(r["full_step_s"]),
            _fmt(r["footprint_mib"], ".1f"),
            _fmt(r["peak_mib"], ".1f"),
            _fmt(r["grad_norm"], ".3g"),
            _fmt(r["weight_change_min"], ".2e"),
        )
    console = Console()
    if console.width < 120:
        console = Console(width=120)
    console.print(table)
    rat = result["ratios"]
    print(
        "update phase = judge_forward + loss + backward + AdamW step on the same rollouts "
        "(the headline time ratio); full step adds each method's own rollout generation "
        "(identical for both). Ratios: median over rounds of REAL/GRPO within a round."
    )
    print(
        f"memory = the step's own footprint ({cfg['memory_measure']}, peak minus use before "
        "the step)"
        + (
            f"; absolute peak ratio {_fmt(rat['absolute_peak_memory'])}"
            if cfg["device"].startswith("cuda")
            else ""
        )
        + "."
    )
    if res["grpo"]["grad_norm"] == 0.0:
        print(
            "note: every GRPO group had equal rewards on these rollouts, so its gradient is "
            "zero (the step still does all its work)."
        )
    print(f"real/grpo full step time ratio (generation + update): {_fmt(rat['full_step_time'])}")
    print(
        f"real/grpo step CPU-time ratio (update phase, process CPU time): {_fmt(rat['cpu_time'])}"
    )
    for line in train_step_ratio_lines(result):
        print(line)
