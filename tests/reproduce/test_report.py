"""The markdown of ``results.md``: cells, claim verdicts and the sweep table (no model)."""

from __future__ import annotations

from realjudge.reproduce.report import claim_verdict, fmt_summary, sweep_table
from realjudge.reproduce.stats import Claim, aggregate, mean_ci


def test_cells_show_an_interval_only_when_the_seeds_differ():
    assert fmt_summary(mean_ci([0.112, 0.112, 0.112])) == "0.112"  # the base model's 3 seeds
    assert fmt_summary(mean_ci([0.2])) == "0.200"
    assert fmt_summary(mean_ci([0.1, 0.3])).startswith("0.200 [")
    assert fmt_summary(None) == fmt_summary(mean_ci([])) == "n/a"


def test_claim_verdicts_separate_a_mean_from_a_significant_difference():
    assert claim_verdict(Claim("c", True, "", significant=True)) == "holds"
    assert claim_verdict(Claim("c", True, "")) == "higher mean, not significant"
    assert claim_verdict(Claim("c", False, "")) == "does not hold"
    assert claim_verdict(Claim("c", False, "", significant=True)) == "does not hold, significantly"
    assert claim_verdict(Claim("c", None, "")) == "not testable"


def test_sweep_table_puts_each_variant_under_its_parent_with_the_paired_change():
    def row(t, o, cue=0.0):
        return {
            "t": {"pearson": t, "forced_cue_rate": cue},
            "o": {"pearson": o, "forced_cue_rate": cue},
        }

    per_seed = {
        "REAL": {"0": row(0.1, 0.0), "1": row(0.5, 0.2)},
        "REAL[beta=0.1]": {"0": row(0.2, 0.1), "1": row(0.7, 0.3, 0.5)},
        "GRPO": {"0": row(0.0, 0.0), "1": row(0.0, 0.0)},
    }
    results = {
        "runs": [
            {"name": "REAL"},
            {"name": "GRPO"},
            {"name": "REAL[beta=0.1]", "variant_of": "REAL"},
        ],
        "in_domain": ["t"],
        "out_of_domain": ["o"],
        "per_seed": per_seed,
    }
    agg = aggregate(per_seed, ["t", "o"], ["pearson", "forced_cue_rate"])
    lines = sweep_table(results, agg).splitlines()
    assert lines[0].startswith("| variant | of | t P | t change | o P | o change | average P |")
    assert len(lines) == 4  # header, rule, the parent, its one variant (GRPO is no parent)
    assert lines[2].startswith("| REAL (as in the preset) | - | 0.300 [")
    variant = lines[3].split(" | ")
    assert variant[:2] == ["| REAL[beta=0.1]", "REAL"]
    assert variant[3].startswith("+0.150 [")  # test changes by +0.1 and +0.2: mean +0.15
    assert variant[5].startswith("+0.100 [+0.100, +0.100]")  # +0.1 in both seeds
    assert variant[-1].startswith("0.25 [")  # forced cue on OOD: 0 and 0.5


def test_detectable_difference_is_given_over_the_seeds_each_claim_rests_on():
    """Three seeds run, but a claim whose interval rests on two (one seed without a number)
    is stated over two, with what three would give."""
    from realjudge.reproduce.report import detectable_md
    from realjudge.reproduce.stats import check_claims, half_width_at

    def row(p_in, p_out):
        return {"A": {"pearson": p_in}, "B": {"pearson": p_out}}

    per_seed = {
        "REAL": {"0": row(0.5, 0.5), "1": row(0.6, 0.6), "2": row(None, 0.7)},
        "RAFT": {"0": row(0.4, 0.4), "1": row(0.45, 0.5), "2": row(0.5, 0.5)},
    }
    claim = check_claims(per_seed, ["A"], ["B"], regression=("RAFT",), binary_rl="GRPO")[0]
    half = (claim.ci_high - claim.ci_low) / 2
    text = detectable_md([claim], 3)
    assert f"REAL - RAFT +-{half:.3f}" in text and "over 2 seeds" in text
    assert f"3 seeds would give: REAL - RAFT +-{half_width_at(half, 2, 3):.3f}." in text
    # claims over different numbers of seeds: each says its own, and only the one over fewer
    # than three gets a projection
    other = Claim("REAL above TRACT (x)", True, "", difference=0.1, ci_low=0.0, ci_high=0.2, n=3)
    text = detectable_md([claim, other])
    assert "REAL - RAFT +-" in text and "REAL - TRACT +-0.100 (3 seeds)" in text
    assert "over the seeds each rests on" in text
    assert "REAL - TRACT" not in text.split("would give")[1]
    # a claim that does not say its seeds falls back on the seeds run
    old = Claim("REAL above TRACT (x)", True, "", difference=0.1, ci_low=0.0, ci_high=0.2)
    assert "over 3 seeds" in detectable_md([old], 3)
