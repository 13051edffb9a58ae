"""Evaluation runs: load a judge and a data set, grade every row, write predictions and a report.

:func:`run_eval` is what ``realjudge eval`` calls; :func:`score_file` is what ``realjudge
score`` calls. Both stream one JSON line per input row (flushed as it is written), so a long
run can be watched with ``tail -f`` and an interrupted run keeps what it did. Rows the loader
could not parse are written too, at their place, with ``status: "bad_row"`` and their row
number: every input row has a line in the output, in input order (``row`` on every line).
The reading mode that ran (CoT or not, samples, token cap; inherited from a trained judge
unless set) is logged, returned and written into ``metrics.json`` and the report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from realjudge.inference.judge import Judge, JudgeConfig, load_judge

log = logging.getLogger(__name__)

BAD_ROW = "bad_row"
#: The files :func:`run_eval` writes into its ``out`` directory (see ``write_report``).
_EVAL_FILES = ("predictions.jsonl", "metrics.json", "report.md", "scatter.png", "confusion.png")


@dataclass(init=False)
class EvalConfig:
    """One evaluation run (the flags of ``realjudge eval``): what to grade, where to write,
    and a :class:`~realjudge.inference.settings.JudgeConfig` for how to read the scores.

    ``EvalConfig(model=..., data=..., cot=True, ...)`` takes the run's own fields and any
    :class:`JudgeConfig` field by name (or a whole ``judge=``); the latter go into
    :attr:`judge`. The judge's settings left ``None`` (``cot``, ``samples``,
    ``max_new_tokens``, ``fmt``, ``normalize``) are the model's training settings (its
    ``realjudge.json``), else the plain defaults; ``metrics.json`` echoes the values used.

    Attributes:
        model: ``embedded``, ``tiny``, a checkpoint directory or a hub id
            (:func:`realjudge.models.load_model`).
        data: ``embedded``, ``embedded-ood``, a Prometheus benchmark JSON file, a
            Feedback-Collection json/jsonl/parquet file or hub id, or our own JSONL
            (:func:`realjudge.data.loaders.load_records`).
        split: data split (embedded: ``test`` by default; hub: ``train`` by default).
        limit: grade only the first ``limit`` records.
        out: output directory (default ``runs/eval-<timestamp>``).
        skip_bad: skip malformed input rows (they are still listed in predictions.jsonl, at
            their place) instead of stopping at the first one before any work.
        n_boot: bootstrap resamples for the confidence intervals.
        device, dtype: ``auto`` / ``None`` pick CUDA + bf16 when present, else CPU + fp32.
        judge: how scores are read; its ``seed`` (data generation, sampling, bootstrap) and
            ``progress`` serve the whole run (also readable as ``cfg.seed``).
    """

    model: str = "embedded"
    data: str = "embedded"
    split: str | None = None
    limit: int | None = None
    out: str | None = None
    skip_bad: bool = False
    n_boot: int = 1000
    device: str | None = None
    dtype: str | None = None
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    def __init__(
        self,
        model: str = "embedded",
        data: str = "embedded",
        split: str | None = None,
        limit: int | None = None,
        out: str | None = None,
        skip_bad: bool = False,
        n_boot: int = 1000,
        device: str | None = None,
        dtype: str | None = None,
        judge: JudgeConfig | None = None,
        **judge_fields: Any,
    ) -> None:
        unknown = sorted(set(judge_fields) - {f.name for f in fields(JudgeConfig)})
        if unknown:
            raise TypeError(f"EvalConfig got unknown fields {unknown}")
        self.model, self.data, self.split, self.limit = model, data, split, limit
        self.out, self.skip_bad, self.n_boot = out, skip_bad, n_boot
        self.device, self.dtype = device, dtype
        self.judge = replace(judge or JudgeConfig(), **judge_fields)

    @property
    def seed(self) -> int:
        return 0 if self.judge.seed is None else self.judge.seed

    def to_dict(self) -> dict[str, Any]:
        """The run's fields and the judge's in one flat dict (``system`` only when it is not
        the default prompt)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "judge"}
        judge = asdict(self.judge)
        if judge["system"] == JudgeConfig.system:
            del judge["system"]
        return {**out, **judge}


