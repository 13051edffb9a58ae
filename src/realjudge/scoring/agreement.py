"""Agreement between predictions and gold scores: correlations, errors, bootstrap CIs.

Pure numpy/scipy, no torch, shared by training's periodic evaluation
(:mod:`realjudge.train.evaluation`) and the evaluation reports (:mod:`realjudge.evaluate`).
Every value returned is JSON-safe: undefined quantities (a correlation of a constant vector,
fewer than three rows, ...) are ``None``, never NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "METRIC_NAMES",
    "complete_rows",
    "correlation_metrics",
    "is_constant",
    "percentile_ci",
    "round_half_up",
    "rowwise_pearson",
]

#: Metrics that get a bootstrap ``<name>_ci``.
METRIC_NAMES: tuple[str, ...] = ("pearson", "spearman", "kendall", "rmse", "mae", "accuracy")
_CORRELATIONS: tuple[str, ...] = ("pearson", "spearman", "kendall")

# Kendall's bootstrap uses an n x n pair-sign matrix (one BLAS product per block of resamples)
# up to this many rows; above it, looping scipy's O(n log n) kendalltau is faster.
_KENDALL_MATRIX_MAX_N = 1536
# Bootstrap resamples processed per block (bounds the (block, n) temporaries).
_BOOT_BLOCK = 256
# Tolerance for round-half-up so that 3.4999999999999996 (a float mean of 3 and 4) -> 4.
_ROUND_EPS = 1e-9


# --------------------------------------------------------------------------------------------
# small helpers


def round_half_up(x: float | np.ndarray) -> np.ndarray:
    """Round half up (4.5 -> 5, 4.33 -> 4, 2.5 -> 3), unlike numpy's banker's rounding."""
    return np.floor(np.asarray(x, dtype=float) + 0.5 + _ROUND_EPS).astype(int)


def _finite_or_none(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def is_constant(a: np.ndarray) -> bool:
    return a.size == 0 or bool(np.ptp(a) == 0.0)


def rowwise_pearson(xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of two (B, n) arrays; NaN where a row is constant (decided
    on the values, not on the centred sums: the float mean of ``[3.7, 3.7, 3.7]`` is not 3.7,
    which would leave a tiny spread and r ~ 0 for a resample that has no correlation)."""
    xc = xb - xb.mean(axis=1, keepdims=True)
    yc = yb - yb.mean(axis=1, keepdims=True)
    sxy = np.einsum("ij,ij->i", xc, yc)
    sxx = np.einsum("ij,ij->i", xc, xc)
    syy = np.einsum("ij,ij->i", yc, yc)
    ok = (np.ptp(xb, axis=1) > 0) & (np.ptp(yb, axis=1) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt(sxx * syy)
        ok &= den > 0
        r = np.where(ok, sxy / np.where(ok, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def _tie_pairs(counts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Tied pairs per resample: ``sum_g m_g (m_g - 1) / 2`` with ``m_g`` the resampled rows of
    tie group ``g`` (``groups[k]`` is row k's group, ``counts[b, k]`` its multiplicity)."""
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0])
    m = np.add.reduceat(counts[:, order], starts, axis=1)
    return 0.5 * np.einsum("ij,ij->i", m, m - 1.0)


def _boot_kendall(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Kendall tau-b of ``(x[idx[b]], y[idx[b]])`` for every bootstrap row ``b`` (NaN if undefined).

    A resample is fully described by the multiplicity ``c_k`` of each original row, so with
    ``A[k, l] = sign(x_k - x_l) * sign(y_k - y_l)`` the concordant-minus-discordant count is
    ``c^T A c / 2`` and the tied pairs in x are ``sum_g m_g (m_g - 1) / 2`` over groups of
    equal x (``m_g`` = resampled rows in the group). That makes tau-b one matrix product.
    """
    n = x.size
    n_boot = idx.shape[0]
    if n > _KENDALL_MATRIX_MAX_N:
        out = np.empty(n_boot)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for b in range(n_boot):
                out[b] = stats.kendalltau(x[idx[b]], y[idx[b]]).statistic
        return out

    a = (np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])).astype(np.float32)
    gx = np.unique(x, return_inverse=True)[1].ravel()
    gy = np.unique(y, return_inverse=True)[1].ravel()
    n_pairs = n * (n - 1) / 2.0
    out = np.empty(n_boot)
    offsets = np.arange(_BOOT_BLOCK)[:, None] * n
    for start in range(0, n_boot, _BOOT_BLOCK):
        blk = idx[start : start + _BOOT_BLOCK]
        nb = blk.shape[0]
        counts = np.bincount((blk + offsets[:nb]).ravel(), minlength=nb * n).reshape(nb, n)
        counts = counts.astype(np.float32)
        # entries of counts @ a are integers bounded by n: exact in float32
        s = 0.5 * np.einsum("ij,ij->i", (counts @ a).astype(np.float64), counts)
        c64 = counts.astype(np.float64)
        tx = _tie_pairs(c64, gx)
        ty = _tie_pairs(c64, gy)
        with np.errstate(invalid="ignore", divide="ignore"):
            den = np.sqrt((n_pairs - tx) * (n_pairs - ty))
            out[start : start + nb] = np.where(den > 0, s / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(out, -1.0, 1.0)


def percentile_ci(values: np.ndarray, ci: float) -> list[float] | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def _point_correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "pearson": _finite_or_none(stats.pearsonr(x, y).statistic),
            "spearman": _finite_or_none(stats.spearmanr(x, y).statistic),
            "kendall": _finite_or_none(stats.kendalltau(x, y, variant="b").statistic),
        }


def complete_rows(*columns: Sequence[float | None]) -> list[np.ndarray]:
    """The columns as float arrays, keeping only the rows where every column is finite
    (``None`` counts as missing)."""
    if len({len(c) for c in columns}) > 1:
        raise ValueError(f"columns differ in length: {[len(c) for c in columns]}")
    arrays = [
        np.array([np.nan if v is None else float(v) for v in c], dtype=float) for c in columns
    ]
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    return [a[keep] for a in arrays]


# --------------------------------------------------------------------------------------------
# public API


def correlation_metrics(
    pred: Sequence[float],
    gold: Sequence[float],
    *,
    scale: tuple[int, int] = (1, 5),
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Pearson/Spearman/Kendall tau-b, RMSE, MAE and rounded accuracy, each with a bootstrap CI.

    Pairs where either side is None/NaN are dropped (``n`` counts the rest). ``accuracy``
    compares ``round_half_up(clamp(pred, scale))`` with ``round_half_up(gold)`` (golds may be
    means such as 4.33). ``<metric>_ci`` is a ``[lo, hi]`` percentile bootstrap interval over
    rows (``n_boot`` resamples, deterministic for a given ``seed``); resamples where a
    correlation is undefined are left out of its interval. Correlations are ``None`` when
    ``n < 3`` or either side is constant; every undefined value is ``None``.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    lo, hi = int(scale[0]), int(scale[1])
    x, y = complete_rows(pred, gold)
    n = int(x.size)
    out: dict[str, Any] = {"n": n}
    for name in METRIC_NAMES:
        out[name] = None
        out[f"{name}_ci"] = None
    if n == 0:
        return out

    err = x - y
    hit = (round_half_up(np.clip(x, lo, hi)) == round_half_up(y)).astype(float)
    out["rmse"] = float(np.sqrt(np.mean(err**2)))
    out["mae"] = float(np.mean(np.abs(err)))
    out["accuracy"] = float(hit.mean())
    corr_defined = n >= 3 and not is_constant(x) and not is_constant(y)
    if corr_defined:
        out.update(_point_correlations(x, y))

    if n_boot <= 0 or n < 2:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots: dict[str, np.ndarray] = {
        "rmse": np.sqrt(np.mean(err[idx] ** 2, axis=1)),
        "mae": np.mean(np.abs(err)[idx], axis=1),
        "accuracy": np.mean(hit[idx], axis=1),
    }
    if corr_defined:
        xb, yb = x[idx], y[idx]
        boots["pearson"] = rowwise_pearson(xb, yb)
        boots["spearman"] = rowwise_pearson(stats.rankdata(xb, axis=1), stats.rankdata(yb, axis=1))
        boots["kendall"] = _boot_kendall(x, y, idx)
    for name, values in boots.items():
        if out[name] is not None:
            out[f"{name}_ci"] = percentile_ci(values, ci)
    return out


#: Row statuses whose prediction counts as a scored output.
OK_STATUSES: frozenset[str] = frozenset({"ok", "forced_cue", "retokenized_cue"})


def _feedback_list(fb: Any) -> list[str]:
    if fb is None:
        return []
    if isinstance(fb, list | tuple):
        return [str(f or "") for f in fb]
    return [str(fb)]


def check_accuracy(
    rows: Sequence[Mapping[str, Any]],
    truth_by_id: Mapping[str, Mapping[str, bool]],
    *,
    reader: Callable[[str, Sequence[str]], Mapping[str, bool]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any] | None:
    """How well the judge checked each item in its own feedbacks, against the truth.

    ``truth_by_id[row id]`` maps each item of a record to whether the response satisfies it
    (:func:`realjudge.data.embedded.check_items`); ``reader(feedback, items)`` returns the
    judge's verdicts it can read (default :func:`realjudge.data.embedded.read_checks`). Rows
    with an ok-ish status, a truth and a feedback count (every sample of a multi-sample row is
    one feedback). Keys: ``n_feedbacks``; ``n_parsable`` (feedbacks with at least one readable
    check); ``n_complete`` (every item checked); ``n_items`` (items to check) and ``n_read``
    (checks read); ``accuracy`` (checks right / items; an item without a readable check counts
    as wrong) with ``accuracy_ci``, a percentile bootstrap over rows; ``accuracy_of_read``
    (checks right / checks read); ``all_correct_rate`` (feedbacks with every item checked
    right). ``None`` when no row qualifies.
    """
    if reader is None:
        from realjudge.data.embedded import read_checks

        reader = read_checks
    correct: list[int] = []
    total: list[int] = []
    n_fb = n_parsable = n_complete = n_read = n_all = 0
    for r in rows:
        truth = truth_by_id.get(str(r.get("id")))
        feedbacks = _feedback_list(r.get("feedback"))
        if not truth or not feedbacks or r.get("status") not in OK_STATUSES:
            continue
        items = list(truth)
        c = t = 0
        for fb in feedbacks:
            read = reader(fb, items)
            right = sum(1 for k, v in read.items() if k in truth and bool(v) == bool(truth[k]))
            n_fb += 1
            n_parsable += bool(read)
            n_complete += len(read) == len(items)
            n_read += len(read)
            n_all += right == len(items)
            c += right
            t += len(items)
        correct.append(c)
        total.append(t)
    if not total:
        return None
    c_arr, t_arr = np.array(correct, dtype=float), np.array(total, dtype=float)
    out: dict[str, Any] = {
        "n_feedbacks": n_fb,
        "n_parsable": n_parsable,
        "n_complete": n_complete,
        "n_items": int(t_arr.sum()),
        "n_read": n_read,
        "accuracy": float(c_arr.sum() / t_arr.sum()),
        "accuracy_ci": None,
        "accuracy_of_read": float(c_arr.sum() / n_read) if n_read else None,
        "all_correct_rate": n_all / n_fb,
    }
    if n_boot > 0 and len(total) >= 2:
        idx = np.random.default_rng(seed).integers(0, len(total), size=(n_boot, len(total)))
        out["accuracy_ci"] = percentile_ci(c_arr[idx].sum(axis=1) / t_arr[idx].sum(axis=1), ci)
    return out
