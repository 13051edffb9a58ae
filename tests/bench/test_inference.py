"""`realjudge bench inference`: each variant is warmed up before it is timed."""

from __future__ import annotations

from realjudge.bench import inference as bench
from realjudge.inference.judge import Judge


def test_every_variant_is_warmed_up_before_it_is_timed(monkeypatch):
    """The score-only pass does not warm generation: each variant gets its own untimed call on
    one record (CoT + RAIL paid generation's first-call cost, which skewed the ratios)."""
    calls: list[tuple[bool, str, int]] = []
    inner = Judge.predict_all

    def recording(self, records):
        calls.append((self.config.cot, self.config.mode, len(records)))
        return inner(self, records)

    monkeypatch.setattr(Judge, "predict_all", recording)
    bench.bench_inference("tiny", "embedded", n=3, batch_size=3, max_new_tokens=3, show=False)
    variants = [
        (c.get("cot", False), c.get("mode", "rail")) for c in bench.INFERENCE_VARIANTS.values()
    ]
    warm = [(cot, mode) for cot, mode, n in calls if n == 1]
    timed = [(cot, mode) for cot, mode, n in calls if n == 3]
    assert sorted(warm) == sorted(variants) and timed == variants
    assert calls.index((*variants[-1], 1)) < calls.index((*variants[0], 3))  # warm-ups first
