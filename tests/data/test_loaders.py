"""Tests for realjudge.data.loaders: every source, bad rows, splitting, JSONL round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realjudge.data.loaders import (
    FORMAT_FEEDBACK_COLLECTION,
    FORMAT_PROMETHEUS,
    FORMAT_RECORDS,
    DataError,
    load_records,
    parse_prometheus_prompt,
    split_by_group,
    write_jsonl,
)
from realjudge.data.records import JudgeRecord, Rubric

VICUNA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vicuna_eval.json"


def fc_row(i: int, score: int | str = 3, question: int | None = None) -> dict:
    """A row in the Feedback-Collection / Feedback-Bench schema."""
    q = i if question is None else question
    row = {
        "orig_instruction": f"Question {q}: explain topic {q}.",
        "orig_response": f"Answer number {i}.",
        "orig_reference_answer": f"The perfect answer to {q}.",
        "orig_criteria": "Is the answer clear?",
        "orig_feedback": f"Feedback for {i}.",
        "orig_score": score,
        "instruction": f"###Task Description: ... rendered prompt {i}",
        "output": f"Feedback for {i}. [RESULT] {score}",
    }
    for k in range(1, 6):
        row[f"orig_score{k}_description"] = f"level {k} clarity"
    return row


def check_fc_records(records: list[JudgeRecord], rows: list[dict]) -> None:
    assert len(records) == len(rows)
    for rec, row in zip(records, rows, strict=True):
        assert rec.instruction == row["orig_instruction"]
        assert rec.response == row["orig_response"]
        assert rec.reference_answer == row["orig_reference_answer"]
        assert rec.reference_feedback == row["orig_feedback"]
        assert rec.gold == float(row["orig_score"])
        assert rec.rendered_prompt is None
        assert rec.rubric == Rubric(
            "Is the answer clear?", {k: f"level {k} clarity" for k in range(1, 6)}
        )
        assert rec.scale == (1, 5)
    assert len({r.id for r in records}) == len(records)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- Feedback-Collection schema: json, jsonl, parquet ----------------------------------------


def test_feedback_collection_json_list(tmp_path):
    rows = [fc_row(0, 1, question=7), fc_row(1, "5", question=7), fc_row(2, 4)]
    path = tmp_path / "fc.json"
    path.write_text(json.dumps(rows))
    res = load_records(str(path))
    assert res.format == FORMAT_FEEDBACK_COLLECTION
    assert res.source == str(path)
    assert res.bad_rows == []
    check_fc_records(res.records, rows)
    # same orig_instruction -> same group; different -> different
    assert res.records[0].group_id == res.records[1].group_id != res.records[2].group_id


def test_feedback_collection_jsonl(tmp_path):
    rows = [fc_row(i, 1 + i % 5) for i in range(6)]
    path = write_lines(tmp_path / "fc.jsonl", [json.dumps(r) for r in rows])
    res = load_records(path)
    assert res.format == FORMAT_FEEDBACK_COLLECTION
    check_fc_records(res.records, rows)


def test_feedback_collection_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [fc_row(i, str(1 + i % 5)) for i in range(5)]  # the hub stores orig_score as text
    path = tmp_path / "fc.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    res = load_records(str(path), limit=3)
    assert res.format == FORMAT_FEEDBACK_COLLECTION
    check_fc_records(res.records, rows[:3])


def test_feedback_without_orig_feedback_uses_output(tmp_path):
    row = fc_row(0, 4)
    del row["orig_feedback"]
    path = tmp_path / "fc.json"
    path.write_text(json.dumps([row]))
    (rec,) = load_records(str(path)).records
    assert rec.reference_feedback == "Feedback for 0."


# --- hub ids ----------------------------------------------------------------------------------


def test_hub_id_through_datasets(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [fc_row(i, str(1 + i % 5)) for i in range(4)]
    calls = []

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    res = load_records("prometheus-eval/Feedback-Bench")
    assert calls == [("prometheus-eval/Feedback-Bench", "train")]
    assert res.format == FORMAT_FEEDBACK_COLLECTION
    assert res.source == "hf:prometheus-eval/Feedback-Bench[train]"
    check_fc_records(res.records, rows)

    res = load_records("prometheus-eval/Feedback-Collection", split="train", limit=2)
    assert calls[-1] == ("prometheus-eval/Feedback-Collection", "train")
    assert len(res.records) == 2


def test_hub_id_without_network_names_the_id(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(name, split=None, **kwargs):
        raise ConnectionError("Couldn't reach 'https://huggingface.co'")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="prometheus-eval/Feedback-Bench"):
        load_records("prometheus-eval/Feedback-Bench")


def test_hub_bad_row_is_reported_with_index(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [fc_row(0, "3"), fc_row(1, "9")]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(rows))
    with pytest.raises(DataError) as e:
        load_records("owner/name")
    msg = str(e.value)
    assert "hf:owner/name[train]" in msg and "row index 1 (0-based)" in msg
    assert "orig_score" in msg


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_records(str(tmp_path / "nope.jsonl"))


# --- own records: round trip ------------------------------------------------------------------


def make_records() -> list[JudgeRecord]:
    return [
        JudgeRecord(
            id="a",
            instruction="Say hi.",
            response="Hi!",
            gold=4.5,
            rubric=Rubric("Friendly?", {1: "rude", 2: "cold", 3: "ok", 4: "warm", 5: "lovely"}),
            reference_answer="Hello there!",
            reference_feedback="Warm enough.",
            group_id="g1",
            meta={"src": "unit", "n": [1, 2]},
        ),
        JudgeRecord(id="b", instruction="Count to 3.", response="1 2 3", gold=None, scale=(0, 10)),
        JudgeRecord(
            id="c", instruction="x", response="y", gold=2, rendered_prompt="PROMPT ünïcode"
        ),
    ]


def test_records_jsonl_round_trip(tmp_path):
    records = make_records()
    path = write_jsonl(records, tmp_path / "sub" / "mine.jsonl")
    res = load_records(str(path))
    assert res.format == FORMAT_RECORDS
    assert res.records == records
    assert [r.to_dict() for r in res.records] == [r.to_dict() for r in records]
    assert res.records[1].gold is None  # gold may be absent for `realjudge score`
    assert load_records(str(path), limit=2).records == records[:2]


# --- bad rows ---------------------------------------------------------------------------------


def bad_file(tmp_path) -> Path:
    good = [r.to_dict() for r in make_records()]
    missing = dict(good[0], id="m")
    del missing["response"]
    out_of_range = dict(good[0], id="o", gold=7)
    return write_lines(
        tmp_path / "bad.jsonl",
        [
            json.dumps(good[0]),  # line 1
            '{"id": "broken", "instruction": ',  # line 2: invalid JSON
            json.dumps(missing),  # line 3: missing response
            json.dumps(good[1]),  # line 4
            json.dumps(out_of_range),  # line 5: gold outside 1..5
            json.dumps(good[2]),  # line 6
        ],
    )


def test_bad_json_line_raises_with_file_row_field(tmp_path):
    path = bad_file(tmp_path)
    with pytest.raises(DataError) as e:
        load_records(str(path))
    msg = str(e.value)
    assert str(path) in msg and "line 2 (1-based)" in msg and "invalid JSON" in msg


def test_missing_field_raises_with_file_row_field(tmp_path):
    good = [r.to_dict() for r in make_records()]
    del good[1]["response"]
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(d) for d in good])
    with pytest.raises(DataError) as e:
        load_records(str(path))
    msg = str(e.value)
    assert str(path) in msg and "line 2" in msg and "'response'" in msg and "missing" in msg


def test_gold_out_of_range_raises_with_file_row_field(tmp_path):
    good = [r.to_dict() for r in make_records()]
    good[2]["gold"] = 6.0
    path = write_lines(tmp_path / "g.jsonl", [json.dumps(d) for d in good])
    with pytest.raises(DataError) as e:
        load_records(str(path))
    msg = str(e.value)
    assert str(path) in msg and "line 3" in msg and "'gold'" in msg and "outside" in msg
    # gold 7 is fine on a 0..10 scale
    good[2]["gold"], good[2]["scale"] = 7, [0, 10]
    write_lines(path, [json.dumps(d) for d in good])
    assert load_records(str(path)).records[2].gold == 7.0


def test_skip_bad_keeps_good_rows_and_counts_bad(tmp_path):
    path = bad_file(tmp_path)
    res = load_records(str(path), skip_bad=True)
    assert [r.id for r in res.records] == ["a", "b", "c"]
    assert [(b.row, b.field) for b in res.bad_rows] == [(2, "<row>"), (3, "response"), (5, "gold")]
    assert all(b.source == str(path) for b in res.bad_rows)
    assert "line 5 (1-based)" in str(res.bad_rows[2])


def test_unreadable_numbers_and_deep_nesting_are_bad_rows_not_crashes(tmp_path):
    good = [r.to_dict() for r in make_records()[:2]]
    deep = (
        '{"id": "d", "instruction": "x", "response": "y", "meta": ' + "[" * 5000 + "]" * 5000 + "}"
    )
    huge = json.dumps({**good[0], "id": "h", "gold": "N"}).replace('"N"', "1" + "0" * 400)
    digits = json.dumps({**good[0], "id": "g", "gold": "N"}).replace('"N"', "1" * 5000)
    lines = [json.dumps(good[0]), deep, huge, digits, json.dumps(good[1])]
    path = write_lines(tmp_path / "odd.jsonl", lines)
    res = load_records(str(path), skip_bad=True)
    assert [r.id for r in res.records] == [good[0]["id"], good[1]["id"]]
    assert [(b.row, b.field) for b in res.bad_rows] == [(2, "<row>"), (3, "gold"), (4, "<row>")]
    assert "too deeply" in str(res.bad_rows[0]) and "outside the scale" in str(res.bad_rows[1])


def test_a_json_list_nested_too_deeply_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(DataError, match="could not be read as JSON"):
        load_records(str(path))
    # JSON lines in a .json file: the row is named, the others are kept
    good = make_records()[0].to_dict()
    deep = '{"id": "d", "instruction": "x", "meta": ' + "[" * 5000 + "]" * 5000 + "}"
    lines = write_lines(tmp_path / "lines.json", [deep, json.dumps(good)])
    res = load_records(str(lines), skip_bad=True)
    assert [r.id for r in res.records] == [good["id"]]
    assert [(b.row, b.field) for b in res.bad_rows] == [(1, "<row>")]


def test_json_list_bad_row_uses_zero_based_index(tmp_path):
    rows = [fc_row(0), fc_row(1), fc_row(2)]
    del rows[1]["orig_response"]
    path = tmp_path / "fc.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError) as e:
        load_records(str(path))
    assert "row index 1 (0-based)" in str(e.value) and "orig_response" in str(e.value)
    res = load_records(str(path), skip_bad=True)
    assert len(res.records) == 2 and [b.row for b in res.bad_rows] == [1]


def test_mismatching_row_is_bad(tmp_path):
    rows = [make_records()[0].to_dict(), fc_row(1)]  # a Feedback-Collection row in a record file
    path = write_lines(tmp_path / "mix.jsonl", [json.dumps(r) for r in rows])
    res = load_records(str(path), skip_bad=True)
    assert len(res.records) == 1 and len(res.bad_rows) == 1
    assert res.bad_rows[0].row == 2 and res.bad_rows[0].field == "id"


def test_empty_files_are_clear_errors(tmp_path):
    for name, text in [("e.jsonl", ""), ("e.json", "[]"), ("w.jsonl", "\n  \n")]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataError, match="empty"):
            load_records(str(path))


# --- Prometheus benchmark layout --------------------------------------------------------------


PROMPT = """###Task Description:
An instruction, a response to evaluate, a reference answer that gets a score of 5, and a score rubric are given.
2. After writing a feedback, write a score that is an integer between 1 and 5.

