"""Apply a :class:`~one4d.parallel.layout.ParallelLayout` to a loaded One4DPipeline from outside (STYLE item 2).

Nothing in the model or in the pipeline's numbered steps changes (torchtitan ``models/llama3/parallelize.py``
applies parallelism to a built model the same way): hooks on the transformer the pipeline already calls.

* **CFG-parallel** (``parallel.cfg=2``): the pipeline's step 6 runs ONE batched DLC forward per step, the
  conditional pass at batch index 0 and the unconditional at 1. :class:`SplitGuidanceBatch` hands rank c of the
  cfg group batch item c only and all-gathers the two predictions after the forward, so the pipeline combines
  them as before. The all-gather of (2, 16, f, h, w) twice per step (RGB, XYZ) is all that is communicated;
  no engine offers this for Wan (diffusers lists it as TODO in ``models/_modeling_parallel.py``; xDiT's is off
  for Wan2.1).
* **Sequence parallel** (``parallel.ulysses`` / ``parallel.ring``): ``one4d.parallel.sequence``.
"""

from __future__ import annotations

from diffusers.hooks.context_parallel import EquipartitionSharder
from diffusers.hooks.hooks import HookRegistry, ModelHook

from .layout import ParallelLayout
from .sequence import apply_sequence_parallel

CFG_HOOK = "one4d_cfg_parallel"


class SplitGuidanceBatch(ModelHook):
    """On the DLC wrapper: each cfg rank runs its batch item; both predictions are all-gathered afterwards.

    A batch the degree does not divide (``cfg=1``: one pass) runs whole on every rank.
    """

    def __init__(self, mesh):
        super().__init__()
        self.mesh = mesh  # the 1-D "cfg" mesh
        self.split = False

    def pre_forward(self, module, *args, **kwargs):
        self.split = args[0].shape[0] % self.mesh.size() == 0
        if self.split:
            args = tuple(self._shard(x) for x in args)
            kwargs = {name: self._shard(x) for name, x in kwargs.items()}
        return args, kwargs

    def post_forward(self, module, output):
        if not self.split:
            return output
        return tuple(EquipartitionSharder.unshard(x, 0, self.mesh) for x in output)  # (B, C, f, h, w) each

    def _shard(self, x):
        return None if x is None else EquipartitionSharder.shard(x, 0, self.mesh)  # (B / cfg, ...)


def parallelize(transformer, layout: ParallelLayout, mesh) -> None:
    """Make ``transformer`` (the pipeline's DLC wrapper) run over ``mesh``'s cfg and sequence dimensions."""
    if layout.sequence_parallel > 1:
        if getattr(transformer, "architecture", "") == "spatial_concat":
            raise ValueError("sequence parallel splits each branch's tokens; spatial_concat mixes both in one grid, use parallel.cfg")
        apply_sequence_parallel(transformer, mesh, ulysses=layout.ulysses, ring=layout.ring)
    if layout.cfg > 1:
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(SplitGuidanceBatch(mesh["cfg"]), CFG_HOOK)
