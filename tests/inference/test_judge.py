"""The Judge on the tiny random model: RAIL math, score position, batching, CoT, decode, errors."""

from __future__ import annotations

import math

import pytest
import torch

import realjudge.inference.judge as judge_mod
from realjudge.data.records import JudgeRecord, Rubric
from realjudge.inference.judge import Judge, JudgeConfig, encode_prompt
from realjudge.scoring.prompts import render_prompt
from realjudge.scoring.rail import score_distribution
from realjudge.scoring.vocab import ScoreVocab


def expectation(probs):
    """sum_k k * p_k on the 1..5 scale."""
    return sum((j + 1) * p for j, p in enumerate(probs))


RUBRIC = Rubric("Does the answer list every item?", {k: f"{k} of 5 items" for k in range(1, 6)})


def make_records(n: int = 6) -> list[JudgeRecord]:
    """Records of clearly different prompt lengths (so batches need padding)."""
    return [
        JudgeRecord(
            id=f"r{i}",
            instruction="List the items. " + "Be thorough. " * (i * 3),
            response="apples, pears" + ", plums" * i,
            gold=float(1 + i % 5),
            rubric=RUBRIC,
        )
        for i in range(n)
    ]


def cfg(**kw) -> JudgeConfig:
    kw.setdefault("progress", False)
    kw.setdefault("backend", "transformers")
    return JudgeConfig(**kw)


def direct_distribution(model, tokenizer, record, normalize=True, fmt="result"):
    """The score distribution from a plain, unpadded forward pass on prompt + cue."""
    vocab = ScoreVocab.from_tokenizer(tokenizer, fmt)
    ids = encode_prompt(tokenizer, render_prompt(record, tokenizer, fmt) + vocab.cue_text)
    with torch.no_grad():
        logits = model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
    probs, leaked = score_distribution(logits, torch.tensor(vocab.token_ids), normalize)
    return probs.tolist(), float(leaked)


def test_rail_math_normalised(tiny_model, tokenizer):
    rows = Judge(tiny_model, tokenizer, cfg()).predict_all(make_records(4))
    for row in rows:
        p = row["distribution"]
        assert row["status"] == "ok" and len(p) == 5
        assert sum(p) == pytest.approx(1.0, abs=1e-5)
        assert row["expected_score"] == pytest.approx(expectation(p))
        assert row["prediction"] == row["expected_score"]
        assert 1.0 <= row["expected_score"] <= 5.0
        assert row["decoded_score"] == 1 + max(range(5), key=lambda j: p[j])
        assert 0.0 <= row["leaked_mass"] <= 1.0
        assert row["feedback"] == "" and row["samples"] == 1 and row["n_forced"] == 0


def test_rail_math_raw_sums_to_one_minus_leaked(tiny_model, tokenizer):
    records = make_records(3)
    norm = Judge(tiny_model, tokenizer, cfg()).predict_all(records)
    raw = Judge(tiny_model, tokenizer, cfg(normalize=False)).predict_all(records)
    for rn, rr in zip(norm, raw, strict=True):
        p = rr["distribution"]
        assert sum(p) == pytest.approx(1.0 - rr["leaked_mass"], abs=1e-5)
        assert rr["expected_score"] == pytest.approx(expectation(p))
        assert rr["leaked_mass"] == pytest.approx(rn["leaked_mass"], abs=1e-6)
        # raw = renormalised * in-scale mass (1 - leaked, here far below 1 for a random model)
        for a, b in zip(p, rn["distribution"], strict=True):
            assert a == pytest.approx(b * sum(p), rel=1e-4)


def test_score_is_read_right_after_the_cue(tiny_model, tokenizer):
    records = make_records(3)
    for normalize in (True, False):
        rows = Judge(tiny_model, tokenizer, cfg(normalize=normalize)).predict_all(records)
        for rec, row in zip(records, rows, strict=True):
            probs, leaked = direct_distribution(tiny_model, tokenizer, rec, normalize)
            assert row["distribution"] == pytest.approx(probs, abs=1e-5)
            assert row["leaked_mass"] == pytest.approx(leaked, abs=1e-5)