###The instruction to evaluate:
Name a colour.

###Response to evaluate:
Blue.
###Feedback: a line in the response that looks like a header

###Reference Answer (Score 5):
Red.

###Score Rubrics:
[Is a colour named?]
Score 1: No colour.
Score 2: Vague.
Score 3: Sort of.
Score 4: A colour,
spanning two lines.
Score 5: A clear colour.

###Feedback: """


def test_prometheus_layout_with_int_score(tmp_path):
    rows = [
        {"idx": 3, "instruction": PROMPT, "gpt4_score": [4, 5, 5], "gpt4_feedback": ["f1", "f2"]},
        {"idx": 3, "instruction": PROMPT, "gpt4_score": 2, "response_source": "m"},
    ]
    path = tmp_path / "flask_eval.json"
    path.write_text(json.dumps(rows))
    res = load_records(str(path))
    assert res.format == FORMAT_PROMETHEUS
    a, b = res.records
    assert a.gold == pytest.approx(14 / 3) and b.gold == 2.0
    assert a.rendered_prompt == PROMPT
    assert a.instruction == "Name a colour."
    assert a.response == "Blue.\n###Feedback: a line in the response that looks like a header"
    assert a.reference_answer == "Red."
    assert a.rubric.criterion == "Is a colour named?"
    assert a.rubric.descriptions[4] == "A colour,\nspanning two lines."
    assert sorted(a.rubric.descriptions) == [1, 2, 3, 4, 5]
    assert a.reference_feedback == "f1" and a.meta["gpt4_feedback"] == ["f1", "f2"]
    assert b.reference_feedback is None and b.meta["response_source"] == "m"
    assert a.group_id == b.group_id == "3" and a.id != b.id


