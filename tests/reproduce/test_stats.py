"""The pure aggregation of reproduce: intervals over seeds, averages, the paper's claims."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from realjudge.reproduce.stats import (
    Summary,
    aggregate,
    check_claims,
    mean_ci,
    seed_difference,
    with_average,
)


def test_mean_ci_is_the_student_t_interval():
    xs = [0.2, 0.4, 0.9]
    s = mean_ci(xs)
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 3, scale=stats.sem(xs))
    assert s.mean == pytest.approx(0.5)
    assert (s.lo, s.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert s.n == 3


def test_mean_ci_skips_missing_values_and_handles_one_or_none():
    assert mean_ci([0.3, None, float("nan")]) == Summary(0.3, 0.3, 0.3, 1, (0.3,))
    assert mean_ci([None]).mean is None and mean_ci([]).n == 0


def test_average_needs_every_benchmark():
    per = {"a": {"pearson": 0.2}, "b": {"pearson": 0.6}}
    assert with_average(per, ["a", "b"], ["pearson"])["average"]["pearson"] == pytest.approx(0.4)
    assert with_average(per, ["a", "b", "c"], ["pearson"])["average"]["pearson"] is None


def test_aggregate_averages_per_seed_before_the_interval():
    per_seed = {
        "REAL": {
            "0": {"in": {"pearson": 0.5}, "out": {"pearson": 0.1}},
            "1": {"in": {"pearson": 0.7}, "out": {"pearson": 0.3}},
        }
    }
    agg = aggregate(per_seed, ["in", "out"], ["pearson"])
    avg = agg["REAL"]["average"]["pearson"]
    assert avg.values == (pytest.approx(0.3), pytest.approx(0.5))
    assert avg.mean == pytest.approx(0.4)
    assert math.isfinite(avg.lo) and avg.lo < 0.4 < avg.hi


def _per_seed(table):
    """``{run: {bench: [v_seed0, v_seed1, v_seed2]}}`` -> the per-seed table."""
    return {
        run: {str(k): {b: {"pearson": v[k]} for b, v in benches.items()} for k in range(3)}
        for run, benches in table.items()
    }


def test_claims_hold_when_real_is_above_and_gains_more_out_of_domain():
    per_seed = _per_seed(
        {
            "REAL": {"in": [0.80, 0.81, 0.82], "out": [0.60, 0.61, 0.62]},
            "RAFT": {"in": [0.70, 0.71, 0.72], "out": [0.30, 0.31, 0.32]},
            "TRACT": {"in": [0.75, 0.76, 0.77], "out": [0.40, 0.41, 0.42]},
            "GRPO": {"in": [0.70, 0.70, 0.70], "out": [0.40, 0.40, 0.40]},
        }
    )
    claims = check_claims(per_seed, ["in"], ["out"])
    assert [c.holds for c in claims] == [True, True, True, True]
    assert all(c.significant for c in claims)
    assert "REAL minus RAFT: +0.200" in claims[0].detail
    # best baseline: TRACT in domain (gain 0.05 a seed), TRACT/GRPO out of domain (0.20)
    assert "gain in domain +0.050" in claims[-1].detail
    assert "out of domain +0.200" in claims[-1].detail


def test_pairing_by_seed_sees_a_consistent_gain_that_seed_spread_hides():
    # the seeds differ a lot, but within each seed REAL is 0.02 above GRPO
    per_seed = _per_seed(
        {
            "REAL": {"in": [0.12, 0.52, 0.32], "out": [0.12, 0.52, 0.32]},
            "GRPO": {"in": [0.10, 0.50, 0.30], "out": [0.10, 0.50, 0.30]},
        }
    )
    (grpo,) = [
        c for c in check_claims(per_seed, ["in"], ["out"], regression=()) if "GRPO" in c.text
    ]
    assert grpo.holds and grpo.significant
    noisy = _per_seed(
        {
            "REAL": {"in": [0.2, 0.5, 0.3], "out": [0.2, 0.5, 0.3]},
            "GRPO": {"in": [0.3, 0.3, 0.3], "out": [0.3, 0.3, 0.3]},
        }
    )
    (grpo,) = [c for c in check_claims(noisy, ["in"], ["out"], regression=()) if "GRPO" in c.text]
    assert grpo.holds and not grpo.significant  # higher mean, interval spans zero


def test_claims_fail_or_are_untestable_honestly():
    per_seed = _per_seed(
        {
            "REAL": {"in": [0.5, 0.6, 0.7], "out": [0.2, 0.2, 0.2]},
            "RAFT": {"in": [0.6, 0.6, 0.6], "out": [0.3, 0.3, 0.3]},
        }
    )
    claims = check_claims(per_seed, ["in"], ["out"], regression=("RAFT", "TRACT"))
    assert claims[0].holds is False and not claims[0].significant
    assert claims[1].holds is None  # no TRACT run
    assert claims[2].holds is None  # no GRPO run
    assert claims[3].holds is False


def test_correlation_intervals_are_clipped_and_a_smaller_loss_is_no_gain():
    per_seed = _per_seed(
        {
            "REAL": {"in": [0.1, 0.9, 0.5], "out": [0.3, 0.3, 0.3]},
            "RAFT": {"in": [0.8, 0.8, 0.8], "out": [0.4, 0.4, 0.4]},
        }
    )
    cell = aggregate(per_seed, ["in", "out"], ["pearson"])["REAL"]["in"]["pearson"]
    assert cell.lo == -1.0 or cell.lo > -1.0
    assert mean_ci([0.1, 0.9], bounds=(-1.0, 1.0)).hi == 1.0
    rates = {"R": {str(k): {"in": {"forced_cue_rate": v}} for k, v in enumerate([0.0, 0.0, 0.4])}}
    cue = aggregate(rates, ["in"], ["forced_cue_rate"])["R"]["in"]["forced_cue_rate"]
    assert cue.lo == 0.0 and 0.0 < cue.hi <= 1.0  # a rate's interval stays in [0, 1]
    claims = check_claims(per_seed, ["in"], ["out"], regression=("RAFT",), binary_rl="none")
    # REAL loses 0.3 in domain and 0.1 out of domain: smaller loss, but no gain
    assert claims[-1].holds is False
    # on the average REAL is below RAFT by 0.4, 0.0 and 0.2: lower, but not significantly
    assert claims[0].holds is False and not claims[0].significant


def test_seed_difference_pairs_by_seed_and_skips_unshared_seeds():
    per_seed = {
        "REAL": {
            "0": {"in": {"pearson": 0.1}, "out": {"pearson": 0.0}},
            "1": {"in": {"pearson": 0.5}, "out": {"pearson": 0.2}},
            "2": {"in": {"pearson": 0.3}, "out": {"pearson": None}},
        },
        "REAL[beta=0.1]": {
            "0": {"in": {"pearson": 0.2}, "out": {"pearson": 0.1}},
            "1": {"in": {"pearson": 0.7}, "out": {"pearson": 0.3}},
            "9": {"in": {"pearson": -1.0}, "out": {"pearson": -1.0}},
        },
    }
    d = seed_difference(per_seed, "REAL[beta=0.1]", "REAL", "in", "pearson", ["in", "out"])
    # seeds 0 and 1 only: differences 0.1 and 0.2, whose t interval is far narrower than the
    # unpaired one (the seeds' own spread, 0.1 vs 0.5, cancels)
    assert d.values == pytest.approx((0.1, 0.2)) and d.mean == pytest.approx(0.15)
    lo, hi = stats.t.interval(0.95, 1, loc=0.15, scale=stats.sem([0.1, 0.2]))
    assert (d.lo, d.hi) == (pytest.approx(lo), pytest.approx(hi))
    avg = seed_difference(per_seed, "REAL[beta=0.1]", "REAL", "average", "pearson", ["in", "out"])
    assert avg.values == pytest.approx((0.1, 0.15))
    assert seed_difference(per_seed, "REAL", "nope", "in", "pearson", ["in"]).n == 0


def test_half_width_at_more_seeds_uses_the_same_spread():
    from realjudge.reproduce.stats import half_width_at, mean_ci

    xs = [0.10, -0.02]
    two = mean_ci(xs)
    half = (two.hi - two.lo) / 2
    # the same numbers over itself: unchanged; at 3 seeds: t_2 / t_1 * sqrt(2 / 3) of it
    assert half_width_at(half, 2, 2) == pytest.approx(half)
    assert half_width_at(half, 2, 3) == pytest.approx(
        half * 4.3027 / 12.7062 * (2 / 3) ** 0.5, rel=1e-4
    )
    sd = math.sqrt(0.0072)  # the two seeds' spread: a third seed at the mean keeps it
    three = mean_ci([0.04 - sd, 0.04, 0.04 + sd])
    assert half_width_at(half, 2, 3) == pytest.approx((three.hi - three.lo) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        half_width_at(half, 1, 3)


def _in_out(p_in, p_out):
    return {"A": {"pearson": p_in}, "B": {"pearson": p_out}}


def test_out_of_domain_gain_is_paired_with_the_in_domain_gain_of_the_same_seed():
    """Claim 3 when the best baseline in domain (RAFT) and out of domain (TRACT) have
    different seeds: out minus in over the seeds with both gains, not by list position."""
    crash = {
        "REAL": {"0": _in_out(0.5, 0.5), "1": _in_out(0.6, 0.6), "2": _in_out(0.7, 0.7)},
        "RAFT": {"0": _in_out(0.45, 0.1), "1": _in_out(0.55, 0.1)},
        "TRACT": {"0": _in_out(0.1, 0.4), "1": _in_out(0.1, 0.5), "2": _in_out(0.1, 0.6)},
    }
    c = check_claims(crash, ["A"], ["B"], regression=("RAFT", "TRACT"))[-1]
    # in: seeds 0, 1 gain 0.05; out: seeds 0, 1, 2 gain 0.1; out minus in on seeds 0, 1
    assert c.difference == pytest.approx(0.05) and c.n == 2
    assert "out minus in +0.050" in c.detail

    shifted = {
        "REAL": {"0": _in_out(0.5, 0.5), "1": _in_out(0.9, 0.6), "2": _in_out(0.7, 0.9)},
        "RAFT": {"0": _in_out(0.45, 0.0), "1": _in_out(0.8, 0.0)},
        "TRACT": {"1": _in_out(0.0, 0.5), "2": _in_out(0.0, 0.8), "3": _in_out(0.0, 0.0)},
    }
    c = check_claims(shifted, ["A"], ["B"], regression=("RAFT", "TRACT"))[-1]
    # in: seeds 0, 1 (RAFT); out: seeds 1, 2 (TRACT); only seed 1 has both: 0.1 - 0.1
    assert c.difference == pytest.approx(0.0) and c.n == 1
    assert c.ci_low is None and not c.significant


def test_a_claim_records_the_seeds_its_difference_rests_on():
    per_seed = {
        "REAL": {"0": _in_out(0.5, 0.5), "1": _in_out(0.6, 0.6), "2": _in_out(None, 0.7)},
        "RAFT": {"0": _in_out(0.4, 0.4), "1": _in_out(0.45, 0.5), "2": _in_out(0.5, 0.5)},
    }
    claims = check_claims(per_seed, ["A"], ["B"], regression=("RAFT",), binary_rl="GRPO")
    assert claims[0].n == 2 and claims[0].to_dict()["n"] == 2  # seed 2 has no average
    assert claims[1].n == 0 and claims[1].holds is None  # no GRPO