def test_batching_and_padding_do_not_change_results(tiny_model, tokenizer):
    records = make_records(7)
    batched = Judge(tiny_model, tokenizer, cfg(batch_size=4))
    batched.window = 5  # several windows, each sorted by length
    single = Judge(tiny_model, tokenizer, cfg(batch_size=1))
    a, b = batched.predict_all(records), single.predict_all(records)
    assert [r["id"] for r in a] == [r.id for r in records] == [r["id"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra["distribution"] == pytest.approx(rb["distribution"], abs=1e-4)
        assert ra["expected_score"] == pytest.approx(rb["expected_score"], abs=1e-4)
        assert ra["leaked_mass"] == pytest.approx(rb["leaked_mass"], abs=1e-4)


def test_left_truncation_keeps_the_cue(tiny_model, tokenizer):
    rec = make_records(3)[2]
    row = Judge(tiny_model, tokenizer, cfg(max_prompt_tokens=16)).predict_all([rec])[0]
    assert row["truncated"] is True and row["status"] == "ok"
    vocab = ScoreVocab.from_tokenizer(tokenizer)
    ids = encode_prompt(tokenizer, render_prompt(rec, tokenizer) + vocab.cue_text)[-16:]
    with torch.no_grad():
        logits = tiny_model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
    probs, _ = score_distribution(logits, torch.tensor(vocab.token_ids))
    assert row["distribution"] == pytest.approx(probs.tolist(), abs=1e-5)


def test_cot_on_a_random_model_forces_the_cue(tiny_model, tokenizer):
    rows = Judge(tiny_model, tokenizer, cfg(cot=True, max_new_tokens=6, batch_size=2)).predict_all(
        make_records(3)
    )
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"]
    for row in rows:
        assert row["status"] in ("ok", "forced_cue", "retokenized_cue")
        assert row["n_forced"] == (row["status"] != "ok")
        assert sum(row["distribution"]) == pytest.approx(1.0, abs=1e-5)
        assert isinstance(row["feedback"], str) and row["feedback"].endswith("[RESULT] ")
    assert sum(r["n_forced"] for r in rows) >= 1  # a random model never writes the cue


def _scripted_sample(texts_by_call, tokenizer):
    """A stand-in for rollout.sample that returns fixed continuations (per prompt, per sample)."""
    calls = []

    def fake_sample(model, tok, prompt_ids, *, num_samples=1, **kw):
        calls.append(
            {"prompt_ids": [list(p) for p in prompt_ids], "num_samples": num_samples, **kw}
        )
        texts = texts_by_call[len(calls) - 1]
        out = []
        for i in range(len(prompt_ids)):
            for s in range(num_samples):
                ids = tok.encode(texts[i][s], add_special_tokens=False)
                out.append(ids + [tok.eos_token_id] + tok.encode(" junk", add_special_tokens=False))
        return out

    return fake_sample, calls


def test_cot_reads_the_distribution_at_the_cue(tiny_model, tokenizer, monkeypatch):
    records = make_records(3)
    texts = [
        [
            ["Feedback: all items. [RESULT] 4 and more"],
            ["Feedback: rambling with no verdict"],
            ["Feedback: two missing. Score: 2"],
        ]
    ]
    fake, calls = _scripted_sample(texts, tokenizer)
    monkeypatch.setattr(judge_mod, "sample", fake)
    rows = Judge(tiny_model, tokenizer, cfg(cot=True, mode="decode", batch_size=8)).predict_all(
        records
    )
    assert calls[0]["greedy"] is True and calls[0]["num_samples"] == 1
    ok, forced, parsed = rows
    assert ok["status"] == "ok" and ok["decoded_score"] == 4 and ok["prediction"] == 4
    assert ok["feedback"] == "Feedback: all items. [RESULT] "
    assert ok["n_forced"] == 0 and ok["n_decode_fallback"] == 0
    assert forced["status"] == "forced_cue" and forced["n_forced"] == 1
    assert forced["n_decode_fallback"] == 1  # no score anywhere: argmax at the forced cue
    assert forced["decoded_score"] == 1 + max(range(5), key=lambda j: forced["distribution"][j])
    assert parsed["status"] == "forced_cue" and parsed["decoded_score"] == 2
    assert parsed["n_decode_fallback"] == 0

    # the distribution is the next-token distribution after prompt + feedback-up-to-cue
    vocab = ScoreVocab.from_tokenizer(tokenizer)
    for rec, row in zip(records, rows, strict=True):
        prompt = encode_prompt(tokenizer, render_prompt(rec, tokenizer))
        cut = tokenizer.encode(row["feedback"], add_special_tokens=False)
        with torch.no_grad():
            logits = tiny_model(torch.tensor([prompt + cut]), logits_to_keep=1).logits[0, -1]
        probs, _ = score_distribution(logits, torch.tensor(vocab.token_ids))
        assert row["distribution"] == pytest.approx(probs.tolist(), abs=1e-4)
        assert row["expected_score"] == pytest.approx(expectation(probs.tolist()), abs=1e-4)


def test_samples_are_averaged(tiny_model, tokenizer, monkeypatch):
    texts = [[["Feedback: fine. [RESULT] 5", "Feedback: weak. [RESULT] 2", "no verdict"]]]
    fake, calls = _scripted_sample(texts, tokenizer)
    monkeypatch.setattr(judge_mod, "sample", fake)
    row = Judge(tiny_model, tokenizer, cfg(cot=True, samples=3)).predict_all(make_records(1))[0]
    assert calls[0]["num_samples"] == 3
    assert calls[0]["greedy"] is False and calls[0]["temperature"] == 1.0
    assert row["samples"] == 3 and len(row["feedback"]) == 3
    assert row["status"] == "forced_cue" and row["n_forced"] == 1
    assert row["expected_score"] == pytest.approx(sum(row["sample_expected"]) / 3)
    assert row["sample_decoded"][:2] == [5, 2]
    assert row["decoded_score"] == pytest.approx(sum(row["sample_decoded"]) / 3)
    assert sum(row["distribution"]) == pytest.approx(1.0, abs=1e-5)
    dist_expected = expectation(row["distribution"])
    assert row["expected_score"] == pytest.approx(dist_expected, abs=1e-6)


def test_real_sampling_with_several_samples(tiny_model, tokenizer):
    rows = Judge(tiny_model, tokenizer, cfg(cot=True, samples=2, max_new_tokens=4)).predict_all(
        make_records(2)
    )
    for row in rows:
        assert row["samples"] == 2 and len(row["sample_expected"]) == 2
        assert row["expected_score"] == pytest.approx(sum(row["sample_expected"]) / 2)


def test_score_only_decode_mode(tiny_model, tokenizer):
    rows = Judge(tiny_model, tokenizer, cfg(mode="decode")).predict_all(make_records(3))
    for row in rows:
        assert row["prediction"] == row["decoded_score"]
        assert row["decoded_score"] == 1 + max(range(5), key=lambda j: row["distribution"][j])
        assert row["n_decode_fallback"] == 0


def test_a_bad_item_becomes_an_error_row(tiny_model, tokenizer, monkeypatch):
    records = make_records(4)
    records[1].scale = (1, 10)  # "10" is two tokens for SmolLM2: no score vocabulary
    judge = Judge(tiny_model, tokenizer, cfg(batch_size=4))
    real_run = judge.backend.run

    def flaky_run(items):
        if any(it.record.id == "r3" for it in items):
            raise RuntimeError("boom on r3")
        return real_run(items)

    monkeypatch.setattr(judge.backend, "run", flaky_run)
    rows = judge.predict_all(records)
    assert [r["id"] for r in rows] == ["r0", "r1", "r2", "r3"]
    assert rows[0]["status"] == "ok" and rows[2]["status"] == "ok"
    assert rows[1]["status"].startswith("error: ScoreVocabError")
    assert rows[3]["status"] == "error: RuntimeError: boom on r3"
    assert rows[3]["prediction"] is None and rows[3]["gold"] == records[3].gold


def test_generator_input_and_progress_bar(tiny_model, tokenizer, capsys):
    records = make_records(3)
    rows = list(Judge(tiny_model, tokenizer, cfg(progress=True)).predict(iter(records)))
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"]


def test_config_validation():
    with pytest.raises(ValueError):
        JudgeConfig(mode="argmax")
    with pytest.raises(ValueError):
        JudgeConfig(fmt="nope")
    with pytest.raises(ValueError):
        JudgeConfig(cot=True, samples=4, temperature=0.0)
    assert JudgeConfig(cot=True, samples=4).effective_temperature == 1.0
    assert JudgeConfig(cot=True).greedy
    assert JudgeConfig(samples=4).effective_samples == 1
    assert not math.isnan(JudgeConfig(temperature=0.7).effective_temperature)


def test_rows_stream_before_the_window_is_done(tiny_model, tokenizer, monkeypatch):
    records = make_records(4)  # prompt lengths grow with the index: input order = length order
    judge = Judge(tiny_model, tokenizer, cfg(batch_size=1))
    calls = []
    real_run = judge.backend.run
    monkeypatch.setattr(judge.backend, "run", lambda items: calls.append(1) or real_run(items))
    stream = judge.predict(records)
    first = next(stream)
    assert first["id"] == "r0" and len(calls) == 1
    assert [r["id"] for r in stream] == ["r1", "r2", "r3"] and len(calls) == 4


# --- settings that follow the checkpoint --------------------------------------------------


def write_meta(directory, **meta):
    import json

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "realjudge.json").write_text(json.dumps(meta))
    return directory


@pytest.mark.parametrize("method", ["tract", "grpo", "real"])
def test_a_cot_trained_checkpoint_records_cot_samples_and_budget(tmp_path, method):
    from realjudge.models import read_judge_defaults

    path = write_meta(
        tmp_path / method,
        method=method,
        format="overall",
        rail_normalize=False,
        config={"method": method, "max_new_tokens": 48},
    )
    assert read_judge_defaults(path) == {
        "fmt": "overall",
        "normalize": False,
        "cot": True,
        "samples": 1,
        "max_new_tokens": 48,
    }


def test_checkpoints_trained_without_cot_and_hand_written_files(tmp_path):
    from realjudge.models import read_judge_defaults

    for method in ("sft", "raft"):
        path = write_meta(tmp_path / method, method=method, config={"max_new_tokens": 48})
        assert "cot" not in read_judge_defaults(path)  # read score-only (the default)
    # the method may sit in the config only; the file may say cot / samples / budget itself
    path = write_meta(tmp_path / "c", config={"method": "grpo", "max_new_tokens": 32})
    assert read_judge_defaults(path)["cot"] is True
    path = write_meta(tmp_path / "h", cot=True, samples=4, max_new_tokens=16)
    assert read_judge_defaults(path) == {"cot": True, "samples": 4, "max_new_tokens": 16}
    path = write_meta(tmp_path / "off", method="real", cot=False)
    assert read_judge_defaults(path) == {"cot": False}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "realjudge.json").write_text('["not", "an", "object"]')
    assert read_judge_defaults(bad) == {}
    (bad / "realjudge.json").write_text('{"cot": true, "samples": "many"}')
    assert read_judge_defaults(bad) == {}