def test_prometheus_unparsable_prompt_is_kept_verbatim(tmp_path):
    assert parse_prometheus_prompt("just some text") == {"scale": (1, 5)}
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"idx": 1, "instruction": "just some text", "gpt4_score": 3}]))
    (rec,) = load_records(str(path)).records
    assert rec.rendered_prompt == rec.instruction == "just some text"
    assert rec.response == "" and rec.rubric is None and rec.meta["prompt_parsed"] is False


def test_prometheus_score_out_of_range(tmp_path):
    rows = [{"idx": 1, "instruction": PROMPT, "gpt4_score": [4, 6, 5]}]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError) as e:
        load_records(str(path))
    assert "row index 0" in str(e.value) and "'gpt4_score'" in str(e.value)


@pytest.mark.skipif(not VICUNA.is_file(), reason=f"{VICUNA} is absent")
def test_real_vicuna_bench():
    raw = json.loads(VICUNA.read_text())
    res = load_records(str(VICUNA))
    assert res.format == FORMAT_PROMETHEUS and res.bad_rows == []
    assert len(res.records) == 320
    for rec, row in zip(res.records, raw, strict=True):
        assert rec.gold == pytest.approx(sum(row["gpt4_score"]) / len(row["gpt4_score"]))
        assert rec.rendered_prompt == row["instruction"]
        assert rec.reference_feedback == row["gpt4_feedback"][0]
        assert rec.meta["category"] == row["category"]
        assert rec.response and rec.response in row["instruction"]
        assert rec.instruction and "###" not in rec.instruction
        assert rec.rubric is not None and sorted(rec.rubric.descriptions) == [1, 2, 3, 4, 5]
        assert rec.reference_answer
    assert {r.group_id for r in res.records} == {str(i) for i in range(1, 81)}
    first = res.records[0]
    assert first.instruction == "How can I improve my time management skills?"
    assert first.response.startswith("Improving your time management skills")
    assert first.response.endswith("more productive and efficient.")


