"""Evaluation reports: metrics.json, a markdown report, plots, and comparison tables.

Plots are drawn on bare :class:`matplotlib.figure.Figure` objects with the Agg canvas, so
nothing touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from realjudge.evaluate.metrics import METRIC_NAMES, OK_STATUSES, confusion_matrix, round_half_up

__all__ = ["comparison_table", "format_value", "json_safe", "rich_table", "write_report"]

_N_EXAMPLES = 3  # worst and first rows shown each
_FEEDBACK_CHARS = 600


# --------------------------------------------------------------------------------------------
# formatting helpers


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts: NaN/inf -> None,
    numpy scalars/arrays -> Python, tuples/sets -> lists, paths and other objects -> str."""
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [json_safe(v) for v in obj]
    return str(obj)


def format_value(v: Any, digits: int = 3) -> str:
    """``0.612`` for floats, ``12`` for ints, ``n/a`` for None/NaN."""
    if v is None or isinstance(v, bool):
        return "n/a" if v is None else str(v)
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return f"{float(v):.{digits}f}" if math.isfinite(float(v)) else "n/a"
    return str(v)


def _format_with_ci(value: Any, ci: Any) -> str:
    s = format_value(value)
    if value is not None and ci is not None and len(ci) == 2:
        s += f" [{format_value(ci[0], 2)}, {format_value(ci[1], 2)}]"
    return s


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            items += _flatten(v, key + ".")
        else:
            items.append((key, v))
    return items


