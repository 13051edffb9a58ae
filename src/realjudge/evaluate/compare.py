"""Two evaluations of the same items, compared: is judge B better than judge A?

Reads two ``realjudge eval`` output directories, pairs their predictions by record id and
bootstraps the change of Pearson and Spearman on the paired items
(:func:`~realjudge.evaluate.metrics.paired_difference`): the item-to-item variance that
widens each judge's own interval cancels in the difference. Evaluations of different data
are refused: a shared id whose gold differs means the two did not grade the same records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["EvalRun", "compare_evals", "format_comparison", "paired_change"]


class EvalRun:
    """One ``realjudge eval`` output: its predictions by id and how it read them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        preds = self.path / "predictions.jsonl"
        if not preds.is_file():
            raise FileNotFoundError(
                f"{self.path}: no predictions.jsonl (expected a 'realjudge eval' output dir)"
            )
        self.rows: dict[str, tuple[float | None, float | None]] = {}
        for n, line in enumerate(preds.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{preds}: line {n} is not JSON ({e.msg})") from None
            if row.get("id") is None:  # a bad input row, listed without an id
                continue
            self.rows[str(row["id"])] = (row.get("prediction"), row.get("gold"))
        metrics = self.path / "metrics.json"
        meta = json.loads(metrics.read_text()) if metrics.is_file() else {}
        self.config: dict[str, Any] = meta.get("config") or {}
        self.metrics: dict[str, Any] = meta.get("metrics") or {}

    @property
    def reading(self) -> str | None:
        return self.config.get("reading")

    @property
    def data(self) -> str | None:
        return self.config.get("data_source")


def _pair(a: EvalRun, b: EvalRun) -> tuple[list[str], list[float | None]]:
    ids = [i for i in a.rows if i in b.rows]
    for i in ids:
        ga, gb = a.rows[i][1], b.rows[i][1]
        if ga is not None and gb is not None and float(ga) != float(gb):
            raise ValueError(
                f"record {i!r} has gold {ga} in {a.path} and {gb} in {b.path}: the two "
                "evaluations did not grade the same data"
            )
    gold = [a.rows[i][1] if a.rows[i][1] is not None else b.rows[i][1] for i in ids]
    return ids, gold


def _difference(
    a: EvalRun, b: EvalRun, ids: list[str], gold: list[float | None], seed: int, n_boot: int
) -> dict[str, Any]:
    from realjudge.evaluate.metrics import paired_difference

    return paired_difference(
        [a.rows[i][0] for i in ids],
        [b.rows[i][0] for i in ids],
        gold,
        seed=seed,
        n_boot=n_boot,
    )


def paired_change(
    a_dir: str | Path, b_dir: str | Path, *, seed: int = 0, n_boot: int = 2000
) -> dict[str, Any]:
    """:func:`~realjudge.evaluate.metrics.paired_difference` of B over A on their shared ids."""
    a, b = EvalRun(a_dir), EvalRun(b_dir)
    return _difference(a, b, *_pair(a, b), seed, n_boot)


def compare_evals(
    a_dir: str | Path, b_dir: str | Path, *, seed: int = 0, n_boot: int = 2000
) -> dict[str, Any]:
    """The paired change of B over A, with what each evaluation was and the ids only one has.

    ``pearson`` / ``spearman`` hold ``delta`` (B minus A), ``ci`` and ``p_not_better``;
    ``n`` is the number of paired items with both predictions and a gold."""
    a, b = EvalRun(a_dir), EvalRun(b_dir)
    if a.data and b.data and a.data != b.data:
        raise ValueError(
            f"{a.path} graded {a.data} and {b.path} graded {b.data}: compare evaluations of "
            "the same data"
        )
    ids, gold = _pair(a, b)
    out = _difference(a, b, ids, gold, seed, n_boot)
    out["shared_ids"] = len(ids)
    for name, run in (("a", a), ("b", b)):
        out[name] = {
            "path": str(run.path),
            "model": run.config.get("model"),
            "data": run.data,
            "reading": run.reading,
            "n": len(run.rows),
            "only_here": len(run.rows) - len(ids),
            "pearson": run.metrics.get("pearson"),
            "spearman": run.metrics.get("spearman"),
        }
    out["seed"], out["n_boot"] = seed, n_boot
    return out


def _fmt(d: dict[str, Any]) -> str:
    if d.get("delta") is None:
        return "n/a (fewer than 3 paired items, or a constant column)"
    if d.get("ci") is None:
        return f"{d['delta']:+.3f} (no bootstrap)"
    lo, hi = d["ci"]
    return f"{d['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]  (B not better in {d['p_not_better']:.1%})"


def format_comparison(c: dict[str, Any]) -> str:
    lines = []
    for name in ("a", "b"):
        r = c[name]
        own = (
            f", Pearson {r['pearson']:.3f} on its {r['n']} items"
            if r["pearson"] is not None
            else ""
        )
        lines.append(f"{name.upper()}: {r['path']} ({r['reading'] or 'reading not recorded'}{own})")
    a, b = c["a"], c["b"]
    lines.append(
        f"paired items: {c['n']} of {c['shared_ids']} shared ids "
        f"({a['only_here']} only in A, {b['only_here']} only in B)"
    )
    lines.append(f"Pearson  B - A: {_fmt(c['pearson'])}")
    lines.append(f"Spearman B - A: {_fmt(c['spearman'])}")
    lines.append(f"paired bootstrap, {c['n_boot']} resamples of items, 95% percentile intervals")
    return "\n".join(lines)
