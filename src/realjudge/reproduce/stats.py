"""Pure aggregation of a multi-seed comparison: means, intervals and the paper's claims.

The input everywhere is ``per_seed[run][seed][benchmark][metric] -> float | None`` (one number
per evaluation); nothing here touches a model or a file, so all of it is unit-tested directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

Table = Mapping[str, Mapping[str, Mapping[str, Mapping[str, float | None]]]]


@dataclass(frozen=True)
class Summary:
    """Mean over seeds with a two-sided t interval (``lo == hi == mean`` with one seed)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    values: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "ci95": [self.lo, self.hi],
            "n": self.n,
            "values": list(self.values),
        }


def mean_ci(
    values: Sequence[float | None],
    level: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> Summary:
    """Mean of the finite values and the Student-t confidence interval of the mean
    (``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``), clipped to ``bounds`` (a correlation's
    ``[-1, 1]``: with two seeds ``t`` is 12.7 and the raw interval leaves the range). No finite
    values: all ``None``."""
    xs = tuple(float(v) for v in values if v is not None and math.isfinite(float(v)))
    n = len(xs)
    if n == 0:
        return Summary(None, None, None, 0, ())
    mean = sum(xs) / n
    if n == 1:
        return Summary(mean, mean, mean, 1, xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Summary(mean, lo, hi, n, xs)


def half_width_at(half_width: float, n: int, seeds: int, level: float = 0.95) -> float:
    """The half-width a paired t interval over ``seeds`` seeds would have at the spread that
    gave ``half_width`` over ``n`` seeds (``t_{n-1} * sd / sqrt(n)`` solved for ``sd``, then
    ``t_{seeds-1} * sd / sqrt(seeds)``): what a design of ``seeds`` seeds can detect, read
    from the seeds run so far."""
    if n < 2 or seeds < 2:
        raise ValueError("an interval needs two seeds or more")
    q = (1 + level) / 2
    sd = half_width * math.sqrt(n) / float(stats.t.ppf(q, n - 1))
    return float(stats.t.ppf(q, seeds - 1)) * sd / math.sqrt(seeds)


def with_average(
    per_bench: Mapping[str, Mapping[str, float | None]],
    benches: Sequence[str],
    metrics: Sequence[str],
) -> dict[str, dict[str, float | None]]:
    """Add an ``average`` benchmark: the mean over ``benches`` of each metric (``None`` when any
    benchmark lacks it -- an average over fewer benchmarks would not be comparable)."""
    out = {b: dict(per_bench.get(b, {})) for b in per_bench}
    avg: dict[str, float | None] = {}
    for m in metrics:
        vals = [per_bench.get(b, {}).get(m) for b in benches]
        avg[m] = None if any(v is None for v in vals) else sum(vals) / len(vals)  # type: ignore[arg-type]
    out["average"] = avg
    return out


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """The range an interval of ``metric`` is clipped to: ``[-1, 1]`` for a correlation,
    ``[0, 1]`` for a rate or an accuracy (``forced_cue_rate``, ``check_accuracy``), none
    otherwise (RMSE)."""
    if metric.endswith(("pearson", "spearman")):
        return (-1.0, 1.0)
    if metric.endswith(("rate", "accuracy")):
        return (0.0, 1.0)
    return None


def aggregate(
    per_seed: Table, benches: Sequence[str], metrics: Sequence[str]
) -> dict[str, dict[str, dict[str, Summary]]]:
    """``per_seed[run][seed][bench][metric]`` -> ``{run: {bench: {metric: Summary}}}`` with an
    ``average`` column computed per seed first (so its interval reflects seed variance of
    the average, not a sum of intervals); intervals are clipped by :func:`metric_bounds`."""
    out: dict[str, dict[str, dict[str, Summary]]] = {}
    for run, seeds in per_seed.items():
        rows = [with_average(seeds[s], benches, metrics) for s in sorted(seeds)]
        out[run] = {
            b: {
                m: mean_ci(
                    [r.get(b, {}).get(m) for r in rows],
                    bounds=metric_bounds(m),
                )
                for m in metrics
            }
            for b in [*benches, "average"]
        }
    return out


def seed_difference(
    per_seed: Table, run: str, other: str, bench: str, metric: str, benches: Sequence[str]
) -> Summary:
    """``run`` minus ``other`` on one benchmark (or ``average`` over ``benches``), paired by
    seed: the mean over the seeds both have, with its t interval. Pairing removes what the
    two runs share within a seed (the warm start, the data order), so a sweep variant is
    judged against its parent on the seed it started from."""
    a, b = per_seed.get(run, {}), per_seed.get(other, {})
    diffs: list[float | None] = []
    for seed in sorted(set(a) & set(b)):
        x = with_average(a[seed], benches, [metric]).get(bench, {}).get(metric)
        y = with_average(b[seed], benches, [metric]).get(bench, {}).get(metric)
        diffs.append(None if x is None or y is None else x - y)
    return mean_ci(diffs)


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims, checked on the per-seed results.

    ``holds``: the mean says so (``None``: not testable, a run or a benchmark is missing);
    ``significant``: the 95% interval of the seed-paired difference excludes zero too;
    ``difference``: that difference's mean over seeds, ``ci_low``/``ci_high`` its 95% t
    interval (``None`` with fewer than two seeds); ``n``: the seeds the difference rests on
    (those with a number for both sides; 0: none, or a claim without a difference).
    """

    text: str
    holds: bool | None
    detail: str
    significant: bool = False
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.text,
            "holds": self.holds,
            "significant": self.significant,
            "detail": self.detail,
            "difference": self.difference,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
        }


def _numbers(d: Summary) -> dict[str, Any]:
    """A paired difference as the numeric fields of a :class:`Claim`."""
    two = d.n >= 2 and d.lo is not None and d.hi is not None
    return {
        "difference": d.mean,
        "ci_low": d.lo if two else None,
        "ci_high": d.hi if two else None,
        "n": d.n,
    }


def fmt_diff(d: Summary, with_n: bool = False) -> str:
    """A signed difference: ``+0.104 [+0.020, +0.188]``; one seed: ``+0.104``. ``with_n``
    adds how many seeds it rests on (``over 3 seeds``, ``(one seed)``)."""
    if d.mean is None:
        return "n/a"
    if d.n < 2 or d.lo is None or d.hi is None:
        return f"{d.mean:+.3f}" + (" (one seed)" if with_n else "")
    return f"{d.mean:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]" + (f" over {d.n} seeds" if with_n else "")


def check_claims(
    per_seed: Table,
    in_domain: Sequence[str],
    out_of_domain: Sequence[str],
    *,
    real: str = "REAL",
    regression: Sequence[str] = ("RAFT", "TRACT"),
    binary_rl: str = "GRPO",
    metric: str = "pearson",
) -> list[Claim]:
    """The paper's headline claims, on ``metric`` averaged over the benchmarks:

    1. REAL is above each regression-aware baseline (RAFT, TRACT);
    2. REAL is above binary-reward RL;
    3. REAL's gain over the best baseline is larger out of domain than in domain -- and is a
       gain there (REAL losing less out of domain than in domain does not count).

    A claim 'holds' when the mean over seeds says so. It is also 'significant' when the 95%
    t interval of the difference, paired by seed, excludes zero: the runs of one seed share
    their data order and (for REAL, GRPO, TRACT-2) their warm start, so pairing removes what
    they share. Claim 3 compares a difference of differences, paired by seed the same way.
    """
    benches = [*in_domain, *out_of_domain]
    claims: list[Claim] = []

    def versus(other: str) -> Claim:
        text = f"REAL above {other} ({metric}, average over benchmarks)"
        d = seed_difference(per_seed, real, other, "average", metric, benches)
        if d.mean is None:
            return Claim(text, None, f"{real} or {other} has no result")
        sig = d.n > 1 and d.lo is not None and d.hi is not None and (d.lo > 0 or d.hi < 0)
        return Claim(
            text, d.mean > 0, f"REAL minus {other}: {fmt_diff(d, True)}", sig, **_numbers(d)
        )

    for other in [*regression, binary_rl]:
        claims.append(versus(other))

    text = "REAL's gain over the best baseline is larger out of domain than in domain"
    baselines = [b for b in [*regression, binary_rl] if b in per_seed]
    if not in_domain or not out_of_domain or real not in per_seed or not baselines:
        claims.append(Claim(text, None, "needs in- and out-of-domain benchmarks and baselines"))
        return claims

    def group_mean(run: str, seed: str, group: Sequence[str]) -> float | None:
        return with_average(per_seed[run].get(seed, {}), group, [metric])["average"][metric]

    # the best baseline by mean (one choice for all seeds), then its gap per seed and domain;
    # the best in and out of domain may be different runs, with different seeds
    gains: dict[str, dict[str, float]] = {"in": {}, "out": {}}
    for name, group in (("in", in_domain), ("out", out_of_domain)):
        means = {b: mean_ci([group_mean(b, s, group) for s in per_seed[b]]).mean for b in baselines}
        scored = [(m, b) for b, m in means.items() if m is not None]
        if not scored:
            claims.append(Claim(text, None, "a run has no result"))
            return claims
        best = max(scored)[1]
        for seed in sorted(set(per_seed[real]) & set(per_seed[best])):
            r, o = group_mean(real, seed, group), group_mean(best, seed, group)
            if r is not None and o is not None:
                gains[name][seed] = r - o
    g_in, g_out = mean_ci(list(gains["in"].values())), mean_ci(list(gains["out"].values()))
    if g_in.mean is None or g_out.mean is None:
        claims.append(Claim(text, None, "a run has no result"))
        return claims
    # out minus in, paired by seed: over the seeds with a gain in both
    both = sorted(set(gains["in"]) & set(gains["out"]))
    more = mean_ci([gains["out"][s] - gains["in"][s] for s in both])
    holds = g_out.mean > max(g_in.mean, 0.0)
    sig = (
        holds
        and more.n > 1
        and more.lo is not None
        and more.lo > 0
        and g_out.lo is not None
        and g_out.lo > 0
    )
    detail = (
        f"gain in domain {fmt_diff(g_in, True)}, out of domain {fmt_diff(g_out, True)}; "
        f"out minus in {fmt_diff(more, True)}"
    )
    claims.append(Claim(text, holds, detail, bool(sig), **_numbers(more)))
    return claims
