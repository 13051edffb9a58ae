"""Helpers every benchmark shares: timing, tables, JSON, medians and ratios, peak memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """torch runs on ``threads`` threads inside the block (``None`` or 0: as it was) and on
    its former count after it; yields the count in use."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (floats with 3 significant decimals)."""

    def cell(v: Any) -> str:
        if v is None:
            return "n/a"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    table = [list(map(str, header))] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


class _MemoryProbe:
    """Peak memory of one block of work and its own footprint (peak minus what was in use
    before it). CUDA: allocated bytes (``max_memory_allocated``). CPU on Linux: resident set
    size, its high-water mark reset through ``/proc/self/clear_refs``. Elsewhere: ``None``."""

    _STATUS = "/proc/self/status"

    def __init__(self, device: Any) -> None:
        import ctypes
        import os

        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.device = device
        self.proc = (
            not self.cuda
            and os.path.exists("/proc/self/clear_refs")
            and os.path.exists(self._STATUS)
        )
        self._trim = None
        if self.proc:
            try:  # give freed heap memory back before each measurement (glibc only)
                self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            except OSError:
                self._trim = None
        self.before: int | None = None

    @property
    def kind(self) -> str:
        if self.cuda:
            return "cuda max_memory_allocated"
        return "peak RSS (VmHWM)" if self.proc else "n/a"

    def _status_kb(self, key: str) -> int:
        with open(self._STATUS) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"{key} missing from {self._STATUS}")

    def start(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.cuda:
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        elif self.proc:
            if self._trim is not None:
                self._trim(0)
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the high-water mark to the current RSS
                self.before = self._status_kb("VmRSS")
            except OSError:
                self.proc, self.before = False, None

    def stop(self) -> tuple[int | None, int | None]:
        """``(peak, peak - before)`` in bytes, or ``(None, None)``."""
        import torch

        if self.cuda:
            _sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.proc and self.before is not None:
            try:
                peak = self._status_kb("VmHWM")
            except OSError:
                return None, None
        else:
            return None, None
        return peak, peak - (self.before or 0)


def _median(xs: Sequence[float | None]) -> float | None:
    import statistics

    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def write_json(obj: Any, path: str) -> None:
    """``obj`` as indented JSON at ``path`` (parent folders made)."""
    import json
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2))


def _mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)