def test_unset_settings_follow_the_model_and_given_ones_win():
    from realjudge.inference.settings import (
        FALLBACK,
        FROM_MODEL,
        GIVEN,
        describe_reading,
        setting_sources,
    )

    model = {"cot": True, "samples": 3, "max_new_tokens": 40, "fmt": "overall"}
    unset = JudgeConfig()
    filled = unset.with_model_defaults(model)
    assert (filled.cot, filled.samples, filled.max_new_tokens) == (True, 3, 40)
    assert filled.fmt == "overall" and filled.normalize is True
    assert filled.effective_temperature == 1.0  # several samples: sampling
    plain = unset.with_model_defaults({})
    assert (plain.cot, plain.samples, plain.max_new_tokens, plain.fmt) == (False, 1, 256, "result")
    given = JudgeConfig(cot=False, max_new_tokens=8).with_model_defaults(model)
    assert (given.cot, given.samples, given.max_new_tokens) == (False, 3, 8)
    assert given.effective_samples == 1
    sources = setting_sources(JudgeConfig(cot=False), model)
    assert sources == {
        "cot": GIVEN,
        "samples": FROM_MODEL,
        "max_new_tokens": FROM_MODEL,
        "fmt": FROM_MODEL,
        "normalize": FALLBACK,
    }
    text = describe_reading(filled, setting_sources(unset, model))
    assert text.startswith("CoT (3 samples, temperature 1, up to 40 new tokens) + RAIL")
    assert text.endswith("cot, samples, max_new_tokens, fmt from the model")
    assert describe_reading(given, sources).startswith("score-only + RAIL, format overall")
    assert "samples" not in describe_reading(given, sources)  # irrelevant without a CoT
    with pytest.raises(ValueError, match="several samples"):
        JudgeConfig(temperature=0.0).with_model_defaults(model)


