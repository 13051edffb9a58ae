"""Learning curves of training runs, from their periodic evaluations: a JSON of the points and
a plot (Pearson, and the check accuracy of CoT runs), x = training examples seen.

    python scripts/judge_curves.py NAME=RUN_DIR [NAME=RUN_DIR ...] --json OUT.json --png OUT.png

Each RUN_DIR is a ``realjudge train`` output dir (its ``train_log.jsonl`` and
``train_config.yaml``); the JSON records the command, each run's config keys that decide the
curve, and the points.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import yaml

from realjudge.reproduce.report import plot_curves
from realjudge.reproduce.runner import read_curve

KEYS = (
    "method",
    "learning_rate",
    "batch_size",
    "freeze_layers",
    "warmup_steps",
    "eval_split",
    "eval_limit",
    "eval_mode",
)


def curves(runs: dict[str, Path]) -> dict:
    out: dict = {"runs": {}, "curves": {}, "check_curves": {}}
    for name, run_dir in runs.items():
        cfg = yaml.safe_load((run_dir / "train_config.yaml").read_text())
        per_step = int(cfg["batch_size"])  # examples (prompts) per step, all processes
        out["runs"][name] = {k: cfg.get(k) for k in KEYS}
        for key, metric in (("curves", "pearson"), ("check_curves", "check_accuracy")):
            pts = [(step * per_step, v) for step, v in read_curve(run_dir, metric)]
            if pts:
                out[key][name] = {"0": pts}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    ap.add_argument("--json", required=True, help="points, written here")
    ap.add_argument("--png", required=True, help="plot, written here")
    args = ap.parse_args(argv)
    runs = {}
    for spec in args.runs:
        name, _, path = spec.partition("=")
        runs[name] = Path(path)
    data = curves(runs)
    data["command"] = "python scripts/judge_curves.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    data["curve"] = {"benchmark": "each run's eval split (see runs)", "limit": "see runs"}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    plot_curves(data, Path(args.png), xlabel="training examples seen")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
