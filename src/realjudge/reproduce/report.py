"""The outputs of ``realjudge reproduce``: results.json, results.md and the two plots.

``results.md`` follows the paper's main table: one row per method, Pearson and Spearman per
benchmark, then the average over benchmarks; each cell is the mean over seeds with its 95%
t interval. It has a table for each read-out (RAIL: the expected score; decode: the score the
judge wrote), the paper's claims checked on these numbers, and run diagnostics.

``results.json`` holds everything ``results.md`` and the plots are made from, so the document
can be rebuilt from it alone: :func:`repository_json` turns it into the file committed as
``docs/results/<preset>.json`` (its required keys: :func:`validate_results_json`), and
:func:`render_results` / :func:`write_plots` draw the markdown and the plots from either.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from realjudge.reproduce.stats import (
    Claim,
    Summary,
    aggregate,
    check_claims,
    fmt_diff,
    half_width_at,
    seed_difference,
)

log = logging.getLogger(__name__)

METRICS = (
    "pearson",
    "spearman",
    "decode_pearson",
    "decode_spearman",
    "rmse",
    "forced_cue_rate",
    "check_accuracy",
)
#: The version of the repository JSON (``docs/results/<preset>.json``).
SCHEMA = "realjudge-results/1"
#: Keys of a run dir's results.json that point into the run dir (prediction files, plot
#: files, the rendered markdown): left out of the repository JSON.
LOCAL_KEYS = ("predictions", "plots", "markdown")


def fmt_summary(s: Summary | None, digits: int = 3) -> str:
    """``0.412 [0.301, 0.523]``; one seed (or identical values): just the value; missing:
    ``n/a``."""
    if s is None or s.mean is None:
        return "n/a"
    if s.lo is None or s.hi is None or len(set(s.values)) <= 1:
        return f"{s.mean:.{digits}f}"
    return f"{s.mean:.{digits}f} [{s.lo:.{digits}f}, {s.hi:.{digits}f}]"


def main_table(
    agg: Mapping[str, Mapping[str, Mapping[str, Summary]]],
    benches: Sequence[str],
    pair: tuple[str, str] = ("pearson", "spearman"),
) -> str:
    """Markdown: one row per run; for each benchmark and the average, the two metrics."""
    cols = [*benches, "average"]
    header = ["method"] + [f"{b} {m.split('_')[-1][0].upper()}" for b in cols for m in pair]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run, per in agg.items():
        cells = [fmt_summary(per.get(b, {}).get(m)) for b in cols for m in pair]
        lines.append("| " + " | ".join([run, *cells]) + " |")
    return "\n".join(lines)


def variant_parents(runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``{variant: the run it varies}`` for the sweep rows of a results.json."""
    out = {}
    for r in runs:
        parent = r.get("variant_of") or (r["name"].split("[")[0] if "[" in r["name"] else None)
        if parent:
            out[r["name"]] = parent
    return out