# --- embedded ---------------------------------------------------------------------------------


def test_embedded_sources():
    res = load_records("embedded", limit=10)
    assert res.source == "embedded:test" and len(res.records) == 10
    ood = load_records("embedded-ood", limit=5)
    assert ood.source == "embedded:ood" and len(ood.records) == 5
    with pytest.raises(DataError):
        load_records("embedded-ood", split="train")
    with pytest.raises(DataError):
        load_records("embedded", split="dev")


# --- split_by_group ---------------------------------------------------------------------------


def group_records() -> list[JudgeRecord]:
    recs = [
        JudgeRecord(id=f"r{i}", instruction="q", response="a", group_id=f"g{i % 7}")
        for i in range(35)
    ]
    recs += [JudgeRecord(id=f"solo{i}", instruction="q", response="a") for i in range(5)]
    return recs


def test_split_by_group_disjoint_and_deterministic():
    recs = group_records()
    train, test = split_by_group(recs, 0.25, seed=1)
    assert len(train) + len(test) == len(recs)
    assert {r.id for r in train}.isdisjoint({r.id for r in test})
    train_groups = {r.group_id or r.id for r in train}
    test_groups = {r.group_id or r.id for r in test}
    assert train_groups.isdisjoint(test_groups)
    assert len(test_groups) == 3  # 12 groups * 0.25
    again = split_by_group(list(reversed(recs)), 0.25, seed=1)
    assert {r.id for r in again[1]} == {r.id for r in test}  # order-independent
    assert [r.id for r in split_by_group(recs, 0.25, seed=1)[1]] == [r.id for r in test]
    others = {frozenset(r.id for r in split_by_group(recs, 0.25, seed=s)[1]) for s in range(6)}
    assert len(others) > 1  # the seed matters


