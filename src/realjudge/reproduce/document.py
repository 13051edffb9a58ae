"""``realjudge report``: assemble ``docs/results.md`` from finished runs, reproducibly.

It runs nothing: it reads results JSON files -- the repository copies
``docs/results/<preset>.json`` (:func:`realjudge.reproduce.report.repository_json`) or the
``results.json`` of ``realjudge reproduce`` output directories -- and the JSON files written by
``realjudge bench ... --json``, draws each preset's tables and plots from those numbers alone
(plots go next to the document, in ``img/``), and writes one markdown file whose header names
the command that wrote it and the git commit of the code, so every number in it can be traced
to a rerunnable command and checked against the committed JSON. An optional hand-written
discussion file is included verbatim after the header.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def git_commit(cwd: str | Path = ".") -> str:
    """Short hash of HEAD (``+dirty`` when the tree has uncommitted changes), or ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def bench_text(data: dict[str, Any]) -> str:
    """The console table of a ``realjudge bench ... --json`` result, by its ``kind``."""
    kind = data.get("kind")
    if kind == "inference":
        from realjudge.bench import format_inference_bench

        return format_inference_bench(data)
    if kind == "train-step":
        from realjudge.bench import train_step_ratio_lines

        rows = [
            f"{m.upper()}: update {r['update_s']:.3f} s, full step {r['full_step_s']:.3f} s, "
            f"step memory {r['footprint_mib']:.1f} MiB"
            for m, r in data["results"].items()
        ]
        return "\n".join(rows + train_step_ratio_lines(data))
    if kind == "cpu":
        from realjudge.bench.cpu import format_cpu_bench

        return format_cpu_bench(data)
    if kind == "precision":
        from realjudge.bench.cpu import format_precision_gap

        return format_precision_gap(data)
    if kind == "sweep":
        from realjudge.bench.sweep import format_sweep

        return format_sweep(data)
    return data.get("markdown") or json.dumps(data, indent=2)[:4000]


def _bench_section(path: Path, img: Path) -> str:
    """A bench JSON as a markdown section: the command, then its table as printed, then its
    plot (copied into ``img``; when the plot file is gone, an earlier copy there is used)."""
    data: dict[str, Any] = json.loads(path.read_text())
    title = data.get("command") or path.stem
    body = data.get("markdown") or "```\n" + bench_text(data) + "\n```"
    section = f"### `{title}`\n\n{body}\n"
    plot = data.get("plot")
    if plot:
        dest = img / Path(plot).name
        if Path(plot).is_file():
            img.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plot, dest)
        if dest.is_file():
            section += f"\n![{dest.stem}](img/{dest.name})\n"
    return section


def load_results(source: str | Path) -> tuple[str, dict[str, Any] | None]:
    """``(name, results)`` of a ``--results`` source: a reproduce output dir (its results.json,
    in repository form) or a results JSON file; ``results`` is ``None`` for a bench JSON (it has
    a ``kind`` and no ``preset``). ``name`` (the dir name or the file stem) prefixes its plots.
    Raises ``ValueError`` naming the file when it does not validate."""
    from realjudge.reproduce.report import repository_json, stale_claims, validate_results_json

    path = Path(source)
    if path.is_dir():
        data = json.loads((path / "results.json").read_text())
        try:
            return path.name, repository_json(data)
        except ValueError as e:
            raise ValueError(f"{path / 'results.json'}: {e}") from None
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if isinstance(data, dict) and "kind" in data and "preset" not in data:
        return path.stem, None
    problems = validate_results_json(data)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    stale = stale_claims(data)
    if stale:
        log.warning(
            "%s: the stored verdicts of %d claims differ from the claims checked on its "
            "per-seed numbers (the document shows the latter): %s",
            path,
            len(stale),
            "; ".join(stale),
        )
    return path.stem, data


def build_document(
    results_sources: Sequence[str | Path],
    bench_files: Sequence[str | Path],
    out: str | Path,
    *,
    command: str,
    discussion: str | Path | None = None,
    title: str = "Results",
) -> Path:
    """Write the document to ``out`` from ``results_sources`` (results JSON files or reproduce
    dirs, :func:`load_results`; bench JSONs among them join ``bench_files``). Every source is
    read and checked before anything is written; plots go to ``<out dir>/img/<name>-<plot>``."""
    from realjudge.reproduce.report import render_results, write_plots

    out = Path(out)
    img = out.parent / "img"
    loaded = [load_results(s) for s in results_sources]
    benches = [Path(f) for f in bench_files]
    benches += [Path(s) for s, (_, d) in zip(results_sources, loaded, strict=True) if d is None]
    # the commit of the code that writes the document (as write_results records it), not of
    # whatever repository the document is written into
    commit = git_commit(Path(__file__).parent)
    parts = [
        f"# {title}",
        "",
        f"Generated by `{command}` at commit `{commit}`. Every table below is "
        "the output of the command named above it. Runs are seeded (data, data order, "
        "rollouts), so on a CPU a rerun with the same seeds, by the code that trained them "
        "and on the same kind of machine (each section's `Machines:` line), is expected to "
        "give the same numbers, timings aside.",
        "",
    ]
    if discussion:
        parts += [Path(discussion).read_text().strip(), ""]
    for name, results in loaded:
        if results is None:
            continue
        plots = write_plots(results, img, prefix=f"{name}-")
        md = render_results(results, {k: f"img/{v}" for k, v in plots.items()})
        parts += [md.strip(), ""]
    if benches:
        parts += ["## Performance", ""]
        parts += [_bench_section(f, img) for f in benches]
    out.write_text("\n".join(parts).rstrip() + "\n")
    return out
