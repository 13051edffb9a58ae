"""Training-time CoT evaluation reports the accuracy of the judge's item-by-item checks."""

from __future__ import annotations

import json

from realjudge.train import train

from ._helpers import one_thread, quick_config  # noqa: F401  (autouse: one torch thread)


def test_cot_eval_on_embedded_records_logs_check_accuracy(tmp_path):
    res = train(
        quick_config(
            "sft",
            tmp_path,
            max_steps=1,
            eval_data="embedded",
            eval_split="test",
            eval_limit=3,
            eval_mode="cot",
            max_new_tokens=6,
        )
    )
    final = res.final_eval
    assert 0.0 <= final["check_accuracy"] <= 1.0
    logged = [json.loads(x) for x in (res.out / "train_log.jsonl").read_text().splitlines()]
    assert any("eval/check_accuracy" in row for row in logged)


def test_score_eval_has_no_check_accuracy(tmp_path):
    res = train(
        quick_config(
            "sft",
            tmp_path,
            max_steps=1,
            eval_data="embedded",
            eval_split="test",
            eval_limit=3,
            eval_mode="score",
        )
    )
    assert "check_accuracy" not in res.final_eval
