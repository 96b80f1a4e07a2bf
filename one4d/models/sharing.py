"""Compute the frozen base's projections of the shared context once per block, not once per branch.

In DLC both branches cross-attend to the same text + image context with the same frozen weights:
the base part of attn2's to_k / to_v / add_k_proj / add_v_proj is identical for RGB and XYZ (only the
LoRA parts differ, and peft adds those on top). :class:`ContextProjectionSharing` memoises those four
frozen Linears' outputs on the context for the duration of one DLC layer, so the second branch
reuses the first's. The output needs no gradient (frozen weights, context without gradient), so
reusing it changes nothing in autograd; a gradient-carrying input is never cached. At short token
counts this is ~20% of a block's forward (769 context tokens against a few hundred video tokens);
at 18k video tokens it is ~2%.
"""

from __future__ import annotations

import torch
from torch import nn

CONTEXT_PROJECTIONS = ("to_k", "to_v", "add_k_proj", "add_v_proj")


class _MemoisedLinear:
    """Replaces one frozen Linear's ``forward`` (instance attribute, so state-dict keys are unchanged)."""

    def __init__(self, linear: nn.Linear):
        self.linear, self.forward = linear, linear.forward
        self.active, self.cached = False, None  # cached: (input, output)
        linear.forward = self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cached = self.cached
        if cached is not None and _same_tensor(cached[0], x):
            return cached[1]
        out = self.forward(x)
        if self.active and not x.requires_grad and not out.requires_grad:
            self.cached = (x, out)
        return out


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same values: the same storage, offset, shape, strides and version (slices of the context are new views)."""
    return (
        a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
        and a.dtype == b.dtype and a._version == b._version
    )


class ContextProjectionSharing:
    """Per block, a context manager that shares the base's context projections between the two branches."""

    def __init__(self, blocks: nn.ModuleList):
        self._per_block = []
        for block in blocks:
            linears = []
            for name in CONTEXT_PROJECTIONS:
                layer = getattr(block.attn2, name, None)
                if layer is not None:
                    linears.append(_MemoisedLinear(getattr(layer, "base_layer", layer)))
            self._per_block.append(linears)

    def layer(self, index: int) -> "_Scope":
        return _Scope(self._per_block[index])


class _Scope:
    def __init__(self, linears: list[_MemoisedLinear]):
        self.linears = linears

    def __enter__(self):
        for linear in self.linears:
            linear.active, linear.cached = True, None

    def __exit__(self, *exc):
        for linear in self.linears:  # release the cached activations as soon as the layer is done
            linear.active, linear.cached = False, None
        return False
