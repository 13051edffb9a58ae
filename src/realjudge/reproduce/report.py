"""The outputs of ``realjudge reproduce``: results.json, results.md and the two plots.

``results.md`` follows the paper's main table: one row per method, Pearson and Spearman per
benchmark, then the average over benchmarks; each cell is the mean over seeds with its 95%
t interval. It has a table for each read-out (RAIL: the expected score; decode: the score the
judge wrote), the paper's claims checked on these numbers, and run diagnostics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from realjudge.reproduce.stats import (
    Summary,
    aggregate,
    check_claims,
    fmt_diff,
    seed_difference,
)

METRICS = ("pearson", "spearman", "decode_pearson", "decode_spearman", "rmse", "forced_cue_rate")


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


def _diagnostics_md(results: Mapping[str, Any], agg: Mapping[str, Any]) -> str:
    benches = results["in_domain"] + results["out_of_domain"]
    header = ["run", "method", "steps", "warm start", "train s/seed", "eval s/seed"]
    header += [f"forced cue {b}" for b in benches] + ["rollout tok/s", "train tok/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in results["runs"]:
        name = r["name"]
        t = results["timings_s"].get(name, {})
        tr = [v for k, v in t.items() if k.endswith("_train_s") and v > 0]
        ev = [v for k, v in t.items() if k.endswith("_eval_s")] or [t.get("eval_s", 0.0)]
        thr = [v for v in results["throughput"].get(name, {}).values()]

        def mean_of(key: str, rows: list[dict] = thr) -> str:
            xs = [x[key] for x in rows if x.get(key)]
            return f"{sum(xs) / len(xs):.0f}" if xs else "-"

        cells = [
            name,
            r["method"] or "-",
            str(r["max_steps"]),
            r["init_from"] or "-",
            f"{sum(tr) / len(tr):.0f}" if tr else "-",
            f"{sum(ev) / len(ev):.0f}",
        ]
        cells += [fmt_summary(agg[name].get(b, {}).get("forced_cue_rate"), 2) for b in benches]
        cells += [mean_of("rollout_tokens_per_s"), mean_of("train_tokens_per_s")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(
    results: Mapping[str, Any], agg: Mapping[str, Any], claims: Sequence[Any]
) -> str:
    """The whole ``results.md``."""
    benches = results["in_domain"] + results["out_of_domain"]
    seeds = results["seeds"]
    bench_desc = ", ".join(
        f"`{b['name']}` ({'in' if b['domain'] == 'in' else 'out of'} domain, "
        f"{b['limit'] or 'all'} items)"
        for b in results["benchmarks"]
    )
    variants = list(variant_parents(results["runs"]))
    parts = [
        f"## Preset `{results['preset']}`"
        + (f": sweep of {len(variants)} variants" if variants else ""),
        "",
        f"{results['description']}. Benchmarks: {bench_desc}. Seeds: {seeds}"
        f" (cells: mean over seeds and its 95% t interval, correlations clipped to [-1, 1];"
        f" the base model's greedy CoT does not depend on the seed). CoT evaluation: greedy,"
        f" up to"
        f" {results['eval_max_new_tokens']} tokens.",
    ]
    if results.get("command"):
        parts += ["", f"Command: `{results['command']}`"]
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
    if results.get("notes"):
        parts += ["", results["notes"]]
    return "\n".join(parts) + "\n"


def plot_curves(results: Mapping[str, Any], path: Path) -> Path | None:
    """Correlation vs training step, one line per run (mean over seeds at each step)."""
    curves = results.get("curves") or {}
    if not any(pts for per in curves.values() for pts in per.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run, per_seed in curves.items():
        by_step: dict[int, list[float]] = {}
        for pts in per_seed.values():
            for step, v in pts:
                by_step.setdefault(int(step), []).append(float(v))
        if not by_step:
            continue
        steps = sorted(by_step)
        ax.plot(steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], marker="o", label=run)
    c = results.get("curve", {})
    ax.set_xlabel("training step (of the run itself; warm starts begin at their parent's end)")
    ax.set_ylabel("Pearson r (RAIL)")
    ax.set_title(f"periodic evaluation: first {c.get('limit')} items of {c.get('benchmark')}")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_runs(agg: Mapping[str, Mapping[str, Mapping[str, Summary]]], k: int = 2) -> list[str]:
    """The ``k`` runs with the highest mean average Pearson."""
    scored = [
        (s.mean, run)
        for run, per in agg.items()
        if (s := per.get("average", {}).get("pearson")) is not None and s.mean is not None
    ]
    return [run for _, run in sorted(scored, reverse=True)[:k]]


def plot_scatter(results: Mapping[str, Any], runs: Sequence[str], path: Path) -> Path | None:
    """Prediction (RAIL) vs gold for ``runs`` on every benchmark (first seed), with jitter on
    the gold axis so the integer scores do not hide each other."""
    import random

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = results["in_domain"] + results["out_of_domain"]
    paths = results.get("predictions", {})
    if not runs or not benches:
        return None
    fig, axes = plt.subplots(
        len(runs), len(benches), figsize=(4 * len(benches), 3.6 * len(runs)), squeeze=False
    )
    rng = random.Random(0)
    for i, run in enumerate(runs):
        for j, bench in enumerate(benches):
            ax = axes[i][j]
            p = Path(paths.get(run, {}).get(bench, ""))
            rows = []
            if p.is_file():
                rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
            rows = [
                r for r in rows if r.get("gold") is not None and r.get("expected_score") is not None
            ]
            ax.scatter(
                [r["gold"] + rng.uniform(-0.15, 0.15) for r in rows],
                [r["expected_score"] for r in rows],
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


def write_results(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Aggregate ``results['per_seed']``, check the claims, write results.json/.md and the
    plots into ``out``; return the completed results."""
    from realjudge.evaluate.report import json_safe

    benches = results["in_domain"] + results["out_of_domain"]
    agg = aggregate(results["per_seed"], benches, METRICS)
    names = {r["name"] for r in results["runs"]}
    claims = check_claims(
        results["per_seed"],
        results["in_domain"],
        results["out_of_domain"],
        regression=[n for n in ("RAFT", "TRACT", "TRACT-2") if n in names],
    )
    results["aggregate"] = _plain(agg)
    results["claims"] = [c.to_dict() for c in claims]
    plots = {}
    curve = plot_curves(results, out / "curves.png")
    if curve:
        plots["curves"] = curve.name
    best = best_runs(agg)
    scatter = plot_scatter(results, best, out / "scatter.png")
    if scatter:
        plots["scatter"] = scatter.name
    results["plots"] = plots
    results["best_runs"] = best
    (out / "results.json").write_text(json.dumps(json_safe(results), indent=2))
    md = results_markdown(results, agg, claims)
    if plots:
        md += "\n" + "\n".join(f"![{k}]({v})" for k, v in plots.items()) + "\n"
    (out / "results.md").write_text(md)
    results["markdown"] = md
    return results
