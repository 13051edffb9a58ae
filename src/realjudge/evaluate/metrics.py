"""Agreement metrics of prediction rows: status counts, confusion, paired differences.

The correlations, errors and their bootstrap CIs themselves live one layer down, in
:mod:`realjudge.scoring.agreement` (training's periodic evaluation uses them too); they are
imported here so that ``realjudge.evaluate.metrics`` keeps offering them. Pure numpy/scipy,
no torch. Every value returned is JSON-safe: undefined quantities (a correlation of a constant
vector, fewer than three rows, ...) are ``None``, never NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from realjudge.scoring.agreement import (
    METRIC_NAMES,
    OK_STATUSES,
    check_accuracy,
    complete_rows,
    correlation_metrics,
    is_constant,
    percentile_ci,
    round_half_up,
    rowwise_pearson,
)

__all__ = [
    "FAILED_STATUS",
    "check_accuracy",
    "METRIC_NAMES",
    "OK_STATUSES",
    "confusion_matrix",
    "correlation_metrics",
    "round_half_up",
    "summarize_predictions",
]

#: The status_counts bucket for rows with no status at all.
FAILED_STATUS = "unknown"


# --------------------------------------------------------------------------------------------
# public API


def confusion_matrix(
    pred_int: Iterable[int], gold_int: Iterable[int], scores: Sequence[int]
) -> list[list[int]]:
    """Counts ``m[i][j]`` of rows with gold ``scores[i]`` and prediction ``scores[j]``.

    Rows are gold, columns are predictions (the sklearn convention). Pairs where either value
    is not in ``scores`` are ignored.
    """
    pos = {int(s): i for i, s in enumerate(scores)}
    m = [[0] * len(pos) for _ in pos]
    for p, g in zip(pred_int, gold_int, strict=True):
        if p is None or g is None:
            continue
        i, j = pos.get(int(g)), pos.get(int(p))
        if i is not None and j is not None:
            m[i][j] += 1
    return m


def _status_key(status: Any) -> str:
    if status is None:
        return FAILED_STATUS
    s = str(status)
    return s.split(":", 1)[0].strip() or FAILED_STATUS


def _field_metrics(
    rows: list[dict], field: str, scale: tuple[int, int], n_boot: int, seed: int
) -> dict[str, Any]:
    pairs = [
        (r[field], r["gold"])
        for r in rows
        if r.get(field) is not None and r.get("gold") is not None
    ]
    pred = [p for p, _ in pairs]
    gold = [g for _, g in pairs]
    return correlation_metrics(pred, gold, scale=scale, n_boot=n_boot, seed=seed)


def _share(rows: list[dict[str, Any]], status: str) -> float | None:
    """The share of ``rows`` with ``status`` (``None`` without rows): ``forced_cue``, the cue
    appended to a feedback that has none; ``retokenized_cue``, a cue the judge wrote, but not
    as the canonical tokens, cut and written anew."""
    return sum(r.get("status") == status for r in rows) / len(rows) if rows else None


def summarize_predictions(
    rows: list[dict],
    *,
    scale: tuple[int, int] = (1, 5),
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Summary of inference prediction rows: status counts plus the metrics of ``prediction``.

    Scored rows have a status in :data:`OK_STATUSES`, a ``prediction`` and a ``gold``.
    Keys: ``n_total``; ``n`` (scored); ``n_failed`` (status not ok-ish: ``bad_row``,
    ``error: ...``, skips); ``n_unlabeled`` (ok-ish rows without a gold); ``status_counts``
    (statuses cut at the first ``:``, so all ``error: ...`` share ``error``);
    ``mean_leaked_mass`` (over rows with a ``leaked_mass``); ``forced_cue_rate`` (share of
    ok-ish rows with status ``forced_cue``); ``scale``; ``confusion`` (``scores`` and
    ``matrix``, gold rows x rounded-prediction columns); the :func:`correlation_metrics` keys
    for ``prediction``; and, when rows carry both ``expected_score`` and ``decoded_score``,
    ``by_field`` with the metrics of each.
    """
    lo, hi = int(scale[0]), int(scale[1])
    status_counts = Counter(_status_key(r.get("status")) for r in rows)
    ok_rows = [r for r in rows if r.get("status") in OK_STATUSES]
    scored = [
        r
        for r in ok_rows
        if r.get("prediction") is not None
        and r.get("gold") is not None
        and math.isfinite(float(r["prediction"]))
        and math.isfinite(float(r["gold"]))
    ]
    leaked = [float(r["leaked_mass"]) for r in rows if r.get("leaked_mass") is not None]
    # 1 - sum p in float32 can come out as -1e-7: a mass is clamped into [0, 1]
    leaked = [min(max(v, 0.0), 1.0) for v in leaked if math.isfinite(v)]

    out: dict[str, Any] = {
        "n_total": len(rows),
        "n_failed": len(rows) - len(ok_rows),
        "n_unlabeled": sum(1 for r in ok_rows if r.get("gold") is None),
        "status_counts": dict(sorted(status_counts.items())),
        "mean_leaked_mass": float(np.mean(leaked)) if leaked else None,
        "forced_cue_rate": _share(ok_rows, "forced_cue"),
        "retokenized_cue_rate": _share(ok_rows, "retokenized_cue"),
        # decode mode: samples whose written score could not be read (argmax of p instead)
        "n_decode_fallback": sum(int(r.get("n_decode_fallback") or 0) for r in ok_rows),
        "scale": [lo, hi],
    }
    out.update(_field_metrics(ok_rows, "prediction", (lo, hi), n_boot, seed))
    scores = list(range(lo, hi + 1))
    pred_int = [int(round_half_up(min(max(float(r["prediction"]), lo), hi))) for r in scored]
    gold_int = [int(round_half_up(min(max(float(r["gold"]), lo), hi))) for r in scored]
    out["confusion"] = {"scores": scores, "matrix": confusion_matrix(pred_int, gold_int, scores)}

    if any(
        r.get("expected_score") is not None and r.get("decoded_score") is not None for r in ok_rows
    ):
        out["by_field"] = {
            f: _field_metrics(ok_rows, f, (lo, hi), n_boot, seed)
            for f in ("expected_score", "decoded_score")
        }
    return out


