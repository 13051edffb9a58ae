"""Reproduce the paper's comparison at small scale: ``realjudge reproduce --preset NAME``.

- :mod:`~realjudge.reproduce.presets`: what each preset trains and evaluates;
- :mod:`~realjudge.reproduce.runner`: seeds x runs, training and evaluation, reuse of
  finished work;
- :mod:`~realjudge.reproduce.stats`: pure aggregation (mean and 95% t interval over seeds)
  and the paper's claims;
- :mod:`~realjudge.reproduce.report`: results.json, results.md and the plots.
"""

from realjudge.reproduce.presets import PRESETS, Benchmark, Experiment, RunSpec, get_preset
from realjudge.reproduce.runner import ReproduceConfig, run_reproduce

__all__ = [
    "PRESETS",
    "Benchmark",
    "Experiment",
    "ReproduceConfig",
    "RunSpec",
    "get_preset",
    "run_reproduce",
]
