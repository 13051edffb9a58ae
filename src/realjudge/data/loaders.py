"""Load judging data from any supported source into :class:`JudgeRecord` lists.

``load_records(spec)`` picks the source from ``spec`` (the user's ``--data``):

* ``embedded`` / ``embedded-ood`` -- the generated task of :mod:`realjudge.data.embedded`;
* a local file (``.json`` list, ``.jsonl``, ``.parquet``) in one of three row schemas,
  auto-detected from the fields of the first usable row:

  - ``prometheus-benchmark``: the Prometheus benchmark files (Vicuna Bench, FLASK, MT Bench):
    ``instruction`` is an already rendered judge prompt, ``gpt4_score`` the annotator scores;
  - ``feedback-collection``: Feedback-Collection / Feedback-Bench rows (``orig_*`` parts);
  - ``records``: our own JSONL (:meth:`JudgeRecord.to_dict`), see :func:`write_jsonl`; the
    gold may also be given as ``score`` (read when ``gold`` is absent or null);

* a Hugging Face hub id (``owner/name`` that is not a local path), read with
  ``datasets.load_dataset`` and parsed by the same row parsers.

Every malformed row is reported with its file, row and field: :class:`DataError` on the first
one, or -- with ``skip_bad=True`` -- skipped and listed in :attr:`LoadResult.bad_rows`. JSON and
JSONL files are read as bytes: a row with an invalid UTF-8 byte is a bad row like any other,
named with the byte's offset in the file, and the rows around it are kept; a UTF-8 BOM is
accepted, and ``\\n``, ``\\r\\n`` and a lone ``\\r`` all end a line.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from realjudge.data.records import JudgeRecord, Rubric

FORMAT_EMBEDDED = "embedded"
FORMAT_PROMETHEUS = "prometheus-benchmark"
FORMAT_FEEDBACK_COLLECTION = "feedback-collection"
FORMAT_RECORDS = "records"
FILE_FORMATS = (FORMAT_PROMETHEUS, FORMAT_FEEDBACK_COLLECTION, FORMAT_RECORDS)

DEFAULT_SCALE = (1, 5)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = {".json", ".jsonl", ".ndjson", ".parquet"}

# Row kinds: how a row number is counted in messages.
LINE = "line"  # 1-based line of a JSONL file
INDEX = "index"  # 0-based position in a JSON list, parquet file or hub dataset


class DataError(ValueError):
    """A data source cannot be read, or one of its rows is malformed."""


@dataclass(frozen=True)
class BadRow:
    """One malformed row: where it is (file, row, field) and what is wrong with it.

    ``row`` is a 1-based line number when ``row_kind == "line"`` (JSONL) and a 0-based
    position when ``row_kind == "index"`` (JSON list, parquet, hub dataset).
    """

    source: str
    row: int
    field: str
    message: str
    row_kind: str = LINE

    @property
    def location(self) -> str:
        return row_location(self.source, [self.row], self.row_kind)

    def __str__(self) -> str:
        return f"{self.location}, field {self.field!r}: {self.message}"


@dataclass
class LoadResult:
    """What :func:`load_records` read: the records, the skipped rows, and where/how.

    ``record_rows[i]`` is the row (same numbering as :attr:`BadRow.row`) that ``records[i]``
    came from, so records and bad rows can be put back in input order
    (:func:`realjudge.evaluate.run.in_input_order`); ``row_kind`` says how those rows are
    counted (:attr:`BadRow.row_kind`), so a record can be named by :func:`row_location`.
    """

    records: list[JudgeRecord]
    bad_rows: list[BadRow] = field(default_factory=list)
    source: str = ""
    format: str = ""
    record_rows: list[int] = field(default_factory=list)
    row_kind: str = INDEX

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> str:
        text = f"{len(self.records)} records from {self.source} ({self.format})"
        if self.bad_rows:
            text += f", {len(self.bad_rows)} bad rows skipped"
        return text


def row_location(source: str, rows: Sequence[int], row_kind: str, max_ranges: int = 100) -> str:
    """``source, line 3 (1-based)`` -- or, for several rows, ``source, lines 3, 5-7 (1-based)``
    (``row index`` / ``row indices`` for :data:`INDEX` rows), the rows sorted and runs of
    consecutive rows joined; past ``max_ranges`` runs the rest are counted, not listed."""
    rows = sorted(set(rows))
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and r == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], r)
        else:
            runs.append((r, r))
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:max_ranges])
    if len(runs) > max_ranges:
        rest = sum(b - a + 1 for a, b in runs[max_ranges:])
        text += f" and {rest} more"
    if row_kind == LINE:
        noun, base = ("line" if len(rows) == 1 else "lines"), "1-based"
    else:
        noun, base = ("row index" if len(rows) == 1 else "row indices"), "0-based"
    return f"{source}, {noun} {text} ({base})"


class _RowError(Exception):
    """Raised by a row parser; turned into a :class:`BadRow` with the row's location."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def load_records(
    spec: str,
    split: str | None = None,
    *,
    limit: int | None = None,
    skip_bad: bool = False,
    seed: int = 0,
) -> LoadResult:
    """Load records from ``spec``: ``embedded``, ``embedded-ood``, a local file or a hub id.

    ``split`` selects the embedded split (``train``/``test``, default ``test``) or the hub
    split (default ``train``); a local file is one split already and ignores it. ``limit``
    keeps the first ``limit`` records in file order (for ``embedded`` it is the number of
    records generated). ``seed`` only affects the embedded generator.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    spec = str(spec)
    if spec in ("embedded", "embedded-ood"):
        return _load_embedded(spec, split, limit, seed)
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir():
            raise DataError(f"{spec} is a directory; pass a .json, .jsonl or .parquet file")
        return _load_file(path, limit, skip_bad)
    if _HUB_ID.match(spec) and path.suffix.lower() not in _FILE_SUFFIXES:
        return _load_hub(spec, split, limit, skip_bad)
    raise DataError(
        f"data source {spec!r} not found: expected 'embedded', 'embedded-ood', an existing "
        ".json/.jsonl/.parquet file, or a Hugging Face dataset id like "
        "'prometheus-eval/Feedback-Bench'"
    )


def split_by_group(
    records: Sequence[JudgeRecord], test_fraction: float, seed: int
) -> tuple[list[JudgeRecord], list[JudgeRecord]]:
    """Split ``records`` into ``(train, test)`` by ``group_id`` so no group is in both.

    A record without ``group_id`` is a group of its own. About ``test_fraction`` of the
    groups go to test (at least one group on each side when there are two or more groups and
    the fraction is strictly between 0 and 1). Deterministic in ``seed`` and independent of
    the input order; both parts keep the input order.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    keys = [_group_key(r) for r in records]
    groups = sorted(set(keys))
    random.Random(seed).shuffle(groups)
    n_test = int(math.floor(test_fraction * len(groups) + 0.5))
    if len(groups) >= 2 and 0.0 < test_fraction < 1.0:
        n_test = min(max(n_test, 1), len(groups) - 1)
    test_groups = set(groups[:n_test])
    train = [r for r, k in zip(records, keys, strict=True) if k not in test_groups]
    test = [r for r, k in zip(records, keys, strict=True) if k in test_groups]
    return train, test