def _lookup(d: Mapping, dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _scale_of(metrics: Mapping, config: Mapping) -> tuple[int, int]:
    s = metrics.get("scale") or config.get("scale") or (1, 5)
    return int(s[0]), int(s[1])


def _scored(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        p, g = r.get("prediction"), r.get("gold")
        if r.get("status") not in OK_STATUSES or p is None or g is None:
            continue
        if math.isfinite(float(p)) and math.isfinite(float(g)):
            out.append(r)
    return out


# --------------------------------------------------------------------------------------------
# plots


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _scatter_plot(path: Path, rows: list[dict], metrics: Mapping, scale: tuple[int, int]) -> None:
    lo, hi = scale
    fig = Figure(figsize=(5.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    scored = _scored(rows)
    if scored:
        rng = np.random.default_rng(0)
        gold = np.array([float(r["gold"]) for r in scored])
        pred = np.array([float(r["prediction"]) for r in scored])
        jitter = 0.08 * (hi - lo) / 4.0
        ax.scatter(
            gold + rng.uniform(-jitter, jitter, gold.size),
            pred + rng.uniform(-jitter, jitter, pred.size),
            s=12,
            alpha=0.45,
            edgecolors="none",
        )
    else:
        ax.text(0.5, 0.5, "no scored rows", ha="center", va="center", transform=ax.transAxes)
    pad = 0.3
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="y = x")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("gold (jittered)")
    ax.set_ylabel("prediction (jittered)")
    ax.set_title(f"prediction vs gold: Pearson r = {format_value(metrics.get('pearson'))}")
    ax.legend(loc="upper left")
    _save(fig, path)


def _confusion_plot(path: Path, rows: list[dict], scale: tuple[int, int]) -> None:
    lo, hi = scale
    scores = list(range(lo, hi + 1))
    scored = _scored(rows)
    pred_int = [int(round_half_up(min(max(float(r["prediction"]), lo), hi))) for r in scored]
    gold_int = [int(round_half_up(min(max(float(r["gold"]), lo), hi))) for r in scored]
    mat = np.array(confusion_matrix(pred_int, gold_int, scores))  # rows gold, cols pred
    grid = mat.T  # rows pred, cols gold: plotted with pred on the y axis like the scatter
    fig = Figure(figsize=(5.0, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, origin="lower", cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    vmax = grid.max() if grid.size else 0
    for i in range(len(scores)):
        for j in range(len(scores)):
            c = int(grid[i, j])
            ax.text(
                j,
                i,
                str(c),
                ha="center",
                va="center",
                color="white" if vmax and c > vmax / 2 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(scores)), [str(s) for s in scores])
    ax.set_yticks(range(len(scores)), [str(s) for s in scores])
    ax.set_xlabel("gold (rounded)")
    ax.set_ylabel("prediction (rounded)")
    ax.set_title(f"rounded prediction vs gold (n = {len(scored)})")
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# markdown report


def _metrics_section(metrics: Mapping) -> str:
    columns: list[tuple[str, Mapping]] = [("prediction", metrics)]
    for name, m in (metrics.get("by_field") or {}).items():
        if isinstance(m, Mapping):
            columns.append((name, m))
    header = ["metric"] + [c for c, _ in columns]
    body = [["n"] + [format_value(m.get("n")) for _, m in columns]]
    for name in METRIC_NAMES:
        body.append(
            [name] + [_format_with_ci(m.get(name), m.get(f"{name}_ci")) for _, m in columns]
        )
    return _md_table(header, body)


def _checks_section(checks: Mapping) -> str:
    """The judge's item-by-item checks (``metrics["checks"]``) in words and a table."""
    text = (
        "The item-by-item checks the judge wrote in its own feedbacks (`tent: named`, `room 207: "
        "kept`), read back and compared with what each response really contains (the records' "
        f"`meta`): {format_value(checks.get('n_parsable'))} of "
        f"{format_value(checks.get('n_feedbacks'))} feedbacks have a readable check, "
        f"{format_value(checks.get('n_complete'))} check every item. Accuracy counts an item "
        "without a readable check as wrong; brackets: 95% bootstrap CI over rows."
    )
    body = [
        [
            "accuracy (all items)",
            _format_with_ci(checks.get("accuracy"), checks.get("accuracy_ci")),
        ],
        ["accuracy of the checks read", format_value(checks.get("accuracy_of_read"))],
        ["feedbacks with every item right", format_value(checks.get("all_correct_rate"))],
        ["items / checks read", f"{checks.get('n_items')} / {checks.get('n_read')}"],
    ]
    return text + "\n\n" + _md_table(["item checks", "value"], body)


def _feedback_text(fb: Any) -> str | None:
    if fb is None:
        return None
    if isinstance(fb, list | tuple):
        fb = next((f for f in fb if f), None)
        if fb is None:
            return None
    text = str(fb).strip()
    if len(text) > _FEEDBACK_CHARS:
        text = text[:_FEEDBACK_CHARS].rstrip() + " ..."
    return text


def _example_rows(rows: list[dict]) -> list[tuple[str, dict]]:
    scored = _scored(rows)
    worst = sorted(scored, key=lambda r: -abs(float(r["prediction"]) - float(r["gold"])))
    picked: list[tuple[str, dict]] = [("largest error", r) for r in worst[:_N_EXAMPLES]]
    seen = {id(r) for _, r in picked}
    for r in rows:
        if len(picked) >= 2 * _N_EXAMPLES:
            break
        if id(r) not in seen:
            picked.append(("example", r))
            seen.add(id(r))
    return picked


def _examples_section(rows: list[dict]) -> str:
    picked = _example_rows(rows)
    if not picked:
        return "_no rows_"
    parts = []
    for why, r in picked:
        head = (
            f"**{_md_cell(r.get('id'))}** ({why}): gold {format_value(r.get('gold'))}, "
            f"prediction {format_value(r.get('prediction'))}, status `{r.get('status')}`"
        )
        if r.get("distribution") is not None:
            dist = ", ".join(format_value(p, 2) for p in r["distribution"])
            head += f", distribution [{dist}]"
        fb = _feedback_text(r.get("feedback"))
        quote = "\n".join("> " + line for line in fb.splitlines()) if fb else "> _no feedback_"
        parts.append(f"{head}\n\n{quote}")
    return "\n\n".join(parts)


def _report_markdown(
    title: str, rows: list[dict], metrics: Mapping, config: Mapping, files: Mapping[str, Path]
) -> str:
    config_rows = [
        (k, json.dumps(json_safe(v)) if not isinstance(v, str) else v) for k, v in _flatten(config)
    ]
    status = metrics.get("status_counts") or {}
    sections = [f"# {title}"]
    if config.get("reading"):
        sections.append(f"Reading: {config['reading']}.")
    sections += [
        "## Configuration",
        _md_table(["key", "value"], config_rows) if config_rows else "_empty_",
        "## Metrics",
        f"Rows: {format_value(metrics.get('n_total', len(rows)))} total, "
        f"{format_value(metrics.get('n'))} scored, {format_value(metrics.get('n_failed'))} failed. "
        "Brackets: 95% percentile bootstrap CIs over rows. Accuracy: rounded (half up) "
        "prediction equals rounded gold.",
        _metrics_section(metrics),
        *(["## Item checks", _checks_section(metrics["checks"])] if metrics.get("checks") else []),
        "## Status",
        _md_table(["status", "rows"], sorted(status.items())) if status else "_no rows_",
        f"Mean leaked probability mass (off the score tokens): "
        f"{format_value(metrics.get('mean_leaked_mass'), 4)}. "
        f"Forced-cue rate (no cue written): {format_value(metrics.get('forced_cue_rate'))}; "
        f"re-tokenized cue rate (cue written, rewritten canonically): "
        f"{format_value(metrics.get('retokenized_cue_rate'))}."
        + (
            f" Decode fallbacks (samples whose written score could not be read: the argmax of "
            f"p instead): {metrics['n_decode_fallback']}."
            if metrics.get("n_decode_fallback")
            else ""
        ),
        "## Plots",
        f"![prediction vs gold]({files['scatter'].name})\n\n"
        f"![confusion matrix]({files['confusion'].name})",
        "## Examples",
        _examples_section(rows),
    ]
    return "\n\n".join(sections) + "\n"


# --------------------------------------------------------------------------------------------
# public API


def write_report(
    out_dir: Path, rows: list[dict], metrics: dict, config: dict, *, title: str
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``scatter.png`` and ``confusion.png`` into ``out_dir``.

    ``metrics`` is typically :func:`~realjudge.evaluate.metrics.summarize_predictions` output and
    ``rows`` the prediction rows (predictions.jsonl itself is the caller's). ``metrics.json``
    holds ``{"title", "metrics", "config"}`` with NaN/inf replaced by null. Returns the paths
    keyed ``metrics``, ``report``, ``scatter``, ``confusion``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "metrics": out_dir / "metrics.json",
        "report": out_dir / "report.md",
        "scatter": out_dir / "scatter.png",
        "confusion": out_dir / "confusion.png",
    }
    scale = _scale_of(metrics, config)
    payload = json_safe({"title": title, "metrics": metrics, "config": config})
    files["metrics"].write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    _scatter_plot(files["scatter"], rows, metrics, scale)
    _confusion_plot(files["confusion"], rows, scale)
    files["report"].write_text(_report_markdown(title, rows, metrics, config, files))
    return files


def _table_data(
    results: Mapping[str, Mapping[str, Mapping]], metrics: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    columns: list[str] = []
    for per_col in results.values():
        for col in per_col:
            if col not in columns:
                columns.append(col)
    header = ["method"]
    for col in columns:
        header += [col if len(metrics) == 1 else f"{col} {m}" for m in metrics]
    body = []
    for method, per_col in results.items():
        row = [str(method)]
        for col in columns:
            m = per_col.get(col)
            row += [
                format_value(_lookup(m, k) if isinstance(m, Mapping) else None) for k in metrics
            ]
        body.append(row)
    return header, body


def comparison_table(
    results: dict[str, dict[str, dict]], metrics: Sequence[str] = ("pearson", "spearman")
) -> str:
    """Markdown table: one row per method/model (``results`` keys), one column per split and
    metric (``results[method][split][metric]``; dotted names such as
    ``by_field.decoded_score.pearson`` reach nested values). Values with 3 decimals, missing
    or None -> ``n/a``. With a single metric the columns are just the split names."""
    header, body = _table_data(results, metrics)
    return _md_table(header, body)


def rich_table(
    results: dict[str, dict[str, dict]],
    metrics: Sequence[str] = ("pearson", "spearman"),
    *,
    title: str | None = None,
):
    """The :func:`comparison_table` contents as a :class:`rich.table.Table` for the console."""
    from rich.table import Table

    header, body = _table_data(results, metrics)
    table = Table(title=title)
    table.add_column(header[0], style="bold")
    for h in header[1:]:
        table.add_column(h, justify="right")
    for row in body:
        table.add_row(*row)
    return table