def default_out_dir(prefix: str = "eval") -> Path:
    return Path("runs") / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def bad_row_line(bad: Any) -> dict[str, Any]:
    """The output line of an input row the loader rejected."""
    return {
        "id": None,
        "gold": None,
        "prediction": None,
        "status": BAD_ROW,
        "row": bad.row,
        "row_kind": bad.row_kind,
        "field": bad.field,
        "error": bad.message,
        "source": bad.source,
    }


def _write_line(f: IO[str], row: dict) -> None:
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()


def in_input_order(
    positions: Iterable[int], predictions: Iterable[dict], bad_rows: Iterable[Any]
) -> Iterator[dict]:
    """Output lines in input order: the prediction of the record read from row
    ``positions[i]`` (with that ``row``), and each bad row's line (:func:`bad_row_line`) at its
    own row. Streams: a prediction is passed on as soon as it arrives."""
    bad = iter(sorted(bad_rows, key=lambda b: b.row))
    pending = next(bad, None)
    for pos, prediction in zip(positions, predictions, strict=True):
        while pending is not None and pending.row < pos:
            yield bad_row_line(pending)
            pending = next(bad, None)
        yield {**prediction, "row": pos}
    while pending is not None:
        yield bad_row_line(pending)
        pending = next(bad, None)


def _stream(
    judge: Judge, loaded: Any, path: Path, kept: Sequence[dict] = (), end: int = 0
) -> list[dict]:
    """Write one line per input row, in input order; return every row written. ``kept``:
    the lines ``path`` already holds for the first rows, up to byte ``end``
    (:func:`finished_lines`); only the rows after them are graded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    positions = list(loaded.record_rows or range(len(loaded.records)))
    rows = list(kept)
    done = {r["row"] for r in rows}
    todo = [j for j, pos in enumerate(positions) if pos not in done]
    if rows:
        log.info("resuming %s: %d of its rows were already written", path, len(rows))
    lines = in_input_order(
        [positions[j] for j in todo],
        judge.predict([loaded.records[j] for j in todo]),
        [b for b in loaded.bad_rows if b.row not in done],
    )
    if rows:  # drop what follows the kept lines (a line torn by the kill), in bytes
        with path.open("r+b") as raw:
            raw.truncate(end)
    with path.open("a" if rows else "w", encoding="utf-8") as f:
        for row in lines:
            row = _clamp_leaked(row)
            _write_line(f, row)
            rows.append(row)
    return rows


#: The :class:`~realjudge.inference.judge.JudgeConfig` keys that decide what a score means,
#: recorded beside a ``score`` output so that a resumed run does not mix two readings (the
#: others -- batch size, backend, cache -- change how fast it is computed, or its rounding).
READING_KEYS = (
    "mode",
    "cot",
    "samples",
    "normalize",
    "fmt",
    "max_new_tokens",
    "temperature",
    "top_p",
    "max_prompt_tokens",
    "system",
    "seed",
)


def settings_path(output: Path) -> Path:
    """Where ``score`` records the reading of ``output``: ``OUT.settings.json`` beside it."""
    return output.with_name(output.name + ".settings.json")


def reading_settings(judge: Judge, model: Any) -> dict[str, Any]:
    """The model (a local checkpoint by its absolute path, else its spec; ``None`` for a
    built judge), its ``weights`` (:func:`~realjudge.models.weights_fingerprint` of a local
    checkpoint: weights trained again into the same directory read otherwise) and
    :data:`READING_KEYS` as resolved."""
    from realjudge.models import weights_fingerprint

    weights = None
    if isinstance(model, str | Path):
        local = Path(model).expanduser()
        if local.exists():
            model, weights = str(local.resolve()), weights_fingerprint(local)
        else:
            model = str(model)
    else:
        model = None
    return {
        "model": model,
        "weights": weights,
        **{k: getattr(judge.config, k) for k in READING_KEYS},
    }


def _check_same_reading(output: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume ``output`` when its recorded reading differs from ``settings``."""
    path = settings_path(output)
    if not path.is_file():
        log.warning(
            "--resume: %s has no record of how its lines were read; they are kept as if read "
            "with the settings of this run",
            output,
        )
        return
    saved = json.loads(path.read_text())
    # a key the record predates (``weights``, added after ``--resume``) cannot be compared
    unknown = [k for k in settings if k not in saved]
    if unknown:
        log.warning("--resume: %s records no %s; not compared", path, ", ".join(unknown))
    changed = [k for k in settings if k in saved and saved[k] != settings[k]]
    if changed:
        diff = ", ".join(f"{k} {saved.get(k)!r} then, {settings[k]!r} now" for k in changed)
        raise ValueError(
            f"--resume: {output} was graded with other settings ({diff}); its lines would mix "
            "two readings: resume with the same settings, or pass another --output"
        )