def write_jsonl(records: Iterable[JudgeRecord], path: str | Path) -> Path:
    """Write records as JSONL (one :meth:`JudgeRecord.to_dict` per line); read back with
    :func:`load_records`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    return path


def detect_format(row: Any) -> str | None:
    """The row schema a row belongs to (one of :data:`FILE_FORMATS`), or None."""
    if not isinstance(row, dict):
        return None
    if any(isinstance(k, str) and k.startswith("orig_") for k in row):
        return FORMAT_FEEDBACK_COLLECTION
    if "response" in row or "id" in row:
        return FORMAT_RECORDS
    if "gpt4_score" in row or "gpt4_feedback" in row:
        return FORMAT_PROMETHEUS
    if "instruction" in row and "score" in row:
        return FORMAT_PROMETHEUS
    return None


def parse_prometheus_prompt(prompt: str) -> dict[str, Any]:
    """Cut a rendered Prometheus absolute-grading prompt into its parts.

    Returns a dict with whichever of ``instruction``, ``response``, ``reference_answer``,
    ``rubric`` (a :class:`Rubric`) and ``scale`` were found; missing or unusual sections are
    simply left out.
    """
    out: dict[str, Any] = {}
    m = re.search(r"integer (?:number )?between (\d+) and (\d+)", prompt)
    lo, hi = (int(m.group(1)), int(m.group(2))) if m else DEFAULT_SCALE
    if lo < hi:
        out["scale"] = (lo, hi)
    else:
        lo, hi = DEFAULT_SCALE

    def header(pattern: str, start: int, end: int, last: bool) -> re.Match[str] | None:
        found = list(re.compile(pattern, re.M).finditer(prompt, start, end))
        if not found:
            return None
        return found[-1] if last else found[0]

    n = len(prompt)
    inst = header(r"^###The instruction to evaluate:", 0, n, last=False)
    # Sections after the response are located from the end, so that a response that happens
    # to contain a header-like line cannot cut it short.
    feedback = header(r"^###Feedback:", 0, n, last=True)
    tail_end = feedback.start() if feedback else n
    rubric = header(r"^###Score Rubrics?:", 0, tail_end, last=True)
    ref_end = rubric.start() if rubric else tail_end
    ref = header(r"^###Reference Answer(?: \(Score \d+\))?:", 0, ref_end, last=True)
    resp_start = inst.end() if inst else 0
    resp_end = ref.start() if ref else ref_end
    resp = header(r"^###Response to evaluate:", resp_start, resp_end, last=False)

    if inst is not None and resp is not None:
        out["instruction"] = prompt[inst.end() : resp.start()].strip()
    if resp is not None:
        out["response"] = prompt[resp.end() : resp_end].strip()
    if ref is not None:
        out["reference_answer"] = prompt[ref.end() : ref_end].strip()
    if rubric is not None:
        parsed = _parse_rubric(prompt[rubric.end() : tail_end], (lo, hi))
        if parsed is not None:
            out["rubric"] = parsed
    return out


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------


def _load_embedded(spec: str, split: str | None, limit: int | None, seed: int) -> LoadResult:
    if spec == "embedded-ood":
        if split not in (None, "ood"):
            raise DataError(f"'embedded-ood' has only the split 'ood', got split {split!r}")
        split = "ood"
    else:
        split = split or "test"
        if split not in ("train", "validation", "test", "ood"):
            raise DataError(
                f"'embedded' has the splits 'train', 'validation' and 'test' (and 'ood', also "
                f"reachable as 'embedded-ood'), got split {split!r}"
            )
    from realjudge.data.embedded import generate_embedded

    records = generate_embedded(split, n=limit, seed=seed)
    if limit is not None:
        records = records[:limit]
    return LoadResult(
        records=records,
        source=f"embedded:{split}",
        format=FORMAT_EMBEDDED,
        record_rows=list(range(len(records))),
    )


def _load_file(path: Path, limit: int | None, skip_bad: bool) -> LoadResult:
    source = str(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rows = _iter_parquet(path)
    else:
        rows = _iter_json_or_jsonl(path)
    return _parse_rows(rows, source, _name_prefix(path.stem), limit, skip_bad)


def _load_hub(spec: str, split: str | None, limit: int | None, skip_bad: bool) -> LoadResult:
    split = split or "train"
    source = f"hf:{spec}[{split}]"
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise DataError(f"loading the hub dataset {spec!r} needs the 'datasets' package") from e
    try:
        ds = datasets.load_dataset(spec, split=split)
    except Exception as e:
        raise DataError(
            f"could not load the Hugging Face dataset {spec!r} (split {split!r}): "
            f"{type(e).__name__}: {e}. Without network access, download it elsewhere and pass "
            "the local .json/.jsonl/.parquet file instead."
        ) from e

    def rows() -> Iterator[tuple[int, str, Any]]:
        for i, row in enumerate(ds):
            yield i, INDEX, row

    return _parse_rows(rows(), source, _name_prefix(spec.split("/")[-1]), limit, skip_bad)


_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # an undecodable byte, after surrogateescape


def _iter_json_or_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Yield ``(row, row_kind, value)``; a row that cannot be decoded (JSON syntax, invalid
    UTF-8 bytes) is yielded as a :class:`_BadJson` at its place, so the other rows survive.

    Bytes are read as they are: a UTF-8 BOM is skipped, LF, CRLF and CR-only line ends are
    accepted, and an invalid UTF-8 byte is reported with its byte offset in the file (0-based,
    BOM included).
    """
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(_UTF16_BOMS):
        raise DataError(f"{path} is UTF-16 encoded (it starts with a UTF-16 BOM); save it as UTF-8")
    skip = len(_BOM) if head.startswith(_BOM) else 0
    first = head[skip:].lstrip()[:1]
    if not first:
        raise DataError(f"{path} is empty: no rows to load")
    if first == b"[" or (first == b"{" and path.suffix.lower() == ".json"):
        raw = path.read_bytes()[skip:]
        text = raw.decode("utf-8", "surrogateescape")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if first == b"{" and e.msg == "Extra data":
                data = None  # JSON lines in a .json file
            else:
                raise DataError(
                    f"{path} is not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}"
                ) from e
        except (RecursionError, ValueError) as e:  # nested too deeply, a 4300-digit integer
            if first != b"{":
                raise DataError(f"{path} could not be read as JSON: {e}") from None
            data = None  # JSON lines: the line reader below names the row
        if data is not None:
            if not isinstance(data, list):
                raise DataError(
                    f"{path} holds a JSON {type(data).__name__}; expected a list of row "
                    "objects (or JSON lines)"
                )
            if not data:
                raise DataError(f"{path} is empty: the JSON list has no rows")
            offsets = iter(_escaped_byte_offsets(text, skip))
            for i, row in enumerate(data):
                yield i, INDEX, _check_text(row, offsets)
            return
    with path.open("rb") as f:
        offset = 0
        for lineno, raw_line in enumerate(_iter_lines(f), start=1):
            start, offset = offset, offset + len(raw_line)
            if lineno == 1 and skip:
                raw_line, start = raw_line[skip:], start + skip
            if not raw_line.strip():
                continue
            yield lineno, LINE, _decode_line(raw_line, start)


