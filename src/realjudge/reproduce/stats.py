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


def aggregate(
    per_seed: Table, benches: Sequence[str], metrics: Sequence[str]
) -> dict[str, dict[str, dict[str, Summary]]]:
    """``per_seed[run][seed][bench][metric]`` -> ``{run: {bench: {metric: Summary}}}`` with an
    ``average`` column computed per seed first (so its interval reflects seed variance of
    the average, not a sum of intervals)."""
    out: dict[str, dict[str, dict[str, Summary]]] = {}
    for run, seeds in per_seed.items():
        rows = [with_average(seeds[s], benches, metrics) for s in sorted(seeds)]
        out[run] = {
            b: {
                m: mean_ci(
                    [r.get(b, {}).get(m) for r in rows],
                    bounds=(-1.0, 1.0) if m.endswith(("pearson", "spearman")) else None,
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
    """One of the paper's claims, checked on the aggregated results."""

    text: str
    holds: bool | None  # None: not testable (a run or a benchmark is missing)
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.text, "holds": self.holds, "detail": self.detail}


def _mean(agg: Mapping, run: str, bench: str, metric: str) -> float | None:
    s = agg.get(run, {}).get(bench, {}).get(metric)
    return None if s is None else s.mean


def _separated(a: Summary | None, b: Summary | None) -> bool:
    """``a``'s interval lies wholly above ``b``'s (a conservative 'clearly better')."""
    return bool(a and b and a.lo is not None and b.hi is not None and a.n > 1 and a.lo > b.hi)


def check_claims(
    agg: Mapping[str, Mapping[str, Mapping[str, Summary]]],
    in_domain: Sequence[str],
    out_of_domain: Sequence[str],
    *,
    real: str = "REAL",
    regression: Sequence[str] = ("RAFT", "TRACT"),
    binary_rl: str = "GRPO",
    metric: str = "pearson",
) -> list[Claim]:
    """The paper's headline claims, stated on mean Pearson over seeds:

    1. REAL is above each regression-aware baseline (RAFT, TRACT), on average over benchmarks;
    2. REAL is above binary-reward RL;
    3. REAL's gain over the best baseline is larger out of domain than in domain -- and is a
       gain there (REAL losing less out of domain than in domain does not count).

    A claim 'holds' when the mean is higher; ``detail`` also says whether the seed intervals
    are separated, which is the stronger statement at small scale.
    """
    claims: list[Claim] = []

    def avg_over(run: str, benches: Sequence[str]) -> float | None:
        vals = [_mean(agg, run, b, metric) for b in benches]
        return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)  # type: ignore[arg-type]

    def versus(other: str) -> Claim:
        text = f"REAL above {other} ({metric}, average over benchmarks)"
        r, o = _mean(agg, real, "average", metric), _mean(agg, other, "average", metric)
        if r is None or o is None:
            return Claim(text, None, f"{real} or {other} has no result")
        sep = _separated(agg[real]["average"][metric], agg[other]["average"][metric])
        detail = f"{r:+.3f} vs {o:+.3f} (diff {r - o:+.3f}); seed intervals " + (
            "separated" if sep else "overlap"
        )
        return Claim(text, r > o, detail)

    for other in [*regression, binary_rl]:
        claims.append(versus(other))

    text = "REAL's gain over the best baseline is larger out of domain than in domain"
    baselines = [b for b in [*regression, binary_rl] if b in agg]
    if not in_domain or not out_of_domain or real not in agg or not baselines:
        claims.append(Claim(text, None, "needs in- and out-of-domain benchmarks and baselines"))
        return claims
    gains = {}
    for name, benches in (("in", in_domain), ("out", out_of_domain)):
        r = avg_over(real, benches)
        best = [v for v in (avg_over(b, benches) for b in baselines) if v is not None]
        gains[name] = None if r is None or not best else r - max(best)
    if gains["in"] is None or gains["out"] is None:
        claims.append(Claim(text, None, "a run has no result"))
    else:
        claims.append(
            Claim(
                text,
                gains["out"] > max(gains["in"], 0.0),
                f"gain in domain {gains['in']:+.3f}, out of domain {gains['out']:+.3f}",
            )
        )
    return claims