def finished_lines(path: Path, loaded: Any) -> tuple[list[dict], int]:
    """The lines of an earlier ``score`` into ``path`` that a resumed one keeps, and the byte
    offset where they end: the complete lines from the top, as long as each is the line of
    the input row due at its place (its ``row``, and for a record its ``id``). A last line
    cut short by a kill is dropped (and graded again). A line that belongs to another input
    is a ``ValueError``: the file is not this input's output."""
    if not path.is_file():
        return [], 0
    positions = loaded.record_rows or range(len(loaded.records))
    ids = {pos: rec.id for pos, rec in zip(positions, loaded.records, strict=True)}
    due = sorted([*ids, *(b.row for b in loaded.bad_rows)])
    rows: list[dict] = []
    end = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break  # cut short
            try:
                row = json.loads(raw)
            except ValueError:
                break  # a line torn by the kill (or no JSON): graded again from here
            if len(rows) >= len(due):
                raise ValueError(
                    f"--resume: {path} holds more lines than the input has rows ({len(due)}): "
                    "it was written for another input: pass another --output, or drop "
                    "--resume to overwrite it"
                )
            want = due[len(rows)]
            if (
                not isinstance(row, dict)
                or row.get("row") != want
                or (want in ids and row.get("id") != ids[want])
            ):
                got = row.get("row") if isinstance(row, dict) else None
                raise ValueError(
                    f"--resume: line {n} of {path} is not this input's row {want} "
                    f"(it holds row {got}, id {row.get('id') if isinstance(row, dict) else None!r}); "
                    "it was written for another input or reading: pass another --output, "
                    "or drop --resume to overwrite it"
                )
            rows.append(row)
            end += len(raw)
    return rows, end


def _clamp_leaked(row: dict) -> dict:
    """``row`` with its ``leaked_mass`` (``1 - sum p``, computed in float32) clamped into
    ``[0, 1]``: rounding makes it ``-1e-7`` at times, which is no probability."""
    leaked = row.get("leaked_mass")
    if isinstance(leaked, int | float) and not 0.0 <= leaked <= 1.0 and math.isfinite(leaked):
        return {**row, "leaked_mass": min(max(float(leaked), 0.0), 1.0)}
    return row