_LINE_END = re.compile(rb"\r\n|\r|\n")
_CHUNK = 1 << 20


def _iter_lines(f: BinaryIO, chunk_size: int = _CHUNK) -> Iterator[bytes]:
    """The lines of the binary file ``f``, each with its line end: ``\\n``, ``\\r\\n`` and a
    lone ``\\r`` (old Mac files) all end a line, as in Python's universal newlines, so line
    numbers match what an editor shows. The lines put together are the file's bytes."""
    buf = bytearray()  # grows in place: a line of many chunks is not copied once per chunk
    scan = 0  # buf[:scan] holds no line end, except a trailing "\r" (maybe half of "\r\n")
    while chunk := f.read(chunk_size):
        buf += chunk
        start = 0
        for m in _LINE_END.finditer(buf, scan):
            if m.end() == len(buf) and m.group() == b"\r":
                break  # wait for the next chunk: it may start with the "\n" of "\r\n"
            yield bytes(buf[start : m.end()])
            start = m.end()
        if start:
            del buf[:start]
        scan = max(0, len(buf) - 1)
    if buf:
        yield bytes(buf)


def _decode_line(raw: bytes, start: int) -> Any:
    """One JSONL line (``start``: its byte offset in the file) as a JSON value or _BadJson."""
    text = raw.decode("utf-8", "surrogateescape")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        bad = _ESCAPED_BYTE.search(text)
        if bad is not None:  # the syntax error may well come from the bad byte
            return _BadJson(_invalid_byte_message(text, bad.start(), start))
        return _BadJson(f"invalid JSON: {e.msg} (column {e.colno})")
    except RecursionError:
        return _BadJson("invalid JSON: nested too deeply to read")
    except ValueError as e:  # e.g. an integer longer than Python converts (4300 digits)
        return _BadJson(f"invalid JSON: {e}")
    return _check_text(value, iter(_escaped_byte_offsets(text, start)))