def test_split_by_group_edges():
    recs = group_records()
    assert split_by_group(recs, 0.0, seed=0) == (recs, [])
    assert split_by_group(recs, 1.0, seed=0) == ([], recs)
    train, test = split_by_group(recs, 0.01, seed=0)
    assert test and train
    with pytest.raises(ValueError):
        split_by_group(recs, 1.5, seed=0)


# --- bytes on disk: invalid UTF-8, BOM, CRLF, empty, directory, a 1 MB row -------------------


def record_lines(n: int = 4) -> list[bytes]:
    return [
        json.dumps({"id": f"r{i}", "instruction": f"q{i}", "response": "a"}).encode()
        for i in range(n)
    ]


def test_invalid_utf8_byte_names_file_line_field_and_offset(tmp_path):
    lines = record_lines()
    lines[2] = b'{"id": "r2", "instruction": "q2", "response": "caf\xe9"}'
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    offset = path.read_bytes().index(b"\xe9")
    with pytest.raises(DataError) as e:
        load_records(str(path))
    msg = str(e.value)
    assert str(path) in msg and "line 3 (1-based)" in msg and "'response'" in msg
    assert "0xe9" in msg and f"byte offset {offset}" in msg
    res = load_records(str(path), skip_bad=True)
    assert [r.id for r in res.records] == ["r0", "r1", "r3"]
    assert res.record_rows == [1, 2, 4] and [b.row for b in res.bad_rows] == [3]


def test_invalid_utf8_that_breaks_the_json_is_still_located(tmp_path):
    lines = record_lines(2)
    path = tmp_path / "broken.jsonl"
    path.write_bytes(lines[0] + b'\n{"id": "x\xff", "instruction": 3\n' + lines[1] + b"\n")
    res = load_records(str(path), skip_bad=True)
    (bad,) = res.bad_rows
    offset = path.read_bytes().index(b"\xff")
    assert bad.row == 2 and f"byte offset {offset}" in bad.message
    assert [r.id for r in res.records] == ["r0", "r1"]


def test_invalid_utf8_in_a_json_list_keeps_the_other_rows(tmp_path):
    lines = record_lines(4)
    lines[1] = b'{"id": "r1", "instruction": "\xc3(", "response": "a"}'
    path = tmp_path / "list.json"
    path.write_bytes(b"[" + b",\n".join(lines) + b"]")
    res = load_records(str(path), skip_bad=True)
    assert [r.id for r in res.records] == ["r0", "r2", "r3"]
    (bad,) = res.bad_rows
    assert bad.row == 1 and bad.field == "instruction" and bad.row_kind == "index"
    offset = path.read_bytes().index(b"\xc3")
    assert f"byte offset {offset}" in bad.message


def test_unpaired_surrogate_escape_is_a_bad_row(tmp_path):
    path = write_lines(
        tmp_path / "s.jsonl",
        [
            json.dumps({"id": "s\udce9", "instruction": "q", "response": "a"}),
            *map(bytes.decode, record_lines(1)),
        ],
    )
    res = load_records(str(path), skip_bad=True)
    assert [r.id for r in res.records] == ["r0"]
    assert res.bad_rows[0].field == "id" and "surrogate" in res.bad_rows[0].message


def test_bom_and_crlf_line_ends(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(record_lines(3)) + b"\r\n")
    res = load_records(str(path))
    assert [r.id for r in res.records] == ["r0", "r1", "r2"] and not res.bad_rows
    assert all(not r.response.endswith("\r") for r in res.records)
    lst = tmp_path / "bom.json"
    lst.write_bytes(b"\xef\xbb\xbf[" + b",\r\n".join(record_lines(2)) + b"]\r\n")
    assert [r.id for r in load_records(str(lst)).records] == ["r0", "r1"]
    # the offset of a bad byte counts the BOM
    bad = tmp_path / "bom-bad.jsonl"
    bad.write_bytes(b"\xef\xbb\xbf" + b'{"id": "z", "instruction": "\xe9", "response": "a"}\r\n')
    offset = bad.read_bytes().index(b"\xe9")
    with pytest.raises(DataError, match=f"byte offset {offset}"):
        load_records(str(bad))


