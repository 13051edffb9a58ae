"""Run by ``tests/train/test_generation.py`` under ``torchrun --nproc_per_node 2`` on CPU (gloo).

The tiny model wrapped in FSDP1 (FULL_SHARD, decoder layers as units, the rest -- embeddings,
final norm, tied LM head -- held by the top-level unit), then greedy generation through
:func:`realjudge.train.generation.generation_model` (TRL's gather) and through the plain
unwrapped module with ``synced_gpus`` (the former code), each compared with the unsharded
model. Each process has its own prompt and length, so ``synced_gpus`` matters. Writes
``rank<r>.json`` in the working directory. (accelerate will not build FSDP without a GPU, so
the accelerator is a stand-in carrying what the selection reads.)
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from realjudge.inference.rollout import sample
from realjudge.models import build_tiny_model, load_tokenizer
from realjudge.train.generation import _SyncedGenerate, generation_model


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    tok = load_tokenizer("embedded")
    ref = build_tiny_model(tok, seed=0).eval()
    policy = functools.partial(
        transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer}
    )
    model = FSDP(
        build_tiny_model(tok, seed=0),
        auto_wrap_policy=policy,
        device_id=torch.device("cpu"),
        use_orig_params=True,
    )
    acc = SimpleNamespace(
        distributed_type=SimpleNamespace(name="FSDP"),
        state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=1), deepspeed_plugin=None),
        unwrap_model=lambda m: m.module,
    )
    prompts = [tok.encode("Rate this answer" + " please" * (3 * rank), add_special_tokens=False)]
    kw = dict(max_new_tokens=6 + 4 * rank, greedy=True, share_prefill=False)
    want = sample(ref, tok, prompts, **kw)
    with generation_model(acc, model) as gen:
        got = sample(gen, tok, prompts, **kw)
    try:
        old = sample(_SyncedGenerate(model.module), tok, prompts, **kw)
        old_result = "equal" if old == want else "differs"
    except RuntimeError as err:
        old_result = f"raised: {err}"
    result = {"rank": rank, "equal": got == want, "old": old_result}
    Path(f"rank{rank}.json").write_text(json.dumps(result))  # in the working directory
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