def _rowwise_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return rowwise_pearson(np.atleast_2d(x), np.atleast_2d(y))


def _rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _rowwise_corr(stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1))


def paired_difference(
    pred_a: Sequence[float | None],
    pred_b: Sequence[float | None],
    gold: Sequence[float | None],
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """How much judge ``b`` changes Pearson and Spearman over judge ``a`` on the same items:
    ``{"pearson": {"delta", "ci", "p_not_better"}, "spearman": {...}, "n"}``.

    Paired bootstrap: each resample draws items (not predictions), so both judges are scored on
    the same resampled items and the item-to-item variance cancels. ``delta`` is ``r_b - r_a`` on
    all items, ``ci`` the percentile interval of the resampled deltas, ``p_not_better`` the
    fraction of resamples where ``b`` is not above ``a`` (a one-sided bootstrap p-value). Items
    missing either prediction or the gold are dropped; undefined correlations give ``None``.
    """
    a, b, g = complete_rows(pred_a, pred_b, gold)
    n = int(g.size)
    out: dict[str, Any] = {"n": n}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n)) if n >= 3 and n_boot > 0 else None
    for name, ranks in (("pearson", False), ("spearman", True)):
        res: dict[str, Any] = {"delta": None, "ci": None, "p_not_better": None}
        out[name] = res
        if n < 3 or is_constant(a) or is_constant(b) or is_constant(g):
            continue
        corr = _rowwise_spearman if ranks else _rowwise_corr
        res["delta"] = float(corr(b, g)[0] - corr(a, g)[0])
        if idx is not None:
            deltas = corr(b[idx], g[idx]) - corr(a[idx], g[idx])
            finite = deltas[np.isfinite(deltas)]
            res["ci"] = percentile_ci(deltas, ci)
            res["p_not_better"] = float(np.mean(finite <= 0)) if finite.size else None
    return out
