"""Two evaluations of the same items, compared: is judge B better than judge A?

Reads two ``realjudge eval`` output directories, pairs their predictions by record id and
bootstraps the change of Pearson and Spearman on the paired items
(:func:`~realjudge.evaluate.metrics.paired_difference`): the item-to-item variance that
widens each judge's own interval cancels in the difference. It also says how far B's
scores move from A's item by item (:func:`item_agreement`: the mean and largest absolute
difference of the predictions, and in how many items the two wrote the same feedback),
which is what two readings of one judge -- bf16 against fp32, say -- need. Evaluations of
different data are refused: a shared id whose gold differs means the two did not grade the
same records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["EvalRun", "compare_evals", "format_comparison", "item_agreement", "paired_change"]


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
        self.feedback: dict[str, str] = {}
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
            if isinstance(row.get("feedback"), str):
                self.feedback[str(row["id"])] = row["feedback"]
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


def item_agreement(a: EvalRun, b: EvalRun, ids: list[str]) -> dict[str, Any]:
    """How far B's predictions are from A's on the ``ids`` both predicted: ``n``,
    ``mean_abs_diff`` and ``max_abs_diff`` (``None`` without such an item), and
    ``same_feedback`` of ``with_feedback`` (the ids both wrote a feedback for: CoT readings;
    0 of 0 for score-only ones)."""
    diffs = [
        abs(float(b.rows[i][0]) - float(a.rows[i][0]))  # type: ignore[arg-type]
        for i in ids
        if a.rows[i][0] is not None and b.rows[i][0] is not None
    ]
    both = [i for i in ids if i in a.feedback and i in b.feedback]
    return {
        "n": len(diffs),
        "mean_abs_diff": sum(diffs) / len(diffs) if diffs else None,
        "max_abs_diff": max(diffs) if diffs else None,
        "with_feedback": len(both),
        "same_feedback": sum(a.feedback[i] == b.feedback[i] for i in both),
    }


def _same_data(a: str, b: str) -> bool:
    """Whether two evaluations' ``data`` name the same data: the same spec, the same file by
    another path (relative / absolute, a link), or two files with the same bytes (the same
    split written into two ``reproduce`` dirs). Hub ids and ``embedded`` compare as text."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if not (pa.is_file() and pb.is_file()):
        return False
    if pa.samefile(pb):
        return True
    if pa.stat().st_size != pb.stat().st_size:
        return False
    return _digest(pa) == _digest(pb)


def _digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


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
    if a.data and b.data and not _same_data(a.data, b.data):
        raise ValueError(
            f"{a.path} graded {a.data} and {b.path} graded {b.data}: compare evaluations of "
            "the same data"
        )
    ids, gold = _pair(a, b)
    out = _difference(a, b, ids, gold, seed, n_boot)
    out["shared_ids"] = len(ids)
    out["items"] = item_agreement(a, b, ids)
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
    items = c["items"]
    if items["n"]:
        same = (
            f"; the same feedback in {items['same_feedback']} of {items['with_feedback']}"
            if items["with_feedback"]
            else ""
        )
        lines.append(
            f"predictions |B - A|: mean {items['mean_abs_diff']:.4f}, largest "
            f"{items['max_abs_diff']:.4f} over {items['n']} items{same}"
        )
    lines.append(f"Pearson  B - A: {_fmt(c['pearson'])}")
    lines.append(f"Spearman B - A: {_fmt(c['spearman'])}")
    lines.append(f"paired bootstrap, {c['n_boot']} resamples of items, 95% percentile intervals")
    return "\n".join(lines)
