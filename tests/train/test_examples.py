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


def test_needed_fields_follow_the_method():
    from realjudge.train.examples import needed_fields

    assert needed_fields("sft") == ("gold", "reference_feedback")
    assert needed_fields("tract", 1) == ("gold", "reference_feedback")
    for method, stage in (("tract", 2), ("raft", 1), ("grpo", 1), ("real", 1)):
        assert needed_fields(method, stage) == ("gold",)


def test_training_bad_rows_name_every_row_and_field(tmp_path):
    import json

    from realjudge.data.loaders import load_records
    from realjudge.train.examples import format_bad_rows, training_bad_rows

    def row(i, **kw):
        base = {"id": f"r{i}", "instruction": "q", "response": "a", "gold": 3}
        base["reference_feedback"] = "fine"
        return json.dumps({**base, **kw})

    lines = [
        row(0),
        row(1, gold=None),
        row(2, reference_feedback=None),
        row(3, reference_feedback=None),
        "{broken",
        row(5, scale=[1, 10]),
        row(6),
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_records(str(path), skip_bad=True)
    bad = training_bad_rows(loaded, ("gold", "reference_feedback"), "sft")
    assert [(b.row, b.field) for b in bad] == [
        (2, "gold"),
        (3, "reference_feedback"),
        (4, "reference_feedback"),
        (5, "<row>"),
        (6, "scale"),
    ]
    text = format_bad_rows(bad, f"training data {path}")
    assert text.startswith(f"training data {path}: 5 bad rows")
    assert f"{path}, lines 3-4 (1-based), field 'reference_feedback'" in text
    assert f"{path}, line 2 (1-based), field 'gold'" in text and "'sft'" in text
    assert f"{path}, line 6 (1-based), field 'scale'" in text
    # RAFT does not read the feedback
    raft = training_bad_rows(loaded, ("gold",), "raft")
    assert [b.row for b in raft] == [2, 5, 6]


@pytest.mark.parametrize("legacy", [False, True], ids=["llama2", "mistral-legacy"])
def test_a_cut_sentencepiece_target_ends_with_the_cue_as_a_rollout_gets_it(record, legacy):
    """A target cut to ``max_new_tokens`` gets the cue's tokens as they follow its text (what
    ``finish_rollout`` appends to a rollout that missed its cue), not the cue encoded on its
    own, which a SentencePiece tokenizer opens with a word-start space of its own."""
    from sentencepiece_layouts import sentencepiece_tokenizer

    from realjudge.inference.rollout import finish_rollout

    tok = sentencepiece_tokenizer(legacy)
    vocab = ScoreVocab.from_tokenizer(tok, "result", (1, 5))
    record.reference_feedback = "the response is good. " * 30
    enc = Encoder(tok, vocab, "result", 512, 24)
    ids, cue_end = enc.target(record)
    assert len(ids) == 24 and ids[-1] == vocab.token_ids[3]
    text = tok.decode(ids[:cue_end])
    assert text.endswith(" " + vocab.cue_text) and not text.endswith("  " + vocab.cue_text)
    cut = ids[: cue_end - len(enc.forced_cue_ids(text))]
    assert finish_rollout(cut, tok, vocab, set()).response_ids == ids[:cue_end]
