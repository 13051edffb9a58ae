"""Linear layers for inference on a CPU, in bf16 or fp32.

On a CPU, ``torch.nn.functional.linear`` in bf16 runs oneDNN's matmul, which first reorders
the weight into its blocked layout -- on every call. A decode step multiplies a handful of
rows by every weight of the model, so that reorder (a read and a write of each weight) costs
about as much as the product itself. :class:`PackedLinear` reorders a weight once
(``torch.ops.mkldnn._reorder_linear_weight``) and multiplies with the packed copy
(``torch.ops.mkldnn._linear_pointwise``). In bf16 that is the same oneDNN product on the same
numbers, so the same outputs (``tests/inference/test_packed_linear.py`` checks logits and
generated tokens). In fp32 ``F.linear`` runs MKL's sgemm instead, and oneDNN's packed product
sums in another order: outputs differ by float rounding (the tests check logits with
``torch.testing.assert_close``'s fp32 tolerance and the same greedy tokens). ``realjudge bench
cpu`` (``--dtype fp32`` for the fp32 case) measures the fast path this belongs to.

Only where nothing needs a gradient and autocast is off: with autograd recording (training),
under autocast (which would have run the product in its own dtype), for another dtype of
input, off the CPU, or where this torch has no such op, a layer is plain ``Linear``. The
packed copy follows the weight: an in-place update (the rollout copy refreshed from the
policy), a move or a cast repacks it on the next call; it is never saved, copied or pickled
(``state_dict`` and ``save_pretrained`` see a ``Linear``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: The batch size oneDNN is told to expect when packing (a layout hint, not a limit).
PACK_BATCH_HINT = 16

#: The weight dtypes whose inference runs through packed weights on a CPU.
PACKED_DTYPES = (torch.bfloat16, torch.float32)


def packing_available() -> bool:
    """Whether this torch can pack linear weights for oneDNN."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


def packs_linears(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether a model with ``dtype`` weights on ``device`` runs its inference through
    :class:`PackedLinear`: bf16 or fp32 on a CPU, where this torch can pack."""
    on_cpu = torch.device(device).type == "cpu"
    return on_cpu and dtype in PACKED_DTYPES and packing_available()


class PackedLinear(torch.nn.Linear):
    """A ``Linear`` that multiplies by a oneDNN-packed copy of its weight when no gradient is
    wanted (see the module doc); made by :func:`use_packed_linears`, never constructed."""

    _packed: Any = None
    _packed_key: tuple[int, int, torch.dtype] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (
            (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad))
            or x.dtype != w.dtype
            or w.device.type != "cpu"
            or x.device.type != "cpu"
            or torch.is_autocast_enabled("cpu")
        ):
            return F.linear(x, w, self.bias)
        try:
            version = w._version
        except RuntimeError:  # an inference tensor has no version counter (nor in-place use)
            version = -1
        key = (w.data_ptr(), version, w.dtype)
        if self._packed_key != key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), PACK_BATCH_HINT)
            self._packed_key = key
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")

    def __getstate__(self) -> dict[str, Any]:
        # the packed copy has no storage to copy or pickle: a copy repacks on first use
        state = self.__dict__.copy()
        state.pop("_packed", None)
        state.pop("_packed_key", None)
        return state


def use_packed_linears(model: Any) -> int:
    """Make the ``Linear`` layers of ``model`` :class:`PackedLinear` when its weights are bf16
    or fp32 on a CPU (:func:`packs_linears`); return how many are packed-capable now (0:
    none)."""
    param = next(model.parameters(), None)
    if param is None or not packs_linears(param.device, param.dtype):
        return 0
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = PackedLinear
        n += isinstance(module, PackedLinear)
    return n