def _escaped_byte_offsets(text: str, base: int) -> list[tuple[int, int]]:
    """``(file offset, byte value)`` of every undecodable byte of ``text`` (a surrogateescape
    decoding of the bytes that start at file offset ``base``), in order."""
    out: list[tuple[int, int]] = []
    pos, byte = 0, base
    for m in _ESCAPED_BYTE.finditer(text):
        byte += len(text[pos : m.start()].encode("utf-8", "surrogateescape"))
        out.append((byte, ord(m.group()) - 0xDC00))
        byte += 1
        pos = m.end()
    return out


def _invalid_byte_message(text: str, index: int, base: int) -> str:
    offset = base + len(text[:index].encode("utf-8", "surrogateescape"))
    value = ord(text[index]) - 0xDC00
    return f"invalid UTF-8 byte 0x{value:02x} at byte offset {offset} of the file (0-based)"


def _check_text(value: Any, offsets: Iterator[tuple[int, int]]) -> Any:
    """``value``, or a :class:`_BadJson` naming the field when one of its strings holds an
    undecodable byte (``offsets`` yields their file offsets, in file order; consumed) or an
    unpaired surrogate escape, which is not valid Unicode either."""
    found: list[tuple[str, str]] = []
    _find_surrogates(value, "", found)
    if not found:
        return value
    field, first = found[0][0], found[0][1][0]
    n_escaped = sum(len(_ESCAPED_BYTE.findall(chars)) for _, chars in found)
    spans = [next(offsets, None) for _ in range(n_escaped)]  # this row's share, in order
    if _ESCAPED_BYTE.match(first) and spans and spans[0] is not None:
        offset, byte = spans[0]
        message = f"invalid UTF-8 byte 0x{byte:02x} at byte offset {offset} of the file (0-based)"
    else:
        message = f"unpaired surrogate \\u{ord(first):04x}: not valid Unicode"
    return _BadJson(message, field or "<row>")