def test_utf16_empty_file_and_directory_are_clear_errors(tmp_path):
    utf16 = tmp_path / "u16.jsonl"
    utf16.write_bytes('{"id": "a"}\n'.encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        load_records(str(utf16))
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_records(str(empty), skip_bad=True)
    bom_only = tmp_path / "bom-only.jsonl"
    bom_only.write_bytes(b"\xef\xbb\xbf\r\n")
    with pytest.raises(DataError, match="empty"):
        load_records(str(bom_only))
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        load_records(str(folder), skip_bad=True)


def test_a_1mb_row_is_read_whole(tmp_path):
    big = "word " * 220_000  # 1.1 MB
    lines = record_lines(3)
    lines[1] = json.dumps({"id": "big", "instruction": "q", "response": big}).encode()
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    res = load_records(str(path))
    assert [r.id for r in res.records] == ["r0", "big", "r2"]
    assert res.records[1].response == big and len(big) > 1_000_000


def test_cr_only_line_ends_are_line_ends(tmp_path):
    lines = record_lines(4)
    lines[2] = b'{"id": "r2", "instruction": "caf\xe9", "response": "a"}'
    path = tmp_path / "mac.jsonl"
    path.write_bytes(b"\r".join(lines) + b"\r")
    res = load_records(str(path), skip_bad=True)
    assert [r.id for r in res.records] == ["r0", "r1", "r3"]
    assert res.record_rows == [1, 2, 4] and res.row_kind == "line"
    (bad,) = res.bad_rows
    assert bad.row == 3 and bad.field == "instruction"
    assert f"byte offset {path.read_bytes().index(bytes([0xE9]))}" in bad.message
    # the three line ends mixed, a blank CR-only line counted as a line
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(lines[0] + b"\r\n" + lines[1] + b"\r\r" + lines[3] + b"\n")
    res = load_records(str(mixed))
    assert [r.id for r in res.records] == ["r0", "r1", "r3"] and res.record_rows == [1, 2, 4]


def test_line_ends_split_across_read_chunks():
    import io

    from realjudge.data.loaders import _iter_lines

    data = b"ab\r\ncd\ref\n\r\rg\r"
    for size in range(1, len(data) + 1):
        got = list(_iter_lines(io.BytesIO(data), chunk_size=size))
        assert got == [b"ab\r\n", b"cd\r", b"ef\n", b"\r", b"\r", b"g\r"], size


def test_corrupt_parquet_names_the_file_and_keeps_the_readable_row_groups(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {"id": f"r{i}", "instruction": f"question-{i:04d}", "response": "a", "gold": 3.0}
        for i in range(30)
    ]
    path = tmp_path / "corrupt.parquet"
    pq.write_table(
        pa.Table.from_pylist(rows),
        path,
        row_group_size=10,
        compression="none",
        use_dictionary=False,
    )
    raw = bytearray(path.read_bytes())
    at = raw.index(b"question-0012")  # a value of row group 1, stored PLAIN: length, bytes
    raw[at - 4 : at] = b"\xff\xff\xff\x7f"  # a length far past the page's end
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        load_records(str(path))
    msg = str(e.value)
    assert str(path) in msg and "row index 10 (0-based)" in msg and "row group 1" in msg
    res = load_records(str(path), skip_bad=True)
    assert [r.id for r in res.records] == [f"r{i}" for i in (*range(10), *range(20, 30))]
    assert [b.row for b in res.bad_rows] == list(range(10, 20))
    assert all(b.row_kind == "index" and "corrupt" in b.message for b in res.bad_rows)


def test_records_gold_given_as_score_is_read(tmp_path):
    path = write_lines(
        tmp_path / "score.jsonl",
        [
            json.dumps({"id": "a", "instruction": "q", "response": "r", "gold": 4}),
            json.dumps({"id": "b", "instruction": "q", "response": "r", "score": 2}),
            json.dumps({"id": "c", "instruction": "q", "response": "r", "score": "3"}),
            json.dumps({"id": "d", "instruction": "q", "response": "r", "score": 7}),
            json.dumps({"id": "e", "instruction": "q", "response": "r", "gold": 5, "score": 1}),
        ],
    )
    res = load_records(str(path), skip_bad=True)
    assert res.format == FORMAT_RECORDS
    assert {r.id: r.gold for r in res.records} == {"a": 4.0, "b": 2.0, "c": 3.0, "e": 5.0}
    (bad,) = res.bad_rows
    assert bad.row == 4 and bad.field == "score" and "outside the scale" in bad.message
