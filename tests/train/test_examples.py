"""Tokenised layouts of the training rows, and the deterministic data order."""

from __future__ import annotations

import pytest

from realjudge.data.records import JudgeRecord
from realjudge.inference.judge import score_prompt_ids
from realjudge.scoring.prompts import render_prompt
from realjudge.scoring.vocab import ScoreVocab
from realjudge.train.examples import Encoder, global_batch_indices, shard


def test_data_order_is_a_function_of_seed_and_step():
    n, bs = 10, 4
    a = [global_batch_indices(n, s, bs, seed=1) for s in range(5)]
    b = [global_batch_indices(n, s, bs, seed=1) for s in range(5)]
    assert a == b and a != [global_batch_indices(n, s, bs, seed=2) for s in range(5)]
    flat = [i for step in a for i in step]
    assert sorted(flat[:10]) == list(range(10))  # epoch 0 is a permutation
    assert sorted(flat[10:20]) == list(range(10))  # so is epoch 1


def test_shards_partition_the_global_batch():
    batch = global_batch_indices(12, 3, 8, seed=0)
    parts = [shard(batch, r, 4) for r in range(4)]
    assert [i for p in parts for i in p] == batch
    with pytest.raises(ValueError):
        shard(batch, 0, 3)


@pytest.fixture()
def record():
    return JudgeRecord(
        id="a", instruction="Say hi.", response="hi", gold=4.33, reference_feedback="It greets."
    )


@pytest.mark.parametrize("fmt", ["result", "overall"])
def test_target_is_feedback_cue_then_gold_score(tokenizer, record, fmt):
    vocab = ScoreVocab.from_tokenizer(tokenizer, fmt, (1, 5))
    enc = Encoder(tokenizer, vocab, fmt, 512, 64)
    ids, cue_end = enc.target(record)
    assert ids[cue_end] == vocab.token_ids[3]  # 4.33 -> 4
    assert cue_end == len(ids) - 1
    assert tokenizer.decode(ids[:cue_end]).endswith(vocab.cue_text)


def test_long_targets_keep_cue_and_score(tokenizer, record):
    vocab = ScoreVocab.from_tokenizer(tokenizer, "result", (1, 5))
    record.reference_feedback = "word " * 200
    enc = Encoder(tokenizer, vocab, "result", 512, 20)
    ids, cue_end = enc.target(record)
    assert len(ids) == 20 and ids[-1] == vocab.token_ids[3]
    assert tokenizer.decode(ids[:cue_end]).endswith(vocab.cue_text)


def test_prompts_match_the_judge_and_are_cut_on_the_left(tokenizer, record):
    vocab = ScoreVocab.from_tokenizer(tokenizer, "result", (1, 5))
    enc = Encoder(tokenizer, vocab, "result", 512, 64)
    text = render_prompt(record, tokenizer, "result")
    assert enc.score_prompt_ids(record) == score_prompt_ids(tokenizer, text, vocab)
    short = Encoder(tokenizer, vocab, "result", 10, 64)
    assert short.prompt_ids(record) == enc.prompt_ids(record)[-10:]
    assert short.score_prompt_ids(record) == enc.score_prompt_ids(record)[-10:]


def test_missing_feedback_is_an_error(tokenizer, record):
    vocab = ScoreVocab.from_tokenizer(tokenizer, "result", (1, 5))
    record.reference_feedback = None
    with pytest.raises(ValueError, match="reference_feedback"):
        Encoder(tokenizer, vocab, "result", 512, 64).target(record)
