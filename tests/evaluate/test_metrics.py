"""Agreement metrics against hand-computed values and independent numpy formulas."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from realjudge.evaluate.metrics import (
    METRIC_NAMES,
    check_accuracy,
    confusion_matrix,
    correlation_metrics,
    round_half_up,
    summarize_predictions,
)
from realjudge.scoring.agreement import _boot_kendall

PRED = [1.2, 2.9, 2.5, 4.4, 3.1, 4.9, 1.8, 3.6]
GOLD = [1.0, 3.0, 2.0, 5.0, 3.0, 4.0, 2.0, 4.33]


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), written out by hand."""
    out = np.empty(a.size)
    for i, v in enumerate(a):
        out[i] = np.sum(a < v) + (np.sum(a == v) + 1) / 2.0
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.sum(xc * yc) / math.sqrt(np.sum(xc**2) * np.sum(yc**2)))


def _kendall_b(x: np.ndarray, y: np.ndarray) -> float:
    s = tx = ty = 0
    n = x.size
    for i, j in itertools.combinations(range(n), 2):
        s += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        tx += x[i] == x[j]
        ty += y[i] == y[j]
    n0 = n * (n - 1) / 2
    return float(s / math.sqrt((n0 - tx) * (n0 - ty)))


def _assert_no_nan(obj) -> None:
    json.loads(json.dumps(obj), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_known_example_matches_numpy_formulas():
    m = correlation_metrics(PRED, GOLD, n_boot=200)
    x, y = np.array(PRED), np.array(GOLD)
    assert m["n"] == 8
    assert m["pearson"] == pytest.approx(_pearson(x, y), abs=1e-12)
    assert m["spearman"] == pytest.approx(_pearson(_ranks(x), _ranks(y)), abs=1e-12)
    assert m["kendall"] == pytest.approx(_kendall_b(x, y), abs=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean((x - y) ** 2)), abs=1e-12)
    assert m["mae"] == pytest.approx(np.mean(np.abs(x - y)), abs=1e-12)
    # rounded pred: 1,3,3,4,3,5,2,4 ; rounded gold: 1,3,2,5,3,4,2,4 -> 5 of 8 agree
    assert m["accuracy"] == pytest.approx(5 / 8)
    _assert_no_nan(m)