def sweep_table(
    results: Mapping[str, Any],
    agg: Mapping[str, Mapping[str, Mapping[str, Summary]]],
    metric: str = "pearson",
) -> str:
    """Markdown: each sweep variant beside the run it varies -- its mean ``metric`` per
    benchmark and the change from the parent paired by seed (:func:`seed_difference`), and
    how often the evaluation had to force the score cue (a broken format shows there)."""
    parents = variant_parents(results["runs"])
    benches = results["in_domain"] + results["out_of_domain"]
    cols = [*benches, "average"]
    header = ["variant", "of"] + [f"{b} {h}" for b in cols for h in ("P", "change")]
    header += [f"forced cue {b}" for b in benches]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for parent in dict.fromkeys(parents.values()):
        cells = [f"{parent} (as in the preset)", "-"]
        for b in cols:
            cells += [fmt_summary(agg.get(parent, {}).get(b, {}).get(metric)), "-"]
        cells += [
            fmt_summary(agg.get(parent, {}).get(b, {}).get("forced_cue_rate"), 2) for b in benches
        ]
        lines.append("| " + " | ".join(cells) + " |")
        for name in (v for v, p in parents.items() if p == parent):
            cells = [name, parent]
            for b in cols:
                diff = seed_difference(results["per_seed"], name, parent, b, metric, benches)
                cells += [fmt_summary(agg.get(name, {}).get(b, {}).get(metric)), fmt_diff(diff)]
            cells += [
                fmt_summary(agg.get(name, {}).get(b, {}).get("forced_cue_rate"), 2) for b in benches
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claim_verdict(claim: Any) -> str:
    """``holds`` (significant), ``higher mean, not significant``, ``does not hold``
    (``significantly lower`` when the paired interval says so) or ``not testable``."""
    if claim.holds is None:
        return "not testable"
    if claim.holds:
        return "holds" if claim.significant else "higher mean, not significant"
    return "does not hold, significantly" if claim.significant else "does not hold"


def _claims_md(claims: Sequence[Any]) -> str:
    return "\n".join(f"- {c.text}: **{claim_verdict(c)}** ({c.detail})" for c in claims)


#: Seeds a comparison needs (the issue's and the guide's minimum): the detectable difference
#: of a results file with fewer is also given at this many, at the spread seen so far.
DESIGN_SEEDS = 3


def _claim_label(text: str) -> str:
    head = text.split(" (")[0]
    if head.startswith("REAL above "):
        return f"REAL - {head.removeprefix('REAL above ')}"
    return "out-of-domain minus in-domain gain"


def detectable_md(claims: Sequence[Any], n_seeds: int | None = None) -> str | None:
    """The smallest difference the design can detect: each claim's paired 95% interval
    half-width over the seeds it rests on (the claim's ``n``: a seed without a number for
    both sides is not among them; ``n_seeds``, the seeds run, for a claim that does not say),
    and, for those over fewer than :data:`DESIGN_SEEDS`, what that many seeds would give at
    the spread seen so far; ``None`` when no claim has an interval (fewer than two seeds)."""
    halves = []
    for c in claims:
        if c.ci_low is None or c.ci_high is None:
            continue
        n = getattr(c, "n", None) or n_seeds
        if n is None or n < 2:
            continue
        halves.append((_claim_label(c.text), (c.ci_high - c.ci_low) / 2, int(n)))
    if not halves:
        return None
    ns = {n for _, _, n in halves}
    if len(ns) == 1:
        now = ", ".join(f"{label} +-{h:.3f}" for label, h, _ in halves)
        over = f"over {ns.pop()} seeds"
    else:
        now = ", ".join(f"{label} +-{h:.3f} ({n} seeds)" for label, h, n in halves)
        over = "over the seeds each rests on"
    text = (
        "Smallest difference this design can detect (half-width of each paired 95% interval "
        f"above, {over}): {now}."
    )
    fewer = [(label, h, n) for label, h, n in halves if n < DESIGN_SEEDS]
    if fewer:
        then = ", ".join(
            f"{label} +-{half_width_at(h, n, DESIGN_SEEDS):.3f}" for label, h, n in fewer
        )
        text += f" At the same spread over seeds, {DESIGN_SEEDS} seeds would give: {then}."
    return text


def _has_metric(agg: Mapping[str, Any], benches: Sequence[str], metric: str) -> bool:
    return any(
        (s := per.get(b, {}).get(metric)) is not None and s.mean is not None
        for per in agg.values()
        for b in benches
    )


def _mean_cell(rows: Sequence[Mapping[str, Any]], key: str, digits: int) -> str:
    """Mean of ``key`` over the seeds' ``rows`` that have a number for it, or ``-``."""
    xs = [x[key] for x in rows if isinstance(x.get(key), int | float)]
    return f"{sum(xs) / len(xs):.{digits}f}" if xs else "-"


def _diagnostics_md(results: Mapping[str, Any], agg: Mapping[str, Any]) -> str:
    benches = results["in_domain"] + results["out_of_domain"]
    checks = _has_metric(agg, benches, "check_accuracy")
    header = ["run", "method", "steps", "warm start", "train s/seed", "eval s/seed"]
    header += [f"forced cue {b}" for b in benches]
    header += [f"item checks {b}" for b in benches] if checks else []
    header += ["rollout tok/s", "train tok/s", "tied groups", "train sq err"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in results["runs"]:
        name = r["name"]
        t = (results.get("timings_s") or {}).get(name, {})
        tr = [v for k, v in t.items() if k.endswith("_train_s") and v > 0]
        ev = [v for k, v in t.items() if k.endswith("_eval_s")] or [t.get("eval_s", 0.0)]
        thr = list((results.get("throughput") or {}).get(name, {}).values())
        signal = list((results.get("training_signal") or {}).get(name, {}).values())
        cells = [
            name,
            r["method"] or "-",
            str(r.get("steps", r.get("max_steps"))),
            r.get("init_from") or "-",
            f"{sum(tr) / len(tr):.0f}" if tr else "-",
            f"{sum(ev) / len(ev):.0f}",
        ]
        cells += [fmt_summary(agg[name].get(b, {}).get("forced_cue_rate"), 2) for b in benches]
        if checks:
            cells += [fmt_summary(agg[name].get(b, {}).get("check_accuracy"), 2) for b in benches]
        cells += [
            _mean_cell(thr, "rollout_tokens_per_s", 0),
            _mean_cell(thr, "train_tokens_per_s", 0),
        ]
        cells += [_mean_cell(signal, "tied_groups", 2), _mean_cell(signal, "sq_err", 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def precision_of(env: Mapping[str, Any]) -> str:
    """One seed's machine and precision in a few words, e.g. ``AMD EPYC, 2 threads, training
    bf16 autocast, evaluation bfloat16``."""
    train = env.get("train_mixed_precision")
    train = "fp32" if train in ("no", None) else f"{train} autocast"
    where = env.get("gpu") or env.get("cpu") or "unknown machine"
    features = env.get("cpu_bf16_features")
    if features and not env.get("gpu"):  # which bf16 the processor has (older runs: unknown)
        where += f" ({', '.join(features)})"
    n = env.get("threads")
    threads = f", {n} thread{'s' if n != 1 else ''}" if n and not env.get("gpu") else ""
    jobs = env.get("jobs")
    if jobs and jobs > 1:  # reproduce --jobs: runs side by side, each with its share
        threads = f", {jobs} runs at once{threads.replace(',', ' of', 1)} each"
    isa = env.get("onednn_max_cpu_isa")
    if isa and not env.get("gpu"):  # oneDNN capped at an older processor's instructions
        where += f", oneDNN capped at {isa}"
    attention = env.get("decode_attention")
    decoding = f", decoding with {attention} attention" if attention else ""
    top_p = env.get("top_p")
    nucleus = f", top-p nucleus by {top_p}" if top_p else ""
    cue = env.get("cue_scores")
    scores = f", written cues scored by the {cue} pass" if cue else ""
    kv = env.get("kv_cache")
    scores += f", CoT into a {kv} KV cache" if kv else ""
    evaluation = env.get("eval_dtype", "?")
    return f"{where}{threads}, training {train}, evaluation {evaluation}{decoding}{nucleus}{scores}"


def environment_md(results: Mapping[str, Any]) -> str | None:
    """``Machines: seeds 0, 1: ...; seed 2: ...`` from ``results['environment']`` (seeds
    grouped by identical machine and precision); ``None`` when nothing is recorded."""
    env = results.get("environment") or {}
    if not env:
        return None
    groups: dict[str, list[str]] = {}
    for seed in sorted(env, key=int):
        groups.setdefault(precision_of(env[seed]), []).append(seed)
    missing = [str(s) for s in results.get("seeds", []) if str(s) not in env]
    if missing:
        groups.setdefault("not recorded", []).extend(missing)
    text = "; ".join(
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}: {what}"
        for what, seeds in groups.items()
    )
    return f"Machines: {text}."


def results_markdown(
    results: Mapping[str, Any], agg: Mapping[str, Any], claims: Sequence[Any]
) -> str:
    """The whole ``results.md``."""
    benches = results["in_domain"] + results["out_of_domain"]
    seeds = results["seeds"]
    bench_desc = ", ".join(
        f"`{b['name']}` ({'in' if b['domain'] == 'in' else 'out of'} domain, "
        f"{b.get('n_items') or b.get('limit') or 'all'} items)"
        for b in results["benchmarks"]
    )
    variants = list(variant_parents(results["runs"]))
    parts = [
        f"## Preset `{results['preset']}`"
        + (f": sweep of {len(variants)} variants" if variants else ""),
        "",
        f"{results.get('description', '')}. Benchmarks: {bench_desc}. Seeds: {seeds}"
        f" (cells: mean over seeds and its 95% t interval, correlations clipped to [-1, 1];"
        f" the base model's greedy CoT does not depend on the seed). CoT evaluation: greedy,"
        f" up to"
        f" {results.get('eval_max_new_tokens')} tokens.",
    ]
    if results.get("command"):
        commit = results.get("commit")
        at = f" at commit `{commit}`" if commit and commit != "unknown" else ""
        parts += ["", f"Command: `{results['command']}`{at}"]
    machines = environment_md(results)
    if machines:
        parts += ["", machines]
    parts += [
        "",
        "### RAIL (expected score): Pearson (P) and Spearman (S)",
        "",
        main_table(agg, benches),
        "",
        "### Decoded score (the score the judge wrote): Pearson (P) and Spearman (S)",
        "",
        main_table(agg, benches, ("decode_pearson", "decode_spearman")),
        "",
        "### The paper's claims at this scale",
        "",
        _claims_md(claims),
        "",
    ]
    detectable = detectable_md(claims)
    if detectable:
        parts += [detectable, ""]
    if variants:
        parts += [
            "### Sweep: each variant against the run it varies",
            "",
            "RAIL Pearson (P) and its change from the parent run, paired by seed (mean over "
            "seeds and 95% t interval); forced cue: share of rows where the judge did not "
            "write the score cue and the evaluation appended it.",
            "",
            sweep_table(results, agg),
            "",
        ]
    parts += ["### Runs", "", _diagnostics_md(results, agg)]
    if results.get("training_signal"):
        parts += [
            "",
            "Tied groups: the fraction of prompt groups whose rollouts all got the same reward "
            "(advantage 0: no policy gradient from them); train sq err: the squared error of "
            "the expected score on the training batch (GRPO, REAL: after their own rollouts' "
            "feedbacks; SFT, TRACT: after the reference feedback; RAFT: without feedback); "
            "both means over the logged steps and the seeds "
            "(`frac_groups_zero_std` and `sq_err` in each run's `train_log.jsonl`).",
        ]
    if _has_metric(agg, benches, "check_accuracy"):
        parts += [
            "",
            "Item checks: accuracy of the item-by-item checks the judge wrote in its own "
            "feedbacks, against what each response contains (the embedded task's `meta`; an "
            "item without a readable check counts as wrong).",
        ]
    if results.get("notes"):
        parts += ["", results["notes"]]
    return "\n".join(parts) + "\n"


def plot_curves(
    results: Mapping[str, Any],
    path: Path,
    xlabel: str = "training step (of the run itself; warm starts begin at their parent's end)",
) -> Path | None:
    """Correlation vs training step, one line per run (mean over seeds at each step), and
    beside it the check accuracy of the judge's feedbacks when the runs logged it."""
    curves = results.get("curves") or {}
    if not any(pts for per in curves.values() for pts in per.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = results.get("check_curves") or {}
    panels = [(curves, "Pearson r (RAIL)")]
    if any(pts for per in checks.values() for pts in per.values()):
        panels.append((checks, "check accuracy (judge's item checks)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    c = results.get("curve", {})
    # one colour per run in every panel (a run without check curves leaves its colour unused)
    names = list(dict.fromkeys(run for series, _ in panels for run in series))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {run: palette[i % len(palette)] for i, run in enumerate(names)}
    for ax, (series, ylabel) in zip(axes[0], panels, strict=True):
        for run, per_seed in series.items():
            steps, means = mean_curve(per_seed)
            if steps:
                ax.plot(steps, means, marker="o", label=run, color=colour[run])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        title = f"periodic evaluation: first {c.get('limit')} items of {c.get('benchmark')}"
        ax.set_title(c.get("title") or title)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mean_curve(per_seed: Mapping[str, Sequence[Sequence[float]]]) -> tuple[list[int], list[float]]:
    """``(steps, mean over the seeds that have a point at that step)`` of ``{seed: [(step,
    value), ...]}``."""
    by_step: dict[int, list[float]] = {}
    for pts in per_seed.values():
        for step, v in pts:
            by_step.setdefault(int(step), []).append(float(v))
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def best_runs(agg: Mapping[str, Mapping[str, Mapping[str, Summary]]], k: int = 2) -> list[str]:
    """The ``k`` runs with the highest mean average Pearson."""
    scored = [
        (s.mean, run)
        for run, per in agg.items()
        if (s := per.get("average", {}).get("pearson")) is not None and s.mean is not None
    ]
    return [run for _, run in sorted(scored, reverse=True)[:k]]


def scatter_points(
    results: Mapping[str, Any], runs: Sequence[str], digits: int = 4
) -> dict[str, dict[str, list[list[float]]]]:
    """``{run: {benchmark: [[gold, RAIL prediction], ...]}}`` of ``runs`` (first seed), read
    from the prediction files that ``results['predictions']`` names; missing files: no points."""
    benches = results["in_domain"] + results["out_of_domain"]
    paths = results.get("predictions") or {}
    out: dict[str, dict[str, list[list[float]]]] = {}
    for run in runs:
        for bench in benches:
            p = Path(paths.get(run, {}).get(bench, ""))
            rows = []
            if p.is_file():
                rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
            out.setdefault(run, {})[bench] = [
                [float(r["gold"]), round(float(r["expected_score"]), digits)]
                for r in rows
                if r.get("gold") is not None and r.get("expected_score") is not None
            ]
    return out


def plot_scatter(results: Mapping[str, Any], runs: Sequence[str], path: Path) -> Path | None:
    """Prediction (RAIL) vs gold for ``runs`` on every benchmark (first seed; the points of
    ``results['scatter']``), with jitter on the gold axis so the integer scores do not hide
    each other."""
    import random

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = results["in_domain"] + results["out_of_domain"]
    points = results.get("scatter") or {}
    if not runs or not benches:
        return None
    fig, axes = plt.subplots(
        len(runs), len(benches), figsize=(4 * len(benches), 3.6 * len(runs)), squeeze=False
    )
    rng = random.Random(0)
    for i, run in enumerate(runs):
        for j, bench in enumerate(benches):
            ax = axes[i][j]
            pts = points.get(run, {}).get(bench, [])
            ax.scatter(
                [g + rng.uniform(-0.15, 0.15) for g, _ in pts],
                [y for _, y in pts],
                s=10,
                alpha=0.6,
            )
            ax.plot([1, 5], [1, 5], color="grey", lw=0.5)
            ax.set_title(f"{run} on {bench}", fontsize=9)
            ax.set_xlabel("gold")
            ax.set_ylabel("RAIL prediction")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plain(agg: Mapping[str, Mapping[str, Mapping[str, Summary]]]) -> dict[str, Any]:
    return {
        run: {b: {m: s.to_dict() for m, s in per_b.items()} for b, per_b in per.items()}
        for run, per in agg.items()
    }


def claims_of(results: Mapping[str, Any]) -> list[Claim]:
    """The paper's claims checked on ``results['per_seed']`` (:func:`check_claims`)."""
    names = {r["name"] for r in results["runs"]}
    return check_claims(
        results["per_seed"],
        results["in_domain"],
        results["out_of_domain"],
        regression=[n for n in ("RAFT", "RAFT+", "TRACT", "TRACT-2", "TRACT+") if n in names],
    )


def claim_record(c: Claim) -> dict[str, Any]:
    """A claim as the repository JSON holds it: :meth:`Claim.to_dict` plus its verdict."""
    return {**c.to_dict(), "verdict": claim_verdict(c)}


def _n_items(results: Mapping[str, Any], bench: Mapping[str, Any]) -> int | None:
    """Items a benchmark had: the most any evaluation graded, else its limit."""
    ns = [
        per_bench.get(bench["name"], {}).get("n_items")
        for seeds in results["per_seed"].values()
        for per_bench in seeds.values()
    ]
    ns = [int(n) for n in ns if n is not None]
    if ns:
        return max(ns)
    return None if bench.get("limit") is None else int(bench["limit"])


def complete_results(results: dict[str, Any], commit: str | None = None) -> dict[str, Any]:
    """Add to ``results`` (as :func:`~realjudge.reproduce.runner.run_reproduce` gathers them)
    everything derived from them: ``aggregate``, ``claims`` (with their numbers and verdict),
    ``best_runs``, ``scatter`` points, each run's ``steps``, each benchmark's ``n_items``,
    ``commit`` (kept when there; else ``commit`` or ``unknown``) and ``schema``. Idempotent;
    returns ``results``."""
    benches = results["in_domain"] + results["out_of_domain"]
    agg = aggregate(results["per_seed"], benches, METRICS)
    results["aggregate"] = _plain(agg)
    results["claims"] = [claim_record(c) for c in claims_of(results)]
    results["best_runs"] = best_runs(agg)
    for r in results["runs"]:
        r["steps"] = int(r.get("max_steps", r.get("steps")) or 0)
    for b in results["benchmarks"]:
        b["n_items"] = _n_items(results, b)
    if not results.get("scatter") and results.get("predictions"):
        results["scatter"] = scatter_points(results, results["best_runs"])
    results["commit"] = results.get("commit") or commit or "unknown"
    results["schema"] = SCHEMA
    return results


def _type_problems(where: str, obj: Any, fields: Mapping[str, tuple[type, ...]]) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: expected an object, got {type(obj).__name__}"]
    out = []
    for key, types in fields.items():
        if key not in obj:
            out.append(f"{where}: missing {key!r}")
        elif (isinstance(obj[key], bool) and bool not in types) or not isinstance(obj[key], types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            out.append(f"{where}.{key}: expected {names}, got {type(obj[key]).__name__}")
    return out


_NUM = (int, float, type(None))
#: Required keys of the repository JSON and their types (``None``: null allowed).
TOP_FIELDS: dict[str, tuple[type, ...]] = {
    "preset": (str,),
    "commit": (str,),
    "command": (str,),
    "seeds": (list,),
    "benchmarks": (list,),
    "runs": (list,),
    "claims": (list,),
    "per_seed": (dict,),
    "in_domain": (list,),
    "out_of_domain": (list,),
}
BENCH_FIELDS: dict[str, tuple[type, ...]] = {"name": (str,), "n_items": (int,), "domain": (str,)}
RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "method": (str, type(None)),
    "steps": (int,),
}
CLAIM_FIELDS: dict[str, tuple[type, ...]] = {
    "claim": (str,),
    "difference": _NUM,
    "ci_low": _NUM,
    "ci_high": _NUM,
    "verdict": (str,),
}


def validate_results_json(data: Any) -> list[str]:
    """What is wrong with a repository results JSON (empty: nothing). Required: ``preset``,
    ``commit``, ``command`` (strings); ``seeds`` (integers); ``benchmarks`` (``name``,
    ``n_items`` an integer, ``domain`` ``in``/``out``); ``runs`` (``name``, ``method`` a string
    or null for the starting model, ``steps`` an integer); ``claims`` (``claim``,
    ``difference``, ``ci_low``, ``ci_high`` numbers or null, ``verdict``); ``per_seed``
    (``{run: {seed: {benchmark: {metric: number or null}}}}``, every run in it); ``in_domain`` and
    ``out_of_domain`` (benchmark names). Optional: ``environment`` (``{seed: {field: value}}``,
    the machine and precision of each seed's runs)."""
    problems = _type_problems("results", data, TOP_FIELDS)
    if problems:
        return problems
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in data["seeds"]):
        problems.append("results.seeds: expected a list of integers")
    for i, b in enumerate(data["benchmarks"]):
        problems += _type_problems(f"benchmarks[{i}]", b, BENCH_FIELDS)
        if isinstance(b, dict) and b.get("domain") not in ("in", "out"):
            problems.append(f"benchmarks[{i}].domain: expected 'in' or 'out'")
    for i, r in enumerate(data["runs"]):
        problems += _type_problems(f"runs[{i}]", r, RUN_FIELDS)
        if isinstance(r, dict) and r.get("name") not in data["per_seed"]:
            problems.append(f"runs[{i}]: no per_seed results for {r.get('name')!r}")
    for i, c in enumerate(data["claims"]):
        problems += _type_problems(f"claims[{i}]", c, CLAIM_FIELDS)
    names = {b.get("name") for b in data["benchmarks"] if isinstance(b, dict)}
    for key in ("in_domain", "out_of_domain"):
        if not all(isinstance(n, str) and n in names for n in data[key]):
            problems.append(f"results.{key}: expected names of benchmarks")
    env = data.get("environment")
    if env is not None and not (
        isinstance(env, dict) and all(isinstance(e, dict) for e in env.values())
    ):
        problems.append("results.environment: expected {seed: {field: value}}")
    for run, seeds in data["per_seed"].items():
        for seed, per_bench in seeds.items() if isinstance(seeds, dict) else [(None, None)]:
            ok = isinstance(per_bench, dict) and all(
                isinstance(m, dict)
                and all(
                    v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                    for v in m.values()
                )
                for m in per_bench.values()
            )
            if not ok:
                problems.append(
                    f"per_seed[{run!r}][{seed!r}]: expected {{benchmark: {{metric: number}}}}"
                )
    return problems


def repository_json(results: Mapping[str, Any]) -> dict[str, Any]:
    """The repository form of a run dir's results.json (``docs/results/<preset>.json``):
    completed (:func:`complete_results`), without the keys that point into the run dir
    (:data:`LOCAL_KEYS`), JSON-safe; raises ``ValueError`` when it does not validate."""
    from realjudge.evaluate.report import json_safe

    data = complete_results(json.loads(json.dumps(json_safe(results))))
    data["command"] = data.get("command") or "unknown"
    data = {k: v for k, v in data.items() if k not in LOCAL_KEYS}
    problems = validate_results_json(data)
    if problems:
        raise ValueError("results do not validate: " + "; ".join(problems))
    return data


def export_results(run_dir: str | Path, to: str | Path | None = None) -> Path:
    """Write the repository JSON of the reproduce output dir ``run_dir`` to ``to`` (default
    ``docs/results/<preset>.json``); return its path."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    data = repository_json(results)
    if data["commit"] == "unknown":
        log.warning("%s records no commit; exported with commit 'unknown'", run_dir)
    path = Path(to) if to else Path("docs/results") / f"{data['preset']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


#: Keys that must be equal in results merged by :func:`merge_results` (the design of the
#: experiment); ``runs`` and ``benchmarks`` are compared without their measured fields.
DESIGN_KEYS = (
    "preset",
    "in_domain",
    "out_of_domain",
    "train_preset",
    "common",
    "eval_max_new_tokens",
    "curve",
)
#: Keys holding ``{run: {seed: ...}}``: merged seed by seed.
PER_SEED_KEYS = ("per_seed", "curves", "check_curves", "throughput", "training_signal")


def _design(data: Mapping[str, Any]) -> dict[str, Any]:
    runs = [{k: v for k, v in r.items() if k != "steps"} for r in data["runs"]]
    benches = [{k: v for k, v in b.items() if k != "n_items"} for b in data["benchmarks"]]
    return {"runs": runs, "benchmarks": benches, **{k: data.get(k) for k in DESIGN_KEYS}}


def merge_results(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One repository results JSON from ``parts`` (repository form, :func:`repository_json`)
    of the same experiment run on disjoint seeds -- e.g. one seed a session, each exported on
    its own: ``per_seed``, curves, check curves, throughput and per-seed timings are joined
    seed by seed, and the aggregates and claims are computed again on all seeds. ``command``
    and ``commit`` list every part's (``; `` / ``+``-joined, first-seed part first); the scatter
    points are the first seed's. Raises ``ValueError`` when the parts differ in design
    (:data:`DESIGN_KEYS`, runs, benchmarks) or share a seed."""
    if not parts:
        raise ValueError("nothing to merge")
    parts = sorted(parts, key=lambda d: min(d["seeds"], default=0))
    first = parts[0]
    seen: set[int] = set()
    for i, part in enumerate(parts):
        if i and _design(part) != _design(first):
            diff = [k for k, v in _design(part).items() if v != _design(first)[k]]
            raise ValueError(
                f"results of seeds {part['seeds']} differ from those of seeds "
                f"{first['seeds']} in {diff}: not the same experiment"
            )
        shared = seen & set(part["seeds"])
        if shared:
            raise ValueError(f"seeds {sorted(shared)} are in more than one of the results")
        seen |= set(part["seeds"])
    merged: dict[str, Any] = json.loads(json.dumps(first))
    merged["seeds"] = sorted(seen)
    for key in PER_SEED_KEYS:
        table: dict[str, dict[str, Any]] = {}
        for part in parts:
            for run, by_seed in (part.get(key) or {}).items():
                table.setdefault(run, {}).update(by_seed)
        if table or key in merged:
            merged[key] = table
    environment: dict[str, Any] = {}
    for part in parts:
        environment.update(part.get("environment") or {})
    if environment:
        merged["environment"] = environment
    kinds = {seed: precision_of(e) for seed, e in environment.items()}
    if len(set(kinds.values())) > 1 or len(environment) < len(seen):
        log.warning(
            "the seeds did not all run on the same kind of machine and precision (%s; seeds "
            "without a record: %s): the differences are still paired within each seed, but "
            "the spread over seeds mixes machines",
            "; ".join(f"seed {k}: {v}" for k, v in sorted(kinds.items())) or "none recorded",
            sorted(seen - {int(k) for k in environment}) or "none",
        )
    timings: dict[str, dict[str, Any]] = {}
    for part in parts:
        for run, t in (part.get("timings_s") or {}).items():
            for name, value in t.items():
                timings.setdefault(run, {}).setdefault(name, value)  # seed keys are distinct
    if timings:
        timings.pop("total", None)  # the wall time of one invocation: meaningless when merged
        merged["timings_s"] = timings
    for key, sep in (("command", "; "), ("commit", "+")):
        merged[key] = sep.join(dict.fromkeys(str(p[key]) for p in parts))
    if len({p["commit"] for p in parts}) > 1:
        log.warning(
            "merging results of different commits (%s): check that the training code did "
            "not change between them",
            merged["commit"],
        )
    merged = complete_results(merged)
    problems = validate_results_json(merged)
    if problems:  # pragma: no cover - the parts validated, and merging keeps the shape
        raise ValueError("merged results do not validate: " + "; ".join(problems))
    return merged


def merge_and_write(sources: Sequence[str | Path], to: str | Path | None = None) -> Path:
    """Merge the results in ``sources`` (repository JSON files or reproduce output dirs, as
    ``realjudge report --results`` reads them) with :func:`merge_results` and write the
    repository JSON to ``to`` (default ``docs/results/<preset>.json``); return its path."""
    from realjudge.reproduce.document import load_results

    parts = []
    for source in sources:
        _, data = load_results(source)
        if data is None:
            raise ValueError(f"{source}: a bench JSON, not experiment results")
        parts.append(data)
    merged = merge_results(parts)
    path = Path(to) if to else Path("docs/results") / f"{merged['preset']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2, allow_nan=False) + "\n")
    return path


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def stale_claims(data: Mapping[str, Any]) -> list[str]:
    """The claims whose stored verdict or difference disagrees with the claims checked again on
    ``data['per_seed']`` (a hand-edited number, or a JSON of an older claim check)."""
    stored = {c.get("claim"): c for c in data.get("claims", [])}
    out = []
    for c in map(claim_record, claims_of(data)):
        s = stored.get(c["claim"])
        if (
            s is None
            or s.get("verdict") != c["verdict"]
            or not _same(s.get("difference"), c["difference"])
        ):
            out.append(c["claim"])
    return out


def render_results(results: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The markdown of a results JSON (the run dir's or the repository's): the tables and the
    claims computed from ``per_seed``, then the ``plots`` (``{name: path}``)."""
    benches = results["in_domain"] + results["out_of_domain"]
    agg = aggregate(results["per_seed"], benches, METRICS)
    md = results_markdown(results, agg, claims_of(results))
    if plots:
        md += "\n" + "\n".join(f"![{k}]({v})" for k, v in plots.items()) + "\n"
    return md


def write_plots(results: Mapping[str, Any], folder: Path, prefix: str = "") -> dict[str, str]:
    """Draw the curves and the scatter of a results JSON into ``folder`` as
    ``<prefix>curves.png`` and ``<prefix>scatter.png``; return ``{name: file name}`` of those
    drawn (no curve points: no curves plot)."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = {}
    curve = plot_curves(results, folder / f"{prefix}curves.png")
    if curve:
        plots["curves"] = curve.name
    scatter = plot_scatter(results, results.get("best_runs") or [], folder / f"{prefix}scatter.png")
    if scatter:
        plots["scatter"] = scatter.name
    return plots


def write_results(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Aggregate ``results['per_seed']``, check the claims, write results.json/.md and the
    plots into ``out``; return the completed results (:func:`complete_results`, with the commit
    of the code that ran)."""
    from realjudge.evaluate.report import json_safe
    from realjudge.reproduce.document import git_commit

    complete_results(results, commit=git_commit(Path(__file__).parent))
    plots = write_plots(results, out)
    results["plots"] = plots
    (out / "results.json").write_text(json.dumps(json_safe(results), indent=2))
    md = render_results(results, plots)
    (out / "results.md").write_text(md)
    results["markdown"] = md
    return results
