"""Attention for bf16 decoding on a CPU.

On a CPU, torch's fused ``scaled_dot_product_attention`` is slow in bf16 for a single query
token -- the shape of every decode step: on an AMD EPYC (avx512_bf16) it was several times
slower than the same attention as two batched matmuls and a softmax, most of all when no mask
is passed (a torch profile of one decode step; ``realjudge bench cpu`` measures the fast path
this belongs to, not this kernel on its own). ``transformers``' ``eager`` attention avoids the fused kernel but first
copies the key/value cache once per query head (grouped-query attention), which costs as
much again.

:func:`grouped_decode_attention` computes a one-token query the way ``eager`` does -- the
same matmuls in the model's dtype, softmax in fp32, the same numbers -- with the query heads
that share a key/value head stacked into one matmul, so nothing is copied; longer queries
(prefill, the training forward, the scoring pass) go to ``sdpa`` unchanged. It is registered
with ``transformers``' attention interface as :data:`CPU_DECODE_ATTENTION` and used where
:func:`decode_attention` says: bf16 weights on a CPU (``realjudge bench cpu`` measures it).
"""

from __future__ import annotations

from typing import Any

import torch

#: The name under which :func:`grouped_decode_attention` is registered with transformers.
CPU_DECODE_ATTENTION = "realjudge_cpu_decode"


def grouped_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``transformers`` attention function: ``query`` ``[B, H, q, D]``, ``key``/``value``
    ``[B, H_kv, L, D]``, ``attention_mask`` as ``sdpa`` takes it (boolean ``[B, 1, q, >=L]``,
    True where a position is seen, or ``None``: every position); returns ``[B, q, H, D]``.

    A one-token query (``q == 1``) is computed here: query heads ``g * H/H_kv ...`` share key
    head ``g`` (``repeat_kv``'s order), so ``query`` viewed as ``[B, H_kv, H/H_kv, D]`` meets
    ``key`` in one matmul; the scores are scaled, masked and softmaxed in fp32 and cast back,
    as ``eager`` does. Anything else is ``sdpa``'s."""
    B, H, q, D = query.shape
    if q != 1 or dropout or kwargs.get("softcap") is not None or module.training:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    kv_heads, L = key.shape[1], key.shape[2]
    scale = scaling if scaling is not None else D**-0.5
    scores = torch.matmul(query.view(B, kv_heads, H // kv_heads, D), key.transpose(2, 3))
    scores = scores * scale  # [B, H_kv, H / H_kv, L]
    if attention_mask is not None:
        seen = attention_mask[:, :, :, :L]  # [B, 1, 1, L]
        if seen.dtype == torch.bool:
            scores = scores.masked_fill(~seen, torch.finfo(scores.dtype).min)
        else:  # an additive mask
            scores = scores + seen
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value).view(B, H, 1, D)
    return out.transpose(1, 2).contiguous(), None


def register() -> bool:
    """Register :func:`grouped_decode_attention` (and ``sdpa``'s mask) with ``transformers``
    under :data:`CPU_DECODE_ATTENTION`; ``False`` where this transformers has no attention
    interface (nothing registered). Idempotent."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # pragma: no cover - transformers < 4.53
        return False
    AttentionInterface.register(CPU_DECODE_ATTENTION, grouped_decode_attention)
    AttentionMaskInterface.register(CPU_DECODE_ATTENTION, sdpa_mask)
    return True


def decode_attention(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """The attention a model with ``dtype`` weights on ``device`` should decode with:
    :data:`CPU_DECODE_ATTENTION` for bf16 on a CPU, else ``None`` (keep the model's)."""
    on_cpu = torch.device(device).type == "cpu"
    return CPU_DECODE_ATTENTION if on_cpu and dtype == torch.bfloat16 else None


def use_decode_attention(model: Any) -> str:
    """Switch ``model`` (a ``transformers`` model) to :func:`decode_attention`'s choice for
    its device and dtype when there is one and the model uses ``sdpa`` (a model loaded with
    another attention keeps it); return the attention it now uses."""
    current = getattr(getattr(model, "config", None), "_attn_implementation", None)
    param = next(model.parameters(), None)
    if param is None or current != "sdpa":
        return str(current)
    choice = decode_attention(param.device, param.dtype)
    if choice is None or not hasattr(model, "set_attn_implementation") or not register():
        return current
    model.set_attn_implementation(choice)  # a model that cannot switch keeps its own, warned
    return str(model.config._attn_implementation)