def _scale(records: list[Any], positions: Iterable[int], rows: list[dict]) -> tuple[int, int]:
    """The score scale the metrics use: that of the records whose row was scored (a status in
    ``OK_STATUSES``). A record that failed -- say one whose scale the tokenizer cannot write --
    must not pull the scale (and with it the clamping, rounding and confusion matrix) of the
    others its way. Records in several scales: the lowest, with a warning."""
    from realjudge.evaluate.metrics import OK_STATUSES

    scored = {r.get("row") for r in rows if r.get("status") in OK_STATUSES}
    scales = {tuple(r.scale) for r, pos in zip(records, positions, strict=True) if pos in scored}
    if len(scales) > 1:
        log.warning(
            "scored records have several scales %s; metrics use %s", sorted(scales), min(scales)
        )
    return min(scales) if scales else (1, 5)  # type: ignore[return-value]


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """Refuse, before any work, an output file that cannot be written: an existing directory,
    or a path under a file. Missing parent directories are fine (they are created)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(
            f"{what} {path} is a directory; pass a file path, e.g. {path / 'scores.jsonl'}"
        )
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {what} {path}: {parent} is not a directory")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise ValueError(f"cannot write {what} {path}: permission denied")
    return path


def _refuse_same_file(data: str | Path, output: Path, what: str) -> None:
    """Refuse to write ``output`` when it is the input file ``data`` itself: writing it would
    destroy the input (a symlink or hard link to it included)."""
    data_path = Path(data).expanduser()
    if not data_path.is_file():
        return  # embedded data or a hub id
    same = output.resolve() == data_path.resolve()
    if not same and output.exists():
        try:
            same = output.samefile(data_path)
        except OSError:
            same = False
    if same:
        raise ValueError(
            f"{what} {output} is the input file {data}: writing it would overwrite the input; "
            "pass another path"
        )


def run_eval(cfg: EvalConfig) -> dict:
    """Grade ``cfg.data`` with ``cfg.model``; write ``predictions.jsonl``, ``metrics.json``,
    ``report.md`` and the plots into ``cfg.out``; return the metrics dict
    (:func:`~realjudge.evaluate.metrics.summarize_predictions` keys plus ``runtime``, and, for a
    CoT run on records whose ``meta`` says which items a response satisfies (the embedded task),
    ``checks``: :func:`~realjudge.evaluate.metrics.check_accuracy`)."""
    from realjudge.data.embedded import check_truths
    from realjudge.data.loaders import load_records
    from realjudge.evaluate.metrics import check_accuracy, summarize_predictions
    from realjudge.evaluate.report import write_report

    out = Path(cfg.out).expanduser() if cfg.out else default_out_dir("eval")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a directory (it is created if missing)")
    for name in _EVAL_FILES:  # the files written into out, checked before the model loads
        check_output_file(out / name, "eval output")
        _refuse_same_file(cfg.data, out / name, "eval output")
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_records(
        cfg.data, cfg.split, limit=cfg.limit, skip_bad=cfg.skip_bad, seed=cfg.seed
    )
    for bad in loaded.bad_rows:
        log.warning("bad input row skipped: %s", bad)
    t0 = time.perf_counter()
    judge = load_judge(cfg.model, cfg.judge, device=cfg.device, dtype=cfg.dtype, seed=cfg.seed)
    log.info("reading: %s", judge.reading)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    rows = _stream(judge, loaded, out / "predictions.jsonl")
    infer_s = time.perf_counter() - t1
    positions = loaded.record_rows or list(range(len(loaded.records)))
    scale = _scale(loaded.records, positions, rows)
    metrics = summarize_predictions(rows, scale=scale, n_boot=cfg.n_boot, seed=cfg.seed)
    # the judge's item-by-item checks, where the records' meta says what is right
    if judge.config.cot:
        truths = check_truths(loaded.records)
        checks = check_accuracy(rows, truths, n_boot=cfg.n_boot, seed=cfg.seed)
        if checks is not None:
            metrics["checks"] = checks
    n_items = len(loaded.records)
    metrics["runtime"] = {
        "model_load_s": load_s,
        "inference_s": infer_s,
        "examples_per_s": n_items / infer_s if infer_s > 0 else None,
        "backend": judge.backend.name,
        "out": str(out),
    }
    metrics["reading"] = judge.reading
    used = judge.config
    config = cfg.to_dict()
    config.update(
        out=str(out),
        data_source=loaded.source,
        data_format=loaded.format,
        n_records=n_items,
        n_bad_rows=len(loaded.bad_rows),
        scale=list(scale),
        backend_used=judge.backend.name,
        temperature_used=used.effective_temperature if used.cot else None,
        # the values used (left unset: the model's training settings, else the defaults)
        cot=used.cot,
        samples=used.effective_samples,
        max_new_tokens=used.max_new_tokens,
        fmt=used.fmt,
        normalize=used.normalize,
        reading=judge.reading,
        reading_sources=judge.sources,
    )
    reading = ("CoT + " if used.cot else "score-only ") + (
        "RAIL" if used.mode == "rail" else "decode"
    )
    title = f"{cfg.model} on {loaded.source} ({reading})"
    files = write_report(out, rows, metrics, config, title=title)
    log.info("wrote %s", ", ".join(str(p) for p in files.values()))
    return metrics


def score_file(
    model: str | Judge,
    input: str | Path,
    output: str | Path,
    config: JudgeConfig | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    seed: int = 0,
    split: str | None = None,
    skip_bad: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Grade every row of ``input`` (any format :func:`~realjudge.data.loaders.load_records`
    reads; gold optional) into the JSONL file ``output``; the Python side of ``realjudge score``.

    Every input row gets one output line, in input order: malformed rows become lines with
    ``status: "bad_row"`` and their row number (``skip_bad=False``: the first one stops the
    run with a :class:`~realjudge.data.loaders.DataError` naming file, row and field, before
    the model is loaded); items that fail at inference get ``status: "error: ..."``. ``model``
    is a model spec or an already built :class:`~realjudge.inference.judge.Judge`. An
    ``output`` that is a directory, lies under a file or is ``input`` itself is refused with a
    ``ValueError`` before anything is read or loaded. ``resume``: an ``output`` left by a
    stopped run keeps its lines and only the rows after them are graded
    (:func:`finished_lines`; sampled chains are seeded per record, so they are those of an
    uninterrupted run); the reading it was graded with (:data:`READING_KEYS`, recorded in
    ``OUT.settings.json``) must be this run's. Returns counts: ``n_rows``, ``n_scored``, ``n_bad_rows``,
    ``n_errors``, ``n_resumed`` (lines kept), ``status_counts``, ``output``, and ``reading``
    (the reading mode in words).
    """
    from collections import Counter

    from realjudge.data.loaders import load_records

    output = check_output_file(output, "output file")
    _refuse_same_file(input, output, "output file")
    loaded = load_records(str(input), split, skip_bad=skip_bad, seed=seed)
    # another input's output is refused before the model is loaded
    kept, end = finished_lines(output, loaded) if resume else ([], 0)
    judge = (
        model
        if isinstance(model, Judge)
        else load_judge(model, config or JudgeConfig(), device=device, dtype=dtype, seed=seed)
    )
    settings = reading_settings(judge, model)
    if kept:
        _check_same_reading(output, settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    settings_path(output).write_text(json.dumps(settings, indent=2) + "\n")
    rows = _stream(judge, loaded, output, kept, end)
    counts = Counter(str(r["status"]).split(":", 1)[0] for r in rows)
    return {
        "n_rows": len(rows),
        "n_scored": sum(counts[s] for s in ("ok", "forced_cue", "retokenized_cue")),
        "n_bad_rows": counts[BAD_ROW],
        "n_errors": counts["error"],
        "n_resumed": len(kept),
        "status_counts": dict(sorted(counts.items())),
        "output": str(output),
        "reading": judge.reading,
    }


def format_summary(metrics: dict, out: str | Path | None = None) -> str:
    """A short plain-text summary of :func:`run_eval`'s metrics for the console."""

    def fmt(v: Any) -> str:
        return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = [
        f"rows {metrics.get('n_total')}  scored {metrics.get('n')}  failed {metrics.get('n_failed')}"
    ]
    if metrics.get("reading"):
        lines.append(f"reading: {metrics['reading']}")
    for name in ("pearson", "spearman", "kendall", "rmse", "mae", "accuracy"):
        ci = metrics.get(f"{name}_ci")
        ci_txt = f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        lines.append(f"{name:<9}{fmt(metrics.get(name))}{ci_txt}")
    lines.append(
        f"leaked mass {fmt(metrics.get('mean_leaked_mass'))}  "
        f"forced-cue rate {fmt(metrics.get('forced_cue_rate'))}  "
        f"re-tokenized cue rate {fmt(metrics.get('retokenized_cue_rate'))}"
    )
    checks = metrics.get("checks")
    if checks:
        lines.append(
            f"item checks: accuracy {fmt(checks['accuracy'])}, readable in "
            f"{checks['n_parsable']} of {checks['n_feedbacks']} feedbacks"
        )
    rt = metrics.get("runtime") or {}
    if rt.get("examples_per_s"):
        lines.append(f"{rt['examples_per_s']:.2f} examples/s ({rt.get('backend')})")
    out = out if out is not None else rt.get("out")
    if out is not None:
        lines.append(f"output: {out}")
    return "\n".join(lines)