def test_tiny_hand_example():
    # pred 1,2,3 vs gold 1,3,2: r = 0.5, rho = 0.5, tau = 1/3
    m = correlation_metrics([1, 2, 3], [1, 3, 2], n_boot=0)
    assert m["pearson"] == pytest.approx(0.5)
    assert m["spearman"] == pytest.approx(0.5)
    assert m["kendall"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert all(m[f"{k}_ci"] is None for k in METRIC_NAMES)


def test_perfect_correlation():
    gold = [1, 2, 3, 4, 5, 1, 3, 5]
    m = correlation_metrics(gold, gold, n_boot=100)
    for k in ("pearson", "spearman", "kendall", "accuracy"):
        assert m[k] == pytest.approx(1.0)
    assert m["rmse"] == 0.0 and m["mae"] == 0.0
    assert m["pearson_ci"] == pytest.approx([1.0, 1.0])
    m = correlation_metrics([-g for g in gold], gold, n_boot=0)
    assert m["pearson"] == pytest.approx(-1.0)
    assert m["kendall"] == pytest.approx(-1.0)


def test_accuracy_rounds_half_up_and_clamps():
    assert round_half_up(4.5) == 5
    assert round_half_up(4.33) == 4
    assert round_half_up(2.5) == 3  # numpy's round would give 2
    assert round_half_up((3 + 4) / 2) == 4
    assert round_half_up(sum([1.0, 4.0, 3.2, 3.2, 5.7, 3.9]) / 6) == 4  # 3.4999999999999996
    # gold 4.5 -> 5, gold 4.33 -> 4; prediction 7.2 clamped to 5, prediction 0.2 clamped to 1
    m = correlation_metrics([5.0, 4.4, 7.2, 0.2], [4.5, 4.33, 5.0, 1.0], n_boot=0)
    assert m["accuracy"] == 1.0
    m = correlation_metrics([4.0, 4.6], [4.5, 4.33], n_boot=0)
    assert m["accuracy"] == 0.0


def test_constant_prediction_gives_none_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = correlation_metrics([3.0] * 6, [1, 2, 3, 4, 5, 3], n_boot=50)
        const_gold = correlation_metrics([1, 2, 3, 4], [2.0] * 4, n_boot=50)
    for k in ("pearson", "spearman", "kendall"):
        assert m[k] is None and m[f"{k}_ci"] is None
        assert const_gold[k] is None
    assert m["mae"] == pytest.approx(np.mean(np.abs(3 - np.array([1, 2, 3, 4, 5, 3]))))
    assert m["mae_ci"] is not None
    _assert_no_nan(m)


def test_small_and_empty_inputs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two = correlation_metrics([1, 2], [1, 3], n_boot=20)
        empty = correlation_metrics([], [], n_boot=20)
        one = correlation_metrics([2.0], [2.0], n_boot=20)
    assert two["n"] == 2 and two["pearson"] is None and two["rmse"] == pytest.approx(math.sqrt(0.5))
    assert empty == {"n": 0, **{k: None for n in METRIC_NAMES for k in (n, f"{n}_ci")}}
    assert one["accuracy"] == 1.0 and one["accuracy_ci"] is None
    _assert_no_nan([two, empty, one])


def test_none_and_nan_pairs_are_dropped():
    m = correlation_metrics([1, None, 3, float("nan"), 5], [1, 2, 3, 4, 5], n_boot=0)
    assert m["n"] == 3 and m["pearson"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        correlation_metrics([1, 2], [1, 2, 3])


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(3)
    gold = rng.integers(1, 6, 120).astype(float)
    pred = np.clip(gold + rng.normal(0, 0.9, 120), 1, 5)
    a = correlation_metrics(pred, gold, n_boot=400, seed=7)
    b = correlation_metrics(pred, gold, n_boot=400, seed=7)
    c = correlation_metrics(pred, gold, n_boot=400, seed=8)
    assert a == b
    assert a["pearson_ci"] != c["pearson_ci"]
    for k in METRIC_NAMES:
        lo, hi = a[f"{k}_ci"]
        assert lo <= a[k] <= hi, k
        assert hi - lo > 0
    wide = correlation_metrics(pred, gold, n_boot=400, seed=7, ci=0.99)
    assert (
        wide["pearson_ci"][0] <= a["pearson_ci"][0] and wide["pearson_ci"][1] >= a["pearson_ci"][1]
    )


def test_vectorised_bootstrap_matches_scipy_per_resample():
    rng = np.random.default_rng(0)
    gold = rng.integers(1, 6, 40).astype(float)
    pred = gold + rng.normal(0, 1, 40)
    pred[:15] = np.round(pred[:15])  # ties in the predictions too
    idx = rng.integers(0, 40, size=(30, 40))
    got = _boot_kendall(pred, gold, idx)
    ref = [stats.kendalltau(pred[i], gold[i]).statistic for i in idx]
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_confusion_matrix_rows_gold_cols_pred():
    m = confusion_matrix([1, 2, 2, 3, 9], [1, 3, 2, 3, 1], [1, 2, 3])
    assert m == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def _row(i, gold, pred, status="ok", **kw):
    base = {
        "id": f"r{i}",
        "gold": gold,
        "prediction": pred,
        "expected_score": None,
        "decoded_score": None,
        "distribution": None,
        "leaked_mass": None,
        "feedback": None,
        "status": status,
        "samples": 1,
    }
    base.update(kw)
    return base


def test_summarize_predictions_mixed_statuses():
    rows = [
        _row(0, 1.0, 1.4, leaked_mass=0.1),
        _row(1, 2.0, 2.2, "forced_cue", leaked_mass=0.3),
        _row(2, 3.0, 2.6, "retokenized_cue"),
        _row(3, 4.0, 4.1, n_decode_fallback=2),
        _row(4, 5.0, None, "error: CUDA out of memory"),
        _row(5, 5.0, None, "error: timeout"),
        _row(6, None, None, "bad_row"),
        _row(7, None, 3.0),  # unlabeled but fine
        _row(8, 4.33, 4.6, leaked_mass=0.2),
        _row(9, 2.0, 3.0, "skipped"),  # a skip with a prediction is still not scored
    ]
    s = summarize_predictions(rows, n_boot=50)
    assert s["n_total"] == 10
    assert s["n"] == 5
    assert s["n_failed"] == 4
    assert s["n_unlabeled"] == 1
    assert s["status_counts"] == {
        "bad_row": 1,
        "error": 2,
        "forced_cue": 1,
        "ok": 4,
        "retokenized_cue": 1,
        "skipped": 1,
    }
    assert s["mean_leaked_mass"] == pytest.approx(0.2)
    assert s["forced_cue_rate"] == pytest.approx(1 / 6)
    assert s["retokenized_cue_rate"] == pytest.approx(1 / 6)
    assert s["n_decode_fallback"] == 2
    ref = correlation_metrics([1.4, 2.2, 2.6, 4.1, 4.6], [1, 2, 3, 4, 4.33], n_boot=50)
    for k, v in ref.items():
        assert s[k] == v
    assert s["confusion"]["scores"] == [1, 2, 3, 4, 5]
    assert sum(map(sum, s["confusion"]["matrix"])) == 5
    assert "by_field" not in s
    _assert_no_nan(s)


def test_summarize_by_field_and_empty():
    rows = [
        _row(i, float(g), float(e), expected_score=float(e), decoded_score=int(d))
        for i, (g, e, d) in enumerate([(1, 1.3, 1), (2, 2.4, 3), (3, 2.9, 3), (5, 4.2, 4)])
    ]
    s = summarize_predictions(rows, n_boot=20)
    assert set(s["by_field"]) == {"expected_score", "decoded_score"}
    assert s["by_field"]["expected_score"]["pearson"] == pytest.approx(s["pearson"])
    assert s["by_field"]["decoded_score"]["accuracy"] == pytest.approx(2 / 4)

    empty = summarize_predictions([], n_boot=20)
    assert empty["n_total"] == 0 and empty["n"] == 0 and empty["pearson"] is None
    assert empty["forced_cue_rate"] is None and empty["mean_leaked_mass"] is None
    _assert_no_nan([s, empty])


def test_paired_difference_matches_scipy_and_is_paired():
    from realjudge.evaluate.metrics import paired_difference

    rng = np.random.default_rng(0)
    gold = rng.integers(1, 6, size=60).astype(float)
    noisy = gold + rng.normal(0, 3.0, size=60)
    sharp = gold + rng.normal(0, 0.5, size=60)
    d = paired_difference(noisy, sharp, gold, n_boot=500)
    exact = stats.pearsonr(sharp, gold).statistic - stats.pearsonr(noisy, gold).statistic
    assert d["pearson"]["delta"] == pytest.approx(exact)
    exact_s = stats.spearmanr(sharp, gold).statistic - stats.spearmanr(noisy, gold).statistic
    assert d["spearman"]["delta"] == pytest.approx(exact_s)
    lo, hi = d["pearson"]["ci"]
    assert 0 < lo < exact < hi and d["pearson"]["p_not_better"] == 0.0
    # the same judge against itself: no change, an interval of zero width
    same = paired_difference(sharp, sharp, gold, n_boot=200)
    assert same["pearson"]["delta"] == 0.0 and same["pearson"]["ci"] == [0.0, 0.0]


def test_paired_difference_drops_missing_and_handles_constants():
    from realjudge.evaluate.metrics import paired_difference

    d = paired_difference([1, 2, None, 4], [2, 2, 3, 2], [1, 2, 3, 4], n_boot=50)
    assert d["n"] == 3 and d["pearson"]["delta"] is None  # b is constant on the kept items
    with pytest.raises(ValueError):
        paired_difference([1], [1, 2], [1, 2])


# --------------------------------------------------------------------------------------------
# the judge's item-by-item checks (embedded task)

TRUTH = {"tent": True, "rope": False, "map": True, "kettle": False}


def _fb(**verdicts):
    return "Checking each: " + "; ".join(f"{k}: {v}" for k, v in verdicts.items()) + "."


def test_check_accuracy_on_hand_made_feedbacks():
    rows = [
        # all four right
        _row(
            0, 3.0, 3.0, feedback=_fb(tent="named", rope="missing", map="named", kettle="missing")
        ),
        # partially wrong: rope and kettle named though absent
        _row(1, 3.0, 4.0, feedback=_fb(tent="named", rope="named", map="named", kettle="named")),
        # missing items: only two checks, both right
        _row(2, 3.0, 2.5, "forced_cue", feedback=_fb(tent="named", rope="missing")),
        # garbage
        _row(3, 3.0, 1.0, feedback="I like camping. [RESULT] 1"),
    ]
    truths = {f"r{i}": TRUTH for i in range(4)}
    m = check_accuracy(rows, truths, n_boot=200, seed=1)
    assert m["n_feedbacks"] == 4 and m["n_parsable"] == 3 and m["n_complete"] == 2
    assert m["n_items"] == 16 and m["n_read"] == 10
    assert m["accuracy"] == pytest.approx((4 + 2 + 2 + 0) / 16)
    assert m["accuracy_of_read"] == pytest.approx(8 / 10)
    assert m["all_correct_rate"] == pytest.approx(1 / 4)
    lo, hi = m["accuracy_ci"]
    assert 0.0 <= lo <= m["accuracy"] <= hi <= 1.0 and lo < hi
    assert check_accuracy(rows, truths, n_boot=200, seed=1) == m  # deterministic
    _assert_no_nan(m)


def test_check_accuracy_counts_only_rows_it_can_judge():
    good = _fb(tent="named", rope="missing", map="named", kettle="missing")
    rows = [
        _row(0, 3.0, 3.0, feedback=good),
        _row(1, 3.0, None, "error: boom", feedback=good),  # failed row
        _row(2, 3.0, 3.0, feedback=None),  # no feedback
        _row(3, 3.0, 3.0, feedback=good),  # no truth for this id
        # two samples: one right, one with every verdict flipped
        _row(4, 3.0, 3.0, feedback=[good, _fb(tent="missing", rope="named", map="missing")]),
    ]
    truths = {"r0": TRUTH, "r1": TRUTH, "r2": TRUTH, "r4": TRUTH}
    m = check_accuracy(rows, truths, n_boot=0)
    assert m["n_feedbacks"] == 3 and m["n_items"] == 12 and m["n_read"] == 11
    assert m["accuracy"] == pytest.approx(8 / 12) and m["accuracy_ci"] is None
    assert check_accuracy(rows, {}) is None
    assert check_accuracy([_row(0, 3.0, 3.0, feedback=None)], {"r0": TRUTH}) is None
    garbage = check_accuracy([_row(0, 3.0, 3.0, feedback="")], {"r0": TRUTH}, n_boot=10)
    assert garbage["n_parsable"] == 0 and garbage["accuracy"] == 0.0
    assert garbage["accuracy_of_read"] is None


def test_leaked_mass_rounding_below_zero_is_reported_as_zero():
    from realjudge.evaluate.run import format_summary

    rows = [_row(0, 1.0, 1.2, leaked_mass=-1e-7), _row(1, 2.0, 2.1, leaked_mass=-3e-8)]
    s = summarize_predictions(rows, n_boot=10)
    assert s["mean_leaked_mass"] == 0.0
    assert "leaked mass 0.000" in format_summary(s)


def test_a_constant_resample_of_fractional_scores_has_no_pearson():
    """[3.7, 3.7, 3.7] has a float mean that is not 3.7: the centred values are ~1e-16, not 0,
    and must still count as constant (r undefined, the resample left out), not as r ~ 0."""
    from realjudge.scoring.agreement import rowwise_pearson

    x = np.array([[3.7, 3.7, 3.7], [0.1, 0.1, 0.1], [1.0, 2.0, 4.0]])
    y = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [3.7, 3.7, 3.7]])
    assert np.isnan(rowwise_pearson(x, y)).all()
    assert rowwise_pearson(y[:1], y[:1])[0] == pytest.approx(1.0)
    # in a paired bootstrap of 3 items, a resample repeating one item of a is left out
    a, g = np.array([3.7, 3.7, 2.1]), np.array([5.0, 4.0, 1.0])
    idx = np.random.default_rng(0).integers(0, 3, size=(500, 3))
    const_a = np.ptp(a[idx], axis=1) == 0
    assert const_a.any() and np.isnan(rowwise_pearson(a[idx], g[idx])[const_a]).all()