def test_load_judge_reads_a_cot_checkpoint_as_trained(tmp_path, tiny_model, tokenizer):
    from realjudge.inference.judge import load_judge

    path = tmp_path / "ckpt"
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    write_meta(path, method="tract", format="result", config={"max_new_tokens": 6})
    judge = load_judge(str(path), cfg(), device="cpu")
    assert judge.config.cot is True and judge.config.max_new_tokens == 6
    assert judge.sources["cot"] == "model" and "from the model" in judge.reading
    row = judge.predict_all(make_records(1))[0]
    assert row["feedback"].endswith("[RESULT] ") and row["samples"] == 1
    judge = load_judge(str(path), cfg(cot=False), device="cpu")
    assert judge.config.cot is False and judge.sources["cot"] == "given"
    assert judge.predict_all(make_records(1))[0]["feedback"] == ""


def test_a_cue_the_judge_wrote_is_read_from_the_generation_pass(
    tiny_model, tokenizer, monkeypatch, scripted_generate
):
    """Rows that write the canonical cue themselves take their distribution from the
    generation pass; the others run only their forced cue on the generation's KV cache: no
    forward pass over prompt + feedback, and both give what that forward pass gives
    (``reread_cue=True``)."""
    vocab = ScoreVocab.from_tokenizer(tokenizer)
    scripted_generate(
        tokenizer.encode("Feedback: fine " + vocab.cue_text, add_special_tokens=False),
        lambda row: row != 1,
    )
    forwarded = []
    inner = judge_mod.judge_forward

    def counting(model, batch):
        forwarded.append(batch.input_ids.shape[0])
        return inner(model, batch)

    monkeypatch.setattr(judge_mod, "judge_forward", counting)
    records = make_records(3)
    common = dict(cot=True, max_new_tokens=12, batch_size=8)
    fast = Judge(tiny_model, tokenizer, cfg(**common)).predict_all(records)
    assert forwarded == []  # row 1's forced cue ran on the generation's cache
    assert [r["status"] for r in fast] == ["ok", "forced_cue", "ok"]
    forwarded.clear()
    slow = Judge(tiny_model, tokenizer, cfg(reread_cue=True, **common)).predict_all(records)
    assert forwarded == [3]
    for a, b in zip(fast, slow, strict=True):
        assert a["feedback"] == b["feedback"]
        assert a["distribution"] == pytest.approx(b["distribution"], abs=1e-5)
        assert a["expected_score"] == pytest.approx(b["expected_score"], abs=1e-5)


