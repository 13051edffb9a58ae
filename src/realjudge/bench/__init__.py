"""Benchmarks behind ``realjudge bench``, measured side by side in one process.

- :mod:`.inference`: examples/s of score-only RAIL, CoT + RAIL and CoT + decode;
- :mod:`.train_step`: REAL vs GRPO training steps through the trainer's own code (the harness
  the sweep shares);
- :mod:`.sweep`: how both steps grow with group size, prompt and response length;
- :mod:`.cpu`: the CPU fast path (bf16 + shared prefill) against fp32 at the shapes of a
  ``cpu-embedded`` RL step and a CoT evaluation;
- :mod:`.common`: timing, tables, JSON, medians/ratios, peak memory.

The submodules load torch and transformers only when a benchmark runs.
"""

from __future__ import annotations

from realjudge.bench.common import format_table, write_json
from realjudge.bench.inference import bench_inference, format_inference_bench
from realjudge.bench.train_step import (
    TrainStepHarness,
    bench_train_step,
    train_step_harness,
    train_step_ratio_lines,
)

__all__ = [
    "TrainStepHarness",
    "bench_inference",
    "bench_train_step",
    "format_inference_bench",
    "format_table",
    "train_step_harness",
    "train_step_ratio_lines",
    "write_json",
]
