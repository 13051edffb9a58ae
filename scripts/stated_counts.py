"""Where a CoT judge's score comes from on the embedded task: the count its feedback states.

    python scripts/stated_counts.py EVAL_DIR [EVAL_DIR ...] [--json OUT.json]

For each ``realjudge eval --cot`` output dir (its ``predictions.jsonl``): how many feedbacks
state a count (``So N of the 4 ...``, :func:`realjudge.data.embedded.read_count`), and on
those rows the Pearson correlation of the count with gold, of the RAIL expected score with
the count, and of the expected score with gold; then the expected score with gold on the
rows that state none. A judge whose score follows its stated count (score-count near 1)
scores as well as its count does; a count that tracks gold while the score does not says the
score does not read the feedback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from realjudge.data.embedded import read_count
from realjudge.scoring.agreement import correlation_metrics


def _r(x: list[float], y: list[float]) -> float | None:
    """Pearson r, rounded; ``None`` when undefined (fewer than 3 rows, a constant side)."""
    r = correlation_metrics(x, y, n_boot=0)["pearson"]
    return None if r is None else round(float(r), 3)


def stated_counts(eval_dir: Path) -> dict:
    rows = [
        json.loads(line)
        for line in (eval_dir / "predictions.jsonl").read_text().splitlines()
        if line.strip()
    ]
    rows = [r for r in rows if r.get("gold") is not None and r.get("expected_score") is not None]
    counted = [(read_count(r.get("feedback") or ""), r) for r in rows]
    with_count = [(c, r) for c, r in counted if c is not None]
    without = [r for c, r in counted if c is None]
    counts = [float(c) for c, _ in with_count]
    gold = [float(r["gold"]) for _, r in with_count]
    score = [float(r["expected_score"]) for _, r in with_count]
    return {
        "eval_dir": str(eval_dir),
        "rows": len(rows),
        "rows_with_count": len(with_count),
        "count_vs_gold": _r(counts, gold),
        "score_vs_count": _r(score, counts),
        "score_vs_gold_with_count": _r(score, gold),
        "score_vs_gold_without_count": _r(
            [float(r["expected_score"]) for r in without], [float(r["gold"]) for r in without]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("eval_dirs", nargs="+", type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    out = [stated_counts(d) for d in args.eval_dirs]
    for o in out:
        print(
            f"{o['eval_dir']}: {o['rows_with_count']}/{o['rows']} state a count; "
            f"count~gold {o['count_vs_gold']}, score~count {o['score_vs_count']}, "
            f"score~gold {o['score_vs_gold_with_count']} (with a count), "
            f"{o['score_vs_gold_without_count']} (without)"
        )
    if args.json is not None:
        command = "python scripts/stated_counts.py " + shlex.join(
            sys.argv[1:] if argv is None else argv
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "evals": out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