def test_without_the_recorder_a_cue_the_judge_wrote_is_read_from_the_kv_cache(
    tiny_model, tokenizer, monkeypatch, scripted_generate
):
    """When the generation pass records no logits (a batch of mixed score scales, or a model
    whose generation config adds a logits processor before the recorder), a row that wrote its
    cue is read from the KV cache too: its last token runs again (the whole response was
    cached: nothing was left to run, and every such row failed)."""
    vocab = ScoreVocab.from_tokenizer(tokenizer)
    scripted_generate(
        tokenizer.encode("Feedback: fine " + vocab.cue_text, add_special_tokens=False),
        lambda row: row != 1,
    )
    monkeypatch.setattr(judge_mod, "CueLogitsRecorder", lambda score_ids: None)
    records = make_records(3)
    common = dict(cot=True, max_new_tokens=12, batch_size=8)
    cached = Judge(tiny_model, tokenizer, cfg(**common)).predict_all(records)
    assert [r["status"] for r in cached] == ["ok", "forced_cue", "ok"]
    slow = Judge(tiny_model, tokenizer, cfg(reread_cue=True, **common)).predict_all(records)
    for a, b in zip(cached, slow, strict=True):
        assert a["distribution"] == pytest.approx(b["distribution"], abs=1e-5)


def test_sampled_chains_of_an_item_do_not_depend_on_its_batch(tiny_model, tokenizer):
    """``--samples K`` draws each record's chains from its own generator (seed, id)."""
    records = make_records(4)
    judge = Judge(tiny_model, tokenizer, cfg(cot=True, samples=2, max_new_tokens=8, seed=0))
    alone = judge.predict_all(records[:1])[0]
    together = judge.predict_all(records)[0]
    assert alone["feedback"] == together["feedback"]
    assert alone["expected_score"] == pytest.approx(together["expected_score"], abs=1e-5)


@pytest.mark.parametrize("legacy", [False, True], ids=["llama2", "mistral-legacy"])
def test_a_sentencepiece_score_prompt_ends_with_the_cue_as_written(legacy):
    """After a template that ends with a newline, the cue is not given a word-start space of
    its own: the prompt decodes to the prompt text and the cue."""
    from sentencepiece_layouts import sentencepiece_tokenizer

    from realjudge.inference.judge import score_prompt_ids

    tok = sentencepiece_tokenizer(legacy)
    vocab = ScoreVocab.from_tokenizer(tok, "result", (1, 5))
    for text in ("Judge the response.\n", "Judge the response. "):
        ids = score_prompt_ids(tok, text, vocab)
        assert tok.decode(ids) == text + vocab.cue_text