def _find_surrogates(value: Any, path: str, found: list[tuple[str, str]]) -> None:
    """Append ``(field path, surrogates)`` for every string in ``value`` (keys included) that
    holds surrogate characters, in document order; the first one is ``found[0]``."""
    if isinstance(value, str):
        chars = "".join(_SURROGATE.findall(value))
        if chars:
            found.append((path, chars))
    elif isinstance(value, dict):
        for k, v in value.items():
            key = str(k)
            _find_surrogates(key, path or "<key>", found)
            _find_surrogates(v, f"{path}.{key}" if path else key, found)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _find_surrogates(v, f"{path}[{i}]", found)


def _iter_parquet(path: Path) -> Iterator[tuple[int, str, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataError(f"{path} is not a readable parquet file: {e}") from e
    if pf.metadata.num_rows == 0:
        raise DataError(f"{path} is empty: the parquet file has no rows")
    first = 0  # index of the row group's first row
    for group in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        i = first
        try:
            for batch in pf.iter_batches(batch_size=1024, row_groups=[group]):
                for row in batch.to_pylist():
                    yield i, INDEX, row
                    i += 1
        except Exception as e:  # a corrupt page: pyarrow's OSError / ArrowInvalid / ...
            # The rest of the row group cannot be read; each of its rows is a bad row at its
            # place, and the other row groups are read on.
            bad = _BadJson(
                f"unreadable: row group {group} of the parquet file (rows {first}..{first + n - 1}"
                f", 0-based) is corrupt from row {i} on: {type(e).__name__}: {e}"
            )
            for j in range(i, first + n):
                yield j, INDEX, bad
        first += n


@dataclass(frozen=True)
class _BadJson:
    """A row that could not be decoded; ``field`` names the part that is bad, if known."""

    message: str
    field: str = "<row>"


def _parse_rows(
    rows: Iterable[tuple[int, str, Any]],
    source: str,
    prefix: str,
    limit: int | None,
    skip_bad: bool,
) -> LoadResult:
    records: list[JudgeRecord] = []
    record_rows: list[int] = []
    bad: list[BadRow] = []
    fmt: str | None = None
    seen_ids: set[str] = set()
    n_rows = 0
    row_kind = INDEX
    for row_no, kind, value in rows:
        n_rows += 1
        row_kind = kind
        if limit is not None and len(records) >= limit:
            break
        try:
            if isinstance(value, _BadJson):
                raise _RowError(value.field, value.message)
            if not isinstance(value, dict):
                raise _RowError("<row>", f"expected a JSON object, got {type(value).__name__}")
            if fmt is None:
                fmt = detect_format(value)
                if fmt is None:
                    raise _RowError(
                        "<row>",
                        "cannot tell the data format from the fields "
                        f"{sorted(map(str, value))[:12]}: expected a Prometheus benchmark row "
                        "(instruction, gpt4_score), a Feedback-Collection row (orig_*) or a "
                        "record (id, instruction, response, ...)",
                    )
            record = _PARSERS[fmt](value, f"{prefix}-{row_no}")
            if record.id in seen_ids:
                raise _RowError("id", f"duplicate id {record.id!r}")
            seen_ids.add(record.id)
            records.append(record)
            record_rows.append(row_no)
        except _RowError as e:
            message = e.message if fmt is None else f"{e.message} [format: {fmt}]"
            bad_row = BadRow(source, row_no, e.field, message, kind)
            if not skip_bad:
                raise DataError(str(bad_row)) from None
            bad.append(bad_row)
    if n_rows == 0:
        raise DataError(f"{source} is empty: no rows to load")
    if not records and (limit is None or limit > 0):
        raise DataError(
            f"{source}: no valid rows ({len(bad)} bad); first problem: {bad[0] if bad else '-'}"
        )
    return LoadResult(
        records=records,
        bad_rows=bad,
        source=source,
        format=fmt or "",
        record_rows=record_rows,
        row_kind=row_kind,
    )


# ---------------------------------------------------------------------------------------------
# row parsers
# ---------------------------------------------------------------------------------------------


def _parse_prometheus_row(row: dict[str, Any], default_id: str) -> JudgeRecord:
    prompt = _require_str(row, "instruction")
    parts = parse_prometheus_prompt(prompt)
    scale = parts.get("scale", DEFAULT_SCALE)

    score_field = "gpt4_score" if "gpt4_score" in row else "score"
    if score_field not in row or row[score_field] is None:
        raise _RowError("gpt4_score", "missing field (the annotator scores)")
    raw = row[score_field]
    values = raw if isinstance(raw, list | tuple) else [raw]
    if not values:
        raise _RowError(score_field, "empty list of scores")
    scores = [_as_score(v, score_field, scale) for v in values]
    gold = sum(scores) / len(scores)

    feedbacks = row.get("gpt4_feedback")
    if feedbacks is None:
        feedbacks = []
    elif isinstance(feedbacks, str):
        feedbacks = [feedbacks]
    elif not isinstance(feedbacks, list | tuple) or not all(isinstance(x, str) for x in feedbacks):
        raise _RowError("gpt4_feedback", "expected a string or a list of strings")

    group = row.get("idx", row.get("question_id"))
    meta = {
        k: v for k, v in row.items() if k not in ("instruction", "gpt4_feedback") and _is_plain(v)
    }
    meta["gpt4_score"] = list(values)
    meta["gpt4_feedback"] = list(feedbacks)
    meta["prompt_parsed"] = "response" in parts
    return JudgeRecord(
        id=default_id,
        instruction=parts.get("instruction", prompt),
        response=parts.get("response", ""),
        gold=gold,
        rubric=parts.get("rubric"),
        reference_answer=parts.get("reference_answer"),
        reference_feedback=feedbacks[0] if feedbacks else None,
        group_id=None if group is None else str(group),
        scale=scale,
        rendered_prompt=prompt,
        meta=meta,
    )


_FC_REQUIRED = ("orig_instruction", "orig_response", "orig_criteria")
_RESULT_TAIL = re.compile(r"\s*\[RESULT\]\s*\S*\s*$")


def _parse_feedback_collection_row(row: dict[str, Any], default_id: str) -> JudgeRecord:
    instruction, response, criterion = (_require_str(row, k) for k in _FC_REQUIRED)
    descriptions = {k: _require_str(row, f"orig_score{k}_description") for k in range(1, 6)}
    if "orig_score" not in row or row["orig_score"] is None:
        raise _RowError("orig_score", "missing field")
    gold = _as_score(row["orig_score"], "orig_score", DEFAULT_SCALE)
    reference = _optional_str(row, "orig_reference_answer")
    feedback = _optional_str(row, "orig_feedback")
    if feedback is None and isinstance(row.get("output"), str):
        feedback = _RESULT_TAIL.sub("", row["output"]).strip() or None
    group = hashlib.sha1(instruction.strip().encode("utf-8")).hexdigest()[:16]
    return JudgeRecord(
        id=default_id,
        instruction=instruction,
        response=response,
        gold=gold,
        rubric=Rubric(criterion=criterion, descriptions=descriptions),
        reference_answer=reference,
        reference_feedback=feedback,
        group_id=group,
        scale=DEFAULT_SCALE,
        rendered_prompt=None,
        meta={"source_format": FORMAT_FEEDBACK_COLLECTION},
    )


def _parse_record_row(row: dict[str, Any], default_id: str) -> JudgeRecord:
    del default_id  # own records carry their id
    for key in ("id", "instruction", "response"):
        if key not in row or row[key] is None:
            raise _RowError(key, "missing field")
    if not isinstance(row["id"], str | int) or isinstance(row["id"], bool):
        raise _RowError("id", f"expected a string, got {type(row['id']).__name__}")
    for key in ("instruction", "response"):
        _require_str(row, key)
    for key in ("reference_answer", "reference_feedback", "rendered_prompt"):
        _optional_str(row, key)

    scale_raw = row.get("scale", list(DEFAULT_SCALE))
    if (
        not isinstance(scale_raw, list | tuple)
        or len(scale_raw) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in scale_raw)
        or scale_raw[0] >= scale_raw[1]
    ):
        raise _RowError("scale", f"expected [lo, hi] integers with lo < hi, got {scale_raw!r}")
    scale = (scale_raw[0], scale_raw[1])
    # ``score`` is read as the gold when ``gold`` is absent, as a Prometheus row's ``score``
    # stands for its ``gpt4_score``: a gold under that name is not silently dropped.
    gold_field = "gold" if row.get("gold") is not None or row.get("score") is None else "score"
    if row.get(gold_field) is not None:
        gold = _as_score(row[gold_field], gold_field, scale)
        if gold_field != "gold":
            row = {**row, "gold": gold}

    rubric = row.get("rubric")
    if rubric is not None:
        if not isinstance(rubric, dict):
            raise _RowError("rubric", "expected an object {criterion, descriptions}")
        if not isinstance(rubric.get("criterion"), str):
            raise _RowError("rubric.criterion", "missing field or not a string")
        desc = rubric.get("descriptions")
        if not isinstance(desc, dict):
            raise _RowError("rubric.descriptions", "expected an object {score: text}")
        for k, v in desc.items():
            try:
                int(k)
            except (TypeError, ValueError):
                raise _RowError("rubric.descriptions", f"key {k!r} is not an integer") from None
            if not isinstance(v, str):
                raise _RowError("rubric.descriptions", f"description of {k!r} is not a string")
    if row.get("meta") is not None and not isinstance(row["meta"], dict):
        raise _RowError("meta", "expected an object")
    if row.get("group_id") is not None and not _is_scalar(row["group_id"]):
        raise _RowError("group_id", "expected a string")
    try:
        return JudgeRecord.from_dict(row)
    except (KeyError, TypeError, ValueError) as e:  # pragma: no cover - validated above
        raise _RowError("<row>", f"{type(e).__name__}: {e}") from None


_PARSERS = {
    FORMAT_PROMETHEUS: _parse_prometheus_row,
    FORMAT_FEEDBACK_COLLECTION: _parse_feedback_collection_row,
    FORMAT_RECORDS: _parse_record_row,
}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _require_str(row: dict[str, Any], key: str) -> str:
    if key not in row or row[key] is None:
        raise _RowError(key, "missing field")
    value = row[key]
    if not isinstance(value, str):
        raise _RowError(key, f"expected a string, got {type(value).__name__}")
    return value


def _optional_str(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise _RowError(key, f"expected a string or null, got {type(value).__name__}")
    return value


def _as_score(value: Any, key: str, scale: tuple[int, int]) -> float:
    """A finite number (or numeric string) inside ``scale``."""
    if isinstance(value, bool):
        raise _RowError(key, f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _RowError(key, f"expected a number, got {value!r}") from None
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            raise _RowError(key, "score is outside the scale (too large a number)") from None
    else:
        raise _RowError(key, f"expected a number, got {type(value).__name__}")
    lo, hi = scale
    if not math.isfinite(number) or not lo <= number <= hi:
        raise _RowError(key, f"score {value!r} is outside the scale {lo}..{hi}")
    return number


def _parse_rubric(text: str, scale: tuple[int, int]) -> Rubric | None:
    text = text.strip()
    m = re.match(r"\[(.*?)\]\s*\n", text, re.S)
    if m is None:
        return None
    criterion = m.group(1).strip()
    body = text[m.end() :]
    items = re.findall(r"^Score (\d+):[ \t]*(.*?)(?=^Score \d+:|\Z)", body, re.M | re.S)
    descriptions = {int(k): v.strip() for k, v in items}
    lo, hi = scale
    if len(items) != hi - lo + 1 or set(descriptions) != set(range(lo, hi + 1)):
        return None
    return Rubric(criterion=criterion, descriptions=descriptions)


def _group_key(record: JudgeRecord) -> str:
    if record.group_id is not None:
        return "g:" + str(record.group_id)
    return "id:" + str(record.id)


def _name_prefix(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name) or "row"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_plain(value: Any) -> bool:
    """JSON-serialisable scalars and flat lists of them (kept in ``meta``)."""
    if _is_scalar(value):
        return True
    return isinstance(value, list) and all(_is_scalar(v) for v in value)
