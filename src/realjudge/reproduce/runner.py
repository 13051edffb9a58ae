"""``realjudge reproduce``: train every method of a preset over seeds, evaluate, aggregate.

For each seed, the runs of the experiment go in order (a warm-started run after the run it
starts from); each trained model is evaluated on every benchmark with one pass that records
both the RAIL prediction (expected score) and the decoded score, so the two read-outs of a
model come from the same feedbacks. The base model is evaluated once: its CoT is greedy, so
it does not depend on the seed.

Finished work is kept: a run whose output directory holds a finished model trained with the
same config, or an evaluation with the same settings, is not redone -- an interrupted
``reproduce`` continues where it stopped, and sweep variants share the runs they start from.
Configs are compared with ``OUT`` written as ``{out}``, so finished work can also be taken
from another reproduce directory (``--reuse DIR``): a sweep over REAL's knobs reuses the main
comparison's TRACT and RAFT runs instead of training them again.

A training run cut short (the process killed) resumes mid-run: it writes a checkpoint every
``save_steps`` steps (the training preset's, else the :class:`~realjudge.train.TrainConfig`
default), and the next ``reproduce`` continues it from the latest complete one when it was
started with the same settings -- ending on the weights, and so the ``results.json`` numbers,
of an uninterrupted run. The keys that only decide checkpointing and restarting
(:data:`RESTART_KEYS`) are left out of the fingerprints, as are config keys added since
a run was recorded, at the value that computes what the code before them did
(:data:`ADDED_KEYS`). Once a run is exported and recorded
as finished its ``checkpoints/`` are removed (the exported model is what the evaluations and
warm starts use). The training time recorded for a resumed run is the sum over every
(re)start of it: the trainer adds each attempt's time to the checkpoint's.

A warm-started run is named by the run it starts from as well: its fingerprint holds the
fingerprint of its starting run (``init_fingerprint``), so when that run is trained again
with other settings the runs started from it (and their evaluations) are redone too, here
and in a ``--reuse`` dir. The fingerprints of a preset that splits the Vicuna file hold the
split's digest (``data_split``, :func:`prepare_data`). Records from before these keys hold
neither: such a record stands for the split its output dir holds (a dir's split is never
remade) and for the starting run recorded in its output dir, if that run's record is not
newer than its own (:func:`_resolve`).

Layout of ``OUT``::

    data/                       prepared data (the Vicuna split)
    base/eval-<benchmark>/      the starting model's evaluations
    seed<k>/<run>/              a trained model (a ``realjudge train`` output dir)
    seed<k>/<run>/eval-<bench>/ its evaluations (predictions.jsonl, metrics.json, report.md)
    results.json  results.md  curves.png  scatter.png
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from realjudge.reproduce.presets import Benchmark, Experiment, RunSpec, get_preset

log = logging.getLogger(__name__)

#: Numbers kept from each evaluation (``metrics.json``): RAIL (expected score) first, then the
#: decoded score, then diagnostics.
EVAL_KEYS = {
    "pearson": ("pearson",),
    "spearman": ("spearman",),
    "rmse": ("rmse",),
    "decode_pearson": ("by_field", "decoded_score", "pearson"),
    "decode_spearman": ("by_field", "decoded_score", "spearman"),
    "forced_cue_rate": ("forced_cue_rate",),
    "leaked_mass": ("mean_leaked_mass",),
    "check_accuracy": ("checks", "accuracy"),  # the judge's item checks (embedded task, CoT)
    "n_items": ("n_total",),
}
DONE_FILE = "reproduce_done.json"
#: The output dir's folder of prepared data, the files of the Vicuna split written there and
#: the record of the settings that made it.
DATA_DIR = "data"
SPLIT_FILES = ("vicuna-train.jsonl", "vicuna-test.jsonl")
SPLIT_RECORD = "vicuna-split.json"


@dataclass
class ReproduceConfig:
    """One ``realjudge reproduce`` invocation.

    Attributes:
        preset: experiment preset (:data:`realjudge.reproduce.presets.PRESETS`).
        out: output directory (default ``runs/reproduce-<preset>``).
        seeds: number of seeds (default: the preset's).
        first_seed: seeds are ``first_seed .. first_seed + seeds - 1``.
        only: run only these rows, the variants and the rows they warm-start from (the base
            model is always evaluated); ``None``: all.
        variants: extra rows, ``RUN:key=value[,key=value]`` -- a copy of ``RUN`` with those
            training keys (a sweep point), named ``RUN[key=value,...]``.
        set: training keys for every run (``key=value``) or one run (``RUN.key=value``);
            ``RUN.max_steps=N`` sets a budget.
        eval_data: extra out-of-domain benchmark files (any format ``load_records`` reads).
        eval_limit: items per benchmark (default: the preset's).
        model: starting model (default: the preset's).
        smoke: a few steps per run, a few items per benchmark, one seed (CI).
        device: ``auto``/``cpu``/``cuda`` for training and evaluation (default: the preset's).
        launcher: run each training run as ``LAUNCHER -m realjudge.train --config FILE`` in
            a subprocess, e.g. ``accelerate launch --config_file
            configs/accelerate/deepspeed_zero3.yaml`` for multi-GPU or multi-node training
            (``None``: train in this process). Evaluation stays in this process.
        reuse: other reproduce output dirs; a run or evaluation missing from ``out`` is
            copied from the first of them that holds it finished with the same config
            (weights are hard-linked where the file system allows).
        command: the command line, recorded in the report.
        jobs: train this many runs at once, each in a worker process with its share of the
            threads (and GPUs) -- :mod:`realjudge.reproduce.parallel`; 1: one after the other
            in this process.
        only_exact: ``only`` names exactly the rows to run, with their warm starts: the
            variants are not added, and an empty list runs none (the base model's evaluation
            only). Set by :mod:`~realjudge.reproduce.parallel` for its workers.
        write: write ``results.json``, ``results.md`` and the plots (``False``: return the
            results only, as the workers of ``jobs`` do; their parent gathers).
    """

    preset: str = "cpu-embedded"
    out: str | None = None
    seeds: int | None = None
    first_seed: int = 0
    only: list[str] | None = None
    variants: list[str] = field(default_factory=list)
    set: list[str] = field(default_factory=list)
    eval_data: list[str] = field(default_factory=list)
    eval_limit: int | None = None
    model: str | None = None
    smoke: bool = False
    device: str | None = None
    launcher: str | None = None
    reuse: list[str] = field(default_factory=list)
    command: str | None = None
    jobs: int = 1
    only_exact: bool = False
    write: bool = True


# ---------------------------------------------------------------------------------- resolve


def parse_value(text: str) -> Any:
    """A ``key=value`` value: JSON (``0.1``, ``3e-5``, ``true``, ``null``, ``[a]`` lists need
    quotes), then YAML (``[q_proj, v_proj]``, ``True``), else the string itself."""
    import yaml

    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignments(text: str) -> dict[str, Any]:
    """``a=1,b=x`` -> ``{"a": 1, "b": "x"}``."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def variant_run(exp: Experiment, spec: str) -> RunSpec:
    """``REAL:beta=0.1,lambda_p=0`` -> a copy of run ``REAL`` named ``REAL[beta=0.1,lambda_p=0]``
    with those keys. ``init_from=RAFT`` changes the warm start; ``cot=false`` the evaluation."""
    if ":" not in spec:
        raise ValueError(f"variant {spec!r}: expected RUN:key=value[,key=value]")
    base, assigns = spec.split(":", 1)
    src = exp.run(base.strip())
    keys = parse_assignments(assigns)
    run = RunSpec(
        name=f"{src.name}[{assigns.strip()}]",
        variant_of=src.name,
        method=src.method,
        max_steps=int(keys.pop("max_steps", src.max_steps)),
        init_from=keys.pop("init_from", src.init_from),
        cot=bool(keys.pop("cot", src.cot)),
        overrides={**src.overrides, **keys},
    )
    if run.method is None:
        raise ValueError("the base model has no training keys to vary")
    return run


def resolve(cfg: ReproduceConfig) -> Experiment:
    """The preset with the command line applied: model, limits, ``set``, variants, extra
    benchmarks, smoke sizes, and the run subset (closed under warm starts)."""
    exp = get_preset(cfg.preset)
    if cfg.model:
        exp.model = cfg.model
    if cfg.device:
        exp.common["device"] = cfg.device
    variants = [variant_run(exp, spec) for spec in cfg.variants]
    exp.runs += variants
    # --smoke first: the explicit flags below (--set, --eval-limit, --seeds) win over it
    if cfg.smoke:
        exp.seeds = 1
        for r in exp.runs:
            r.max_steps = min(r.max_steps, 2)
            r.overrides = {**r.overrides, "batch_size": 2}
        for b in exp.benchmarks:
            b.limit = min(b.limit or 4, 4)
        exp.max_new_tokens = min(exp.max_new_tokens, 24)
        exp.common["max_new_tokens"] = min(exp.common.get("max_new_tokens", 24), 24)
        exp.curve_limit = min(exp.curve_limit, 4)
        exp.curve_points = min(exp.curve_points, 1)
    for item in cfg.set:
        key, value = item.split("=", 1) if "=" in item else (item, "")
        if not value:
            raise ValueError(f"--set {item!r}: expected [RUN.]key=value")
        run_name, _, key = key.rpartition(".") if "." in key else ("", "", key)
        targets = [exp.run(run_name)] if run_name else [r for r in exp.runs if r.method]
        for r in targets:
            if key == "max_steps":
                r.max_steps = int(parse_value(value))
            else:
                r.overrides[key] = parse_value(value)
    for path in cfg.eval_data:
        limit = cfg.eval_limit if cfg.eval_limit is not None else (4 if cfg.smoke else None)
        exp.benchmarks.append(Benchmark(Path(path).stem, path, None, limit, "out"))
    if cfg.eval_limit is not None:
        for b in exp.benchmarks:
            b.limit = cfg.eval_limit
    if cfg.seeds is not None:
        exp.seeds = cfg.seeds
    if cfg.only or cfg.only_exact:
        keep: set[str] = set()
        named = list(cfg.only or [])
        for name in named if cfg.only_exact else [*named, *(v.name for v in variants)]:
            r: RunSpec | None = exp.run(name)
            while r is not None and r.name not in keep:
                keep.add(r.name)
                r = exp.run(r.init_from) if r.init_from else None
        exp.runs = [r for r in exp.runs if r.name in keep or r.method is None]
    seen: set[str] = set()
    for r in exp.runs:
        if r.init_from and r.init_from not in seen:
            raise ValueError(
                f"run {r.name} starts from {r.init_from}, which comes later or not at all"
            )
        seen.add(r.name)
    return exp


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_digests: dict[tuple[str, int, int], str] = {}


def split_digest(data_dir: Path) -> str | None:
    """The sha256 of the Vicuna split in ``data_dir`` (:data:`SPLIT_FILES`, names and
    contents); ``None`` when it does not hold both files."""
    h = hashlib.sha256()
    for name in SPLIT_FILES:
        path = data_dir / name
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _digests:
            _digests[key] = _sha256(path)
        h.update(f"{name}\0{_digests[key]}\0".encode())
    return h.hexdigest()


class SplitMismatchError(ValueError):
    """The output dir holds a Vicuna split that the preset's settings do not make."""


def prepare_data(exp: Experiment, data_dir: Path) -> None:
    """Write the Vicuna train / held-out split by question (fixed split, seed 0: every seed
    trains and evaluates on the same questions) and record what made it (the source file's
    sha256, ``test_fraction``, the seed) and its digest in :data:`SPLIT_RECORD`.

    A split already there is kept when it is the one these settings make; otherwise
    :class:`SplitMismatchError`: the finished work of the dir was trained and evaluated on
    it (records older than the ``data_split`` fingerprint key name it by its path only), so it
    is never remade in place -- another ``--out`` takes the new split."""
    if not exp.vicuna_split:
        return
    from realjudge.data.loaders import load_records, split_by_group, write_jsonl

    src = Path(exp.vicuna_split["path"])
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found (the {exp.name} preset needs it)")
    settings = {
        "source_sha256": _sha256(src),
        "test_fraction": float(exp.vicuna_split["test_fraction"]),
        "seed": 0,
    }
    record_path = data_dir / SPLIT_RECORD
    existing = split_digest(data_dir)
    try:
        recorded = json.loads(record_path.read_text())
    except (OSError, ValueError):
        recorded = None
    if (
        existing is not None
        and isinstance(recorded, dict)
        and recorded.get("settings") == settings
        and recorded.get("sha256") == existing
    ):
        return
    records = load_records(str(src)).records
    train, test = split_by_group(records, settings["test_fraction"], seed=0)
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".split-") as tmp:
        made_dir = Path(tmp)
        write_jsonl(train, made_dir / SPLIT_FILES[0])
        write_jsonl(test, made_dir / SPLIT_FILES[1])
        made = split_digest(made_dir)
        if existing is not None and existing != made:
            was = recorded.get("settings") if isinstance(recorded, dict) else None
            raise SplitMismatchError(
                f"{data_dir} holds a Vicuna split that the {exp.name} preset's vicuna_split "
                f"({src}, test_fraction {settings['test_fraction']}) does not make "
                f"({'made with ' + json.dumps(was) if was else 'its settings not recorded'}; "
                f"now {json.dumps(settings)}): the finished work in {data_dir.parent} was "
                "trained and evaluated on it; use another --out"
            )
        if existing is None:
            for name in SPLIT_FILES:
                os.replace(made_dir / name, data_dir / name)
            log.info("vicuna split: %d train rows, %d held-out rows", len(train), len(test))
    record = {"source": str(src), "settings": settings, "sha256": made}
    record_path.write_text(json.dumps(record, indent=2))


def _fill(spec: str | None, data_dir: Path) -> str | None:
    return None if spec is None else spec.replace("{data_dir}", str(data_dir))


def slug(name: str) -> str:
    """A run name as a directory name (``REAL[beta=0.1]`` -> ``REAL_beta=0.1_``)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)


# -------------------------------------------------------------------------------- train/eval


def train_overrides(
    exp: Experiment, run: RunSpec, seed: int, out: Path, init: Path | None, data_dir: Path
) -> dict[str, Any]:
    """The training config keys of one run (preset < common < run's own < fixed ones)."""
    keys: dict[str, Any] = {
        "model": exp.model,
        "data": _fill(exp.train_data, data_dir),
        "data_split": exp.train_split,
        "report_to": "tensorboard",
        # periodic checkpoints (save_steps) make a killed run resumable; a finished one is
        # exported and never resumed here
        "save_final": False,
        **exp.common,
        **run.overrides,
        "max_steps": run.max_steps,
        "seed": seed,
        "out": str(out),
        "overwrite": True,
    }
    curve = exp.validation or next(
        (b for b in exp.benchmarks if b.name == exp.curve_benchmark), None
    )
    if curve is not None and exp.curve_points > 0:
        keys.update(
            eval_data=_fill(curve.data, data_dir),
            eval_split=curve.split,
            eval_limit=exp.curve_limit,
            eval_steps=max(1, run.max_steps // (exp.curve_points + 1)),
            eval_mode="cot" if run.cot else "score",
        )
    else:
        keys.update(eval_data=None, eval_limit=0, eval_steps=0)
    if init is not None:
        keys["init_from"] = str(init)
    return keys


def portable(fingerprint: Any, root: Path) -> Any:
    """``fingerprint`` as plain JSON with every path under ``root`` (an absolute directory)
    written as ``{out}/...``, so that the same work done in another output dir compares
    equal."""
    text = json.dumps(fingerprint, default=str)
    prefix = json.dumps(str(root))[1:-1]
    text = re.sub(re.escape(prefix) + r'(?=/|")', "{out}", text)
    return json.loads(text)


#: Training keys that decide how a run is checkpointed and restarted, not what it trains:
#: left out of the fingerprints, so that finished work matches whatever they were.
RESTART_KEYS = ("resume", "overwrite", "save_steps", "save_final", "save_total_limit")

#: Config keys added after finished runs were recorded, each with the value at which the
#: code computes what it computed before the key existed. At that value a key is left out of
#: the fingerprints, so the records written before it still match -- where that depends on
#: the rest of the config, only when :data:`ADDED_KEYS_WHEN` says so.
#: (``share_prefix_forward``'s former value is ``False``: its default, ``True``, computes the
#: same up to float rounding, which over hundreds of steps is other weights, so a run with it
#: is not one recorded without it.)
ADDED_KEYS: dict[str, Any] = {
    "raft_lambda_p": 0.0,
    "disable_dropout": True,
    "share_prefix_forward": False,
}

#: For a key of :data:`ADDED_KEYS` whose value computes as before only in some configs: the
#: test of the config. ``disable_dropout: True`` computes as before for a run without LoRA on
#: a model without dropout (every preset's RL runs); a LoRA run recorded before the key
#: trained with its ``lora_dropout`` active, so there the key stays in the fingerprint.
ADDED_KEYS_WHEN: dict[str, Callable[[dict[str, Any]], bool]] = {
    "disable_dropout": lambda config: not config.get("lora"),
}


def train_fingerprint(config: dict[str, Any], root: Path) -> Any:
    """The portable fingerprint of a training run with ``config`` (see :func:`portable`),
    without :data:`RESTART_KEYS` and without :data:`ADDED_KEYS` at their former value. (What
    :func:`train_run` compares adds the starting run's fingerprint and the data split's
    digest: :func:`run_fingerprint`.)"""
    return _without_restart_keys(portable({"config": config}, root))


def _at_former_value(key: str, value: Any, config: dict[str, Any]) -> bool:
    if key not in ADDED_KEYS or value != ADDED_KEYS[key]:
        return False
    when = ADDED_KEYS_WHEN.get(key)
    return when is None or when(config)


def _without_restart_keys(fingerprint: Any) -> Any:
    config = fingerprint.get("config") if isinstance(fingerprint, dict) else None
    if not isinstance(config, dict):
        return fingerprint
    kept = {
        k: v
        for k, v in config.items()
        if k not in RESTART_KEYS and not _at_former_value(k, v, config)
    }
    return {**fingerprint, "config": kept}


def _in_home(path: Any, home: Path) -> Path | None:
    """A portable path (``{out}/...``) as a path inside ``home``; ``None``: not one."""
    if not isinstance(path, str) or not path.startswith("{out}/"):
        return None
    return home / path.removeprefix("{out}/")


#: How many warm starts deep :func:`_resolve` follows a record's starting runs.
_MAX_CHAIN = 32


def _resolve(fingerprint: Any, home: Path, written_ns: int, depth: int = 0) -> Any:
    """The fingerprint a record in the output dir ``home``, written at ``written_ns``, stands
    for: portable, without the keys :func:`_without_restart_keys` drops, and with the keys
    added since older records were written filled in from ``home``:

    - ``data_split``: the digest of the Vicuna split ``home`` holds (:func:`split_digest`;
      :func:`prepare_data` never remakes a dir's split, so it is the one the work used);
    - ``init_fingerprint`` of a warm-started run: the resolved fingerprint of the starting
      run recorded in ``home``, if that record is not newer than this one (a starting run
      trained again, or copied in, since this run was trained is not the one it started
      from: ``None``, the record stands for nothing).
    """
    fp = _without_restart_keys(portable(fingerprint, home))
    if not isinstance(fp, dict):
        return fp
    fp = dict(fp)
    if "data_split" not in fp:
        split = split_digest(home / DATA_DIR)
        if split is not None:
            fp["data_split"] = split
    config = fp.get("config")
    init = config.get("init_from") if isinstance(config, dict) else None
    if init and "init_fingerprint" not in fp:
        parent = _in_home(init, home)
        if parent is None or depth >= _MAX_CHAIN:
            return None
        try:
            if (parent / DONE_FILE).stat().st_mtime_ns > written_ns:
                return None
        except OSError:
            return None
        fp["init_fingerprint"] = _recorded(parent, home, depth + 1)
        if fp["init_fingerprint"] is None:
            return None
    return fp


def _read_record(path: Path) -> tuple[dict[str, Any], int] | None:
    """A finished-work record and the time it was written; ``None``: none readable."""
    try:
        saved = json.loads(path.read_text())
        written_ns = path.stat().st_mtime_ns
    except (OSError, ValueError):
        return None
    return (saved, written_ns) if isinstance(saved, dict) else None


def _recorded(run_dir: Path, home: Path, depth: int = 0) -> Any:
    """The resolved fingerprint (:func:`_resolve`) of the finished work recorded in
    ``run_dir``, inside the output dir ``home``; ``None``: no record, or one that stands for
    nothing."""
    record = _read_record(run_dir / DONE_FILE)
    if record is None:
        return None
    saved, written_ns = record
    return _resolve(saved.get("fingerprint"), home, written_ns, depth)


def _finished(path: Path, wanted: Any, home: Path) -> float | None:
    """The seconds the finished work recorded at ``path`` took, if it was done with the
    portable fingerprint ``wanted``; ``None``: not done, or done differently. ``home`` is the
    output dir the record sits in (older records, with absolute paths, match too; records
    older than a fingerprint key: :func:`_resolve`)."""
    record = _read_record(path)
    if record is None:
        return None
    saved, written_ns = record
    fp = _resolve(saved.get("fingerprint"), home, written_ns)
    same = fp is not None and fp == wanted
    return float(saved.get("seconds", 0.0)) if same else None


#: How finished work sampled and read scores, as its record says (:func:`_mark_done`), with
#: what a record older than the field implies: the code before the field decoded with the
#: model's own attention, found the top-p nucleus by sorting the vocabulary, and read every
#: CoT score with a second forward pass.
SAMPLING_RECORD = {
    "decode_attention": "sdpa",
    "top_p": "sort",
    "cue_scores": "forward",
    "kv_cache": "dynamic",
}


def _mark_done(path: Path, wanted: Any, seconds: float, exp: Experiment) -> None:
    """Record finished work: its fingerprint, its seconds, and how it sampled here -- the
    attention it decoded with (:func:`realjudge.attention.decode_attention`) and how it found
    the top-p nucleus (:data:`realjudge.inference.rollout.TOP_P_IMPL`) -- which the
    fingerprint leaves out like the precision ``auto`` resolves to: they change the draws,
    not the distribution."""
    from realjudge.inference.rollout import TOP_P_IMPL
    from realjudge.inference.settings import resolve_kv_cache
    from realjudge.models import pick_device, resolve_mixed_precision, resolved_decode_attention

    device = pick_device(str(exp.common.get("device", "auto")))
    train = resolve_mixed_precision(
        str(exp.common.get("mixed_precision", "auto")), device.type == "cuda"
    )
    payload = {
        "fingerprint": wanted,
        "seconds": seconds,
        "decode_attention": resolved_decode_attention(device, train),
        "top_p": TOP_P_IMPL,
        # where CoT evaluation reads the score after a cue the judge wrote itself
        "cue_scores": "generation",
        # the KV cache CoT evaluation generates into (JudgeConfig.kv_cache "auto")
        "kv_cache": resolve_kv_cache("auto", device),
    }
    path.write_text(json.dumps(payload, indent=2))


def recorded_sampling(run_dir: Path) -> dict[str, set[str]]:
    """How the finished work in ``run_dir`` (its training and its evaluations) sampled, as
    their records say: each key of :data:`SAMPLING_RECORD` -> the values found (a record
    without a key gets the value of the code older than that key)."""
    found: dict[str, set[str]] = {key: set() for key in SAMPLING_RECORD}
    for path in [run_dir / DONE_FILE, *sorted(run_dir.glob(f"eval-*/{DONE_FILE}"))]:
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key, older in SAMPLING_RECORD.items():
            found[key].add(str(saved.get(key, older)))
    return found


#: Files that are never rewritten in place, so a reused copy may share them (hard links).
_LINKABLE = (".safetensors", ".bin", ".pt", ".gguf")


def _link_or_copy(src: str, dst: str) -> None:
    if src.endswith(_LINKABLE):
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def _adopt(out: Path, root: Path, reuse: Sequence[Path], wanted: Any) -> float | None:
    """Copy the finished work for ``out`` from the first reuse dir that holds it with the
    portable fingerprint ``wanted``; return its recorded seconds (``None``: none has it).
    The records copied with it are rewritten in the portable form, so they match in
    ``root`` too."""
    rel = out.relative_to(root)
    for other in reuse:
        src = other / rel
        seconds = _finished(src / DONE_FILE, wanted, other)
        if seconds is None:
            continue
        log.info("reusing %s (from %s)", out, src)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(src, out, copy_function=_link_or_copy)
        for done in out.rglob(DONE_FILE):  # nested evaluations keep matching in their new home
            saved = json.loads(done.read_text())
            saved["fingerprint"] = portable(saved["fingerprint"], other)
            done.write_text(json.dumps(saved, indent=2))
        return seconds
    return None


def _done_before(out: Path, root: Path, reuse: Sequence[Path], wanted: Any) -> float | None:
    """The recorded seconds of work finished with ``wanted``, either in ``out`` itself or
    copied into it from a reuse dir (:func:`_adopt`); ``None``: it has to be done."""
    done = _finished(out / DONE_FILE, wanted, root)
    if done is not None:
        log.info("reusing %s", out)
        return done
    return _adopt(out, root, reuse, wanted)


def _train_seconds(out: Path, default: float) -> float:
    """The training seconds ``out/metrics.json`` recorded over every (re)start of the run
    (a run resumed from a checkpoint adds its time to the checkpoint's), else ``default``."""
    from realjudge.train.trainer import METRICS_FILE

    try:
        return float(json.loads((out / METRICS_FILE).read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def run_fingerprint(
    config: dict[str, Any], root: Path, init: Path | None, data_dir: Path
) -> dict[str, Any]:
    """What a training run with ``config`` in the output dir ``root`` is compared by: its
    :func:`train_fingerprint`; for a warm start from the run dir ``init``, that run's
    recorded fingerprint (``init_fingerprint``: its path alone does not say which training
    made it); with a Vicuna split in ``data_dir``, the split's digest (``data_split``)."""
    wanted: dict[str, Any] = dict(train_fingerprint(config, root))
    if init is not None:
        wanted["init_fingerprint"] = _recorded(init, root)
    split = split_digest(data_dir)
    if split is not None:
        wanted["data_split"] = split
    return wanted


def train_run(
    exp: Experiment,
    run: RunSpec,
    seed: int,
    out: Path,
    init: Path | None,
    data_dir: Path,
    launcher: str | None,
    root: Path,
    reuse: Sequence[Path] = (),
) -> tuple[Path, float]:
    """Train one run unless ``out`` (inside the output dir ``root``) already holds it with the
    same config, or a ``reuse`` dir does; returns the model dir and the training time (of the
    original run when reused)."""
    from realjudge.train.config import build_config
    from realjudge.train.modeling import CHECKPOINTS
    from realjudge.train.trainer import train

    cfg = build_config(
        run.method,
        preset=exp.train_preset,
        overrides=train_overrides(exp, run, seed, out, init, data_dir),
    )
    wanted = run_fingerprint(cfg.to_dict(), root, init, data_dir)
    done = _done_before(out, root, reuse, wanted)
    if done is not None:
        return out, done
    resume_from = _unfinished_checkpoint(out, wanted, root)
    if resume_from is not None:
        log.info("resuming %s from %s", out, resume_from.name)
        cfg.resume = True
    elif out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    if launcher:
        import shlex
        import subprocess

        config_file = out.parent / f"{out.name}.train.json"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        cmd = [*shlex.split(launcher), "-m", "realjudge.train", "--config", str(config_file)]
        log.info("launching %s", shlex.join(cmd))
        subprocess.run(cmd, check=True)
    else:
        train(cfg)
    elapsed = _train_seconds(out, default=time.perf_counter() - t0)
    _mark_done(out / DONE_FILE, wanted, elapsed, exp)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # exported: no longer needed
    return out, elapsed


def _unfinished_checkpoint(out: Path, wanted: Any, root: Path) -> Path | None:
    """The latest complete checkpoint of a run in ``out`` that was started with the settings
    of the fingerprint ``wanted`` and killed before it finished; ``None``: there is none."""
    from realjudge.train.config import load_saved_config
    from realjudge.train.modeling import latest_checkpoint

    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return None
    try:
        saved = load_saved_config(ckpt).to_dict()
        written_ns = ckpt.stat().st_mtime_ns
    except (OSError, ValueError):  # unreadable: train afresh
        return None
    # the checkpoint's config names the starting run by its path: it stands for the starting
    # run recorded now only if that run was recorded before the checkpoint was written
    started = _resolve({"config": saved}, root, written_ns)
    return ckpt if started is not None and started == wanted else None


def _same_model(model: Path, root: Path, other: Path) -> bool:
    """Whether the output dir ``other`` holds, where ``root`` holds the run dir ``model``, the
    same trained model: a finished-training record with the same fingerprint. A model outside
    ``root`` (the base model, a checkpoint path, a hub id) is named by the evaluation's own
    settings: always ``True``. A run dir of ``root`` without a training record: ``False``."""
    try:
        rel = model.relative_to(root)
    except ValueError:
        return True
    wanted = _recorded(model, root)
    if wanted is None:
        return False
    return _finished(other / rel / DONE_FILE, wanted, other) is not None


def eval_run(
    exp: Experiment,
    model: str,
    cot: bool,
    bench: Benchmark,
    out: Path,
    data_dir: Path,
    device: str,
    root: Path,
    reuse: Sequence[Path] = (),
) -> tuple[dict[str, Any], float]:
    """Evaluate (or reuse the evaluation made with the same settings in ``out``, inside the
    output dir ``root``, or in a ``reuse`` dir); returns the metrics and the seconds the
    evaluation took."""
    from realjudge.evaluate.run import EvalConfig, run_eval

    t0 = time.perf_counter()
    ecfg = EvalConfig(
        model=model,
        data=_fill(bench.data, data_dir) or "",
        split=bench.split,
        limit=bench.limit,
        cot=cot,
        samples=1,
        max_new_tokens=exp.max_new_tokens,
        batch_size=exp.eval_batch_size,
        out=str(out),
        seed=0,  # the same items for every seed; greedy CoT
        n_boot=200,
        device=None if device == "auto" else device,
        progress=True,
    )
    # the flat layout of earlier records; how the score after a cue the judge wrote is read
    # (generation pass or a second forward) and the KV cache the chains are generated into
    # move it within rounding: recorded by _mark_done (SAMPLING_RECORD), not part of the
    # settings, so earlier evaluations stay reusable
    settings = {k: v for k, v in ecfg.to_dict().items() if k not in ("reread_cue", "kv_cache")}
    split = split_digest(data_dir)
    if split is not None:  # the benchmark files of the split are named by their path only
        settings["data_split"] = split
    wanted = portable(settings, root)
    metrics_path = out / "metrics.json"
    # the settings name the model by its path only: adopt an evaluation of a run dir only
    # from a reuse dir whose run there is the same trained model
    reuse = [d for d in reuse if _same_model(Path(model), root, d)]
    done = _done_before(out, root, reuse, wanted)
    if done is not None and metrics_path.is_file():
        return json.loads(metrics_path.read_text())["metrics"], done
    metrics = run_eval(ecfg)
    elapsed = time.perf_counter() - t0
    _mark_done(out / DONE_FILE, wanted, elapsed, exp)
    return metrics, elapsed


def pick(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The numbers of :data:`EVAL_KEYS` from an evaluation's metrics."""
    out: dict[str, float | None] = {}
    for name, path in EVAL_KEYS.items():
        v: Any = metrics
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        out[name] = None if v is None else float(v)
    return out


def read_curve(run_dir: Path, metric: str = "pearson") -> list[tuple[int, float]]:
    """``(step, eval/<metric>)`` points of a training run's periodic evaluation (``pearson``,
    or ``check_accuracy``: the accuracy of the judge's item-by-item checks, CoT evaluation of
    the embedded task)."""
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    pts = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get(f"eval/{metric}") is not None:
            pts.append((int(row["step"]), float(row[f"eval/{metric}"])))
    return pts


def _train_log(run_dir: Path) -> list[dict[str, Any]]:
    """The per-step rows of a run's ``train_log.jsonl`` (none when it has no log)."""
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_throughput(run_dir: Path) -> dict[str, float | None]:
    """Rollout and training tokens/s of a run, from its per-step log (sums over steps)."""
    tot = {"rollout/tokens": 0.0, "time/rollout_s": 0.0, "train/tokens": 0.0, "time/update_s": 0.0}
    for row in _train_log(run_dir):
        for k in tot:
            v = row.get(k)
            if isinstance(v, (int, float)):
                tot[k] += float(v)

    def rate(n: str, t: str) -> float | None:
        return tot[n] / tot[t] if tot[t] > 0 and tot[n] > 0 else None

    return {
        "rollout_tokens_per_s": rate("rollout/tokens", "time/rollout_s"),
        "train_tokens_per_s": rate("train/tokens", "time/update_s"),
    }


def read_training_signal(run_dir: Path) -> dict[str, float | None]:
    """What an RL run had to learn from, from its per-step log (means over the logged steps):
    ``tied_groups``, the fraction of prompt groups whose rollouts all got the same reward
    (their advantage is 0: no policy gradient); ``sq_err``, the squared error of the judge's
    expected score on the training batch (GRPO, REAL: after their own rollouts' feedbacks;
    SFT, TRACT: after the reference feedback; RAFT: without feedback). ``None``
    where the run's method does not log it."""
    sums: dict[str, list[float]] = {"frac_groups_zero_std": [], "sq_err": []}
    for row in _train_log(run_dir):
        for k, xs in sums.items():
            v = row.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                xs.append(float(v))

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return {"tied_groups": mean(sums["frac_groups_zero_std"]), "sq_err": mean(sums["sq_err"])}


# --------------------------------------------------------------------------------- the run


def _prediction_paths(run_dir: Path, benches: list[Benchmark]) -> dict[str, str]:
    return {b.name: str(run_dir / f"eval-{b.name}" / "predictions.jsonl") for b in benches}


def reuse_dirs(dirs: Sequence[str]) -> list[Path]:
    """The ``--reuse`` dirs, absolute. One that does not exist yet is kept, with a warning: the
    other half of a seed split over two processes creates its output dir when it starts
    (``docs/reproduce.md``), and each run looks for its finished work there when it comes to
    it; one that is not a directory is an error."""
    out = []
    for d in dirs:
        path = Path(d).resolve()
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"--reuse {path}: not a directory")
        if not path.exists():
            log.warning(
                "--reuse %s does not exist (yet): nothing is reused from it until it does", path
            )
        out.append(path)
    return out


def run_reproduce(cfg: ReproduceConfig) -> dict[str, Any]:
    """Run the experiment; write and return ``results.json`` (see :mod:`realjudge.reproduce`).
    With ``cfg.jobs > 1`` the runs train in worker processes
    (:func:`realjudge.reproduce.parallel.run_parallel`)."""
    if cfg.jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {cfg.jobs}")
    if cfg.jobs > 1:
        from realjudge.reproduce.parallel import run_parallel

        return run_parallel(cfg)
    return run_sequential(cfg)


def output_dir(cfg: ReproduceConfig, exp: Experiment) -> Path:
    """Where ``cfg``'s results go: ``cfg.out``, by default ``runs/reproduce-<preset>``."""
    return Path(cfg.out or f"runs/reproduce-{exp.name}").resolve()


def run_sequential(cfg: ReproduceConfig, started: float | None = None) -> dict[str, Any]:
    """The runs of ``cfg`` one after the other in this process (finished ones reused), then
    their results; ``started``: the ``perf_counter`` the total wall time counts from."""
    from realjudge.models import runtime_environment
    from realjudge.reproduce.report import write_results

    exp = resolve(cfg)
    out = output_dir(cfg, exp)
    out.mkdir(parents=True, exist_ok=True)
    reuse = reuse_dirs(cfg.reuse)
    data_dir = out / DATA_DIR
    prepare_data(exp, data_dir)
    device = str(exp.common.get("device", "auto"))
    seeds = list(range(cfg.first_seed, cfg.first_seed + exp.seeds))

    per_seed: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    check_curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    timings: dict[str, dict[str, float]] = {}
    throughput: dict[str, dict[str, dict[str, float | None]]] = {}
    training_signal: dict[str, dict[str, dict[str, float | None]]] = {}
    # how each seed's runs sampled (decode attention, top-p), as they recorded it when they
    # ran (this invocation may only gather work done by other code)
    sampled: dict[str, dict[str, set[str]]] = {}
    predictions: dict[str, dict[str, str]] = {}
    # the machine and the precision `auto` resolves to, per seed: seeds run in different
    # sessions may land on different machines (see `report --merge`)
    environment: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter() if started is None else started

    def evaluate_model(model: str, cot: bool, where: Path) -> tuple[dict[str, Any], float]:
        scores, seconds = {}, 0.0
        for b in exp.benchmarks:
            metrics, t = eval_run(
                exp, model, cot, b, where / f"eval-{b.name}", data_dir, device, out, reuse
            )
            scores[b.name] = pick(metrics)
            seconds += t
        return scores, seconds

    base = next((r for r in exp.runs if r.method is None), None)
    if base is not None:
        base_scores, t_eval = evaluate_model(exp.model, base.cot, out / "base")
        per_seed[base.name] = {str(s): base_scores for s in seeds}
        timings[base.name] = {"eval_s": t_eval}
        predictions[base.name] = _prediction_paths(out / "base", exp.benchmarks)

    for seed in seeds:
        environment[str(seed)] = runtime_environment(
            device, str(exp.common.get("mixed_precision", "auto"))
        )
        if cfg.jobs > 1:  # the runs trained in workers, each with its share of the threads
            from realjudge.reproduce.parallel import threads_per_job

            environment[str(seed)].update(jobs=cfg.jobs, threads=threads_per_job(cfg.jobs))
        trained: dict[str, Path] = {}
        for run in exp.runs:
            if run.method is None:
                continue
            run_dir = out / f"seed{seed}" / slug(run.name)
            init = trained[run.init_from] if run.init_from else None
            log.info("seed %d: %s (%s, %d steps)", seed, run.name, run.method, run.max_steps)
            model_dir, t_train = train_run(
                exp, run, seed, run_dir, init, data_dir, cfg.launcher, out, reuse
            )
            trained[run.name] = model_dir
            scores, t_eval = evaluate_model(str(model_dir), run.cot, run_dir)
            per_seed.setdefault(run.name, {})[str(seed)] = scores
            timings.setdefault(run.name, {}).update(
                {f"seed{seed}_train_s": t_train, f"seed{seed}_eval_s": t_eval}
            )
            if seed == seeds[0]:
                predictions[run.name] = _prediction_paths(run_dir, exp.benchmarks)
            curves.setdefault(run.name, {})[str(seed)] = read_curve(run_dir)
            checks = read_curve(run_dir, "check_accuracy")
            if checks:
                check_curves.setdefault(run.name, {})[str(seed)] = checks
            throughput.setdefault(run.name, {})[str(seed)] = read_throughput(run_dir)
            for key, values in recorded_sampling(run_dir).items():
                sampled.setdefault(str(seed), {}).setdefault(key, set()).update(values)
            training_signal.setdefault(run.name, {})[str(seed)] = read_training_signal(run_dir)

    for seed, found in sampled.items():
        for key, values in found.items():
            if values:
                environment[seed][key] = "+".join(sorted(values))
    results = {
        "preset": exp.name,
        "description": exp.description,
        "command": cfg.command,
        "seeds": seeds,
        "benchmarks": [asdict(b) for b in exp.benchmarks],
        "in_domain": [b.name for b in exp.benchmarks if b.domain == "in"],
        "out_of_domain": [b.name for b in exp.benchmarks if b.domain == "out"],
        "runs": [asdict(r) for r in exp.runs],
        "train_preset": exp.train_preset,
        "common": exp.common,
        "eval_max_new_tokens": exp.max_new_tokens,
        "per_seed": per_seed,
        "curves": curves,
        "check_curves": check_curves,
        "throughput": throughput,
        "training_signal": training_signal,
        "environment": environment,
        "timings_s": {**timings, "total": {"wall_s": time.perf_counter() - t_start}},
        "predictions": predictions,
        "notes": exp.notes,
        "curve": {
            "benchmark": exp.validation.name if exp.validation else exp.curve_benchmark,
            "split": exp.validation.split if exp.validation else None,
            "limit": exp.curve_limit,
            "points": exp.curve_points,
        },
    }
    return write_results(results, out) if cfg.write else results
