"""Sequence (context) parallelism for One4D's two-branch DLC model, on diffusers' context parallelism.

diffusers does the attention: ``enable_parallelism`` gives every attention processor the parallel config, and
Wan's self-attention then runs Ulysses (all-to-all over heads) or ring attention through the dispatcher
(diffusers ``models/attention_dispatch.py``, ``TemplatedUlyssesAttention``); cross-attention stays local, its
text/image context is not split (diffusers PR #12909). What diffusers' ``WanTransformer3DModel._cp_plan`` does
with hooks (split the RoPE tables and block 0's input along the tokens, gather ``proj_out``'s output) is done here
by hooks on the same modules, because One4D needs two things more:

* **Both branches.** DLC calls ``base.rope``, ``base.blocks[i]`` and the output heads itself (``one4d.models.dlc``),
  block 0 once per branch; the links and the XYZ head are per-token, so the XYZ ``xyz_proj_out`` only needs the
  same gather as ``proj_out``.
* **Token counts the degree does not divide** (the paper's 18,018 = 21 x 22 x 39 tokens on 4 or 8 ranks).
  diffusers' equal split asserts divisibility (``EquipartitionSharder``) and its ``*_anything`` modes cannot run on
  gloo. As Wan's own generate.py does, the sequence is padded to a multiple of the degree (zero tokens, zero RoPE);
  padded KEYS are masked out of self-attention (an additive -inf mask, which Ulysses passes to the SDPA kernel on the
  full sequence after its all-to-all) and padded rows are dropped after the gather. Every other layer is per-token,
  so real tokens never see the padding and the result is the unpadded one.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers import ContextParallelConfig
from diffusers.hooks.context_parallel import EquipartitionSharder
from diffusers.hooks.hooks import HookRegistry, ModelHook

HOOK = "one4d_sequence_parallel"


class TokenPadding:
    """This forward's real and padded token counts, set when RoPE runs (once per DLC forward, before block 0)."""

    def __init__(self, degree: int):
        self.degree = degree
        self.tokens = self.padded = 0
        self.mask: torch.Tensor | None = None  # (1, 1, 1, padded) additive, None when nothing is padded

    def update(self, tokens: int, dtype: torch.dtype, device: torch.device) -> None:
        """A new forward's token count (``dtype``: any float; the attention hook casts the mask to the query's)."""
        self.tokens, self.padded = tokens, -(-tokens // self.degree) * self.degree
        if self.padded == tokens:
            self.mask = None
            return
        self.mask = torch.zeros(1, 1, 1, self.padded, dtype=dtype, device=device)
        self.mask[..., tokens:] = float("-inf")

    def pad(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Zero-pad ``x`` along the token axis ``dim`` to the padded length."""
        missing = self.padded - x.shape[dim]
        if missing == 0:
            return x
        pad = [0, 0] * (x.ndim - 1 - dim) + [0, missing]
        return F.pad(x, pad)


class SplitRope(ModelHook):
    """``base.rope``: pad the (cos, sin) tables (1, L, 1, D) to the padded length and keep this rank's part."""

    def __init__(self, padding: TokenPadding, mesh):
        super().__init__()
        self.padding, self.mesh = padding, mesh

    def post_forward(self, module, output):
        cos, sin = output
        self.padding.update(cos.shape[1], cos.dtype, cos.device)
        return tuple(EquipartitionSharder.shard(self.padding.pad(x), 1, self.mesh) for x in (cos, sin))  # (1, L/K, 1, D)


class SplitTokens(ModelHook):
    """``base.blocks[0]``: pad the branch's tokens (B, L, D) and keep this rank's part (B, L/K, D); both branches pass here."""

    def __init__(self, padding: TokenPadding, mesh):
        super().__init__()
        self.padding, self.mesh = padding, mesh

    def pre_forward(self, module, hidden_states, *args, **kwargs):
        return (EquipartitionSharder.shard(self.padding.pad(hidden_states), 1, self.mesh), *args), kwargs


class MaskPaddedKeys(ModelHook):
    """Every block's ``attn1`` (self-attention, called as ``attn1(x, None, None, rotary_emb)``): the padding mask."""

    def __init__(self, padding: TokenPadding):
        super().__init__()
        self.padding = padding

    def pre_forward(self, module, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **kwargs):
        mask = self.padding.mask
        if mask is not None:
            mask = mask.to(hidden_states.dtype)  # SDPA takes a float mask only in the query's dtype (bf16 on a GPU)
        return (hidden_states, encoder_hidden_states, mask, rotary_emb), kwargs


class GatherTokens(ModelHook):
    """``base.proj_out`` and ``xyz_proj_out``: gather every rank's tokens (B, L/K, C) -> (B, L, C), padding dropped."""

    def __init__(self, padding: TokenPadding, mesh):
        super().__init__()
        self.padding, self.mesh = padding, mesh

    def post_forward(self, module, output):
        return EquipartitionSharder.unshard(output, 1, self.mesh)[:, : self.padding.tokens]


@contextmanager
def _cpu_device_count():
    """diffusers 0.42.1 ``ModelMixin._resolve_parallel_config`` computes ``rank % torch.accelerator.device_count()``,
    which divides by zero on a machine without an accelerator; count the CPU as one device while it runs."""
    count = torch.accelerator.device_count
    if count() > 0:
        yield
        return
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = count


def apply_sequence_parallel(model, mesh, ulysses: int, ring: int) -> TokenPadding:
    """Split both DLC branches along the tokens over the mesh's (ring, ulysses) ranks; returns the padding state.

    ``model``: a ``One4DTransformer`` (or another ``JointWanModel`` whose heads call ``proj_out`` / ``xyz_proj_out``).
    """
    config = ContextParallelConfig(ulysses_degree=ulysses, ring_degree=ring, mesh=mesh)
    with _cpu_device_count():
        model.base.enable_parallelism(config=config, cp_plan={})  # the attention processors' Ulysses / ring config
    flat = config._flattened_mesh  # (ring, ulysses) as one axis, as diffusers' own split and gather use it
    padding = TokenPadding(ulysses * ring)
    hooks = [(model.base.rope, SplitRope(padding, flat)), (model.base.blocks[0], SplitTokens(padding, flat)),
             (model.base.proj_out, GatherTokens(padding, flat))]
    hooks += [(block.attn1, MaskPaddedKeys(padding)) for block in model.base.blocks]
    if hasattr(model, "xyz_proj_out"):
        hooks.append((model.xyz_proj_out, GatherTokens(padding, flat)))
    for module, hook in hooks:
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK)
    return padding
