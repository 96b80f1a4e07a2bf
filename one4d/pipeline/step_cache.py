"""Step caching for DLC sampling: skip every transformer block of both branches on denoising steps where the
input changed little, and reuse the last computed residual (off by default; ``acceleration.step_cache_threshold``).

The rule is TeaCache's (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model",
CVPR 2025; ali-vilab/TeaCache, e.g. TeaCache4HunyuanVideo and TeaCache4Wan2.1): the indicator is the
timestep-modulated input of the first block, ``norm1(x) * (1 + scale) + shift`` with block 0's own modulation
(TeaCache4HunyuanVideo / TeaCache4FLUX compare exactly this; TeaCache4Wan2.1 compares the timestep embedding
alone). Per step its relative L1 change ``mean|m_t - m_prev| / mean|m_prev|`` is accumulated; while the sum is
below ``threshold`` the blocks are skipped and the output is ``input + last residual`` (residual = last block
output - first block input), otherwise the blocks run, the residual is stored and the sum restarts at 0. The
first and the last step of a sample always run (TeaCache does the same). TeaCache rescales the distance with a
polynomial fitted per model; no such fit exists for One4D, so the raw distance is used and the thresholds
differ from TeaCache's published ones (BENCHMARKS.md "Step caching" measures the trade-off on the tiny model).

Why not diffusers' own cache hooks (``enable_cache(FirstBlockCacheConfig / MagCacheConfig)``): they keep one
state per block call and assume one pass per block per step; DLC runs every block twice (RGB then XYZ adapter,
with control links between), so here one decision covers both branches: the distance is taken over both
branches' modulated inputs together and both skip or both run. Conditional and unconditional guidance passes
keep SEPARATE states (TeaCache4Wan2.1's even/odd states): the pipeline batches them, so each batch row has its
own distance, residuals and decision, and rows that must run are run as a sub-batch.

Applied from outside the model (STYLE item 2): :func:`enable_step_cache` replaces the DLC wrapper's ``_layer``
on that one instance (every block call of ``One4DTransformer.forward`` goes through it) and wraps the
scheduler's ``set_timesteps`` to start a new sample. Threshold 0 runs every block: the sample is bitwise the
uncached one. Sampling only (under ``torch.no_grad``); with gradients enabled the blocks always run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class _RowState:
    """One guidance pass's cache: its previous modulated inputs, accumulated distance and residuals."""

    modulated: tuple[torch.Tensor, torch.Tensor] | None = None  # (L, D) RGB and XYZ, at the previous step
    distance: float = 0.0
    residual: tuple[torch.Tensor, torch.Tensor] | None = None  # (L, D) RGB and XYZ: last block out - first block in


@dataclass
class StepCacheStats:
    """Counts since the cache was enabled: forwards and, per guidance pass, block runs computed or skipped."""

    forwards: int = 0
    computed: list[int] = field(default_factory=list)  # per step: number of batch rows whose blocks ran
    skipped_rows: int = 0


class StepCache:
    """The ``_layer`` replacement of one DLC wrapper; see the module docstring."""

    def __init__(self, model, threshold: float):
        from one4d.models.dlc import One4DTransformer

        if not isinstance(model, One4DTransformer):
            raise ValueError(f"step caching needs the DLC wrapper (architecture dlc), not {type(model).__name__}; "
                             "set acceleration.step_cache_threshold=0")
        if not threshold >= 0:
            raise ValueError(f"acceleration.step_cache_threshold must be >= 0 (0 = off), got {threshold}")
        self.model, self.threshold = model, float(threshold)
        self.layer = model._layer  # the model's own bound method: the blocks that run are exactly the uncached ones
        self.last_index = len(model.base.blocks) - 1
        self.stats = StepCacheStats()
        self.reset(None)

    def reset(self, num_steps: int | None) -> None:
        """A new sample of ``num_steps`` steps (None: unknown, then the last step is not forced to run)."""
        self.num_steps, self.step, self.rows = num_steps, 0, {}
        self._inputs = self._run_rows = None

    # ------------------------------------------------------------------ the decision at block 0

    def _modulated(self, z: torch.Tensor, timestep_proj: torch.Tensor) -> torch.Tensor:
        """Block 0's modulated self-attention input (as ``WanTransformerBlock.forward`` computes it): (B, L, D)."""
        block = self.model.base.blocks[0]
        shift, scale = (block.scale_shift_table + timestep_proj.float()).chunk(6, dim=1)[:2]  # (B, 1, D) each
        return (block.norm1(z.float()) * (1 + scale) + shift).to(z.dtype)

    def _decide(self, z_rgb, z_xyz, timestep_proj) -> list[int]:
        """The batch rows whose blocks run this step; updates each row's distance and previous input."""
        modulated = self._modulated(z_rgb, timestep_proj), self._modulated(z_xyz, timestep_proj)
        forced = self.step == 0 or (self.num_steps is not None and self.step >= self.num_steps - 1)
        run = []
        for row in range(z_rgb.shape[0]):
            state = self.rows.setdefault(row, _RowState())
            now = modulated[0][row], modulated[1][row]
            if forced or state.modulated is None or state.residual is None:
                state.distance, compute = 0.0, True
            else:
                change = sum((a.float() - b.float()).abs().sum() for a, b in zip(now, state.modulated))
                size = sum(b.float().abs().sum() for b in state.modulated)
                state.distance += float(change / size.clamp_min(1e-12))
                compute = state.distance >= self.threshold
                if compute:
                    state.distance = 0.0
            state.modulated = now
            if compute:
                run.append(row)
        return run

    # ------------------------------------------------------------------ the replaced _layer

    def __call__(self, index, z_rgb, z_xyz, context, timestep_proj, rotary_emb):
        if torch.is_grad_enabled():
            return self.layer(index, z_rgb, z_xyz, context, timestep_proj, rotary_emb)
        batch = timestep_proj.shape[0]
        if index == 0:
            self._run_rows = self._decide(z_rgb, z_xyz, timestep_proj)
            self._inputs = z_rgb, z_xyz
            self.stats.forwards += 1
            self.stats.computed.append(len(self._run_rows))
            self.stats.skipped_rows += batch - len(self._run_rows)
            if 0 < len(self._run_rows) < batch:  # the rows that run continue as a sub-batch
                z_rgb, z_xyz = z_rgb[self._run_rows], z_xyz[self._run_rows]
        rows = self._run_rows
        if rows:
            if len(rows) < batch:
                context, timestep_proj = context[rows], timestep_proj[rows]
            z_rgb, z_xyz = self.layer(index, z_rgb, z_xyz, context, timestep_proj, rotary_emb)  # (len(rows), L, D)
        if index < self.last_index:
            return z_rgb, z_xyz
        return self._finish(z_rgb, z_xyz, batch)

    def _finish(self, z_rgb, z_xyz, batch):
        """After the last block: store the residuals of the rows that ran, fill the others from theirs."""
        first_rgb, first_xyz = self._inputs
        rows = self._run_rows
        for position, row in enumerate(rows):
            self.rows[row].residual = z_rgb[position] - first_rgb[row], z_xyz[position] - first_xyz[row]
        if len(rows) < batch:
            out_rgb, out_xyz = torch.empty_like(first_rgb), torch.empty_like(first_xyz)  # (B, L, D)
            for row in range(batch):
                if row in rows:
                    out_rgb[row], out_xyz[row] = z_rgb[rows.index(row)], z_xyz[rows.index(row)]
                else:
                    residual = self.rows[row].residual
                    out_rgb[row], out_xyz[row] = first_rgb[row] + residual[0], first_xyz[row] + residual[1]
            z_rgb, z_xyz = out_rgb, out_xyz
        self.step += 1
        self._inputs = None
        return z_rgb, z_xyz


def enable_step_cache(pipeline, threshold: float) -> StepCache:
    """Install a :class:`StepCache` on ``pipeline.transformer`` (a DLC wrapper) and reset it at every sample.

    Threshold 0 still installs it (every block runs; the result is bitwise the uncached one): the tests use that.
    """
    cache = StepCache(pipeline.transformer, threshold)
    pipeline.transformer._layer = cache  # an instance attribute: found before the class's method
    scheduler = pipeline.scheduler
    set_timesteps = scheduler.set_timesteps

    def set_timesteps_and_reset(num_inference_steps=None, *args, **kwargs):
        result = set_timesteps(num_inference_steps, *args, **kwargs)
        cache.reset(len(scheduler.timesteps))
        return result

    scheduler.set_timesteps = set_timesteps_and_reset
    pipeline.step_cache = cache
    return cache


def disable_step_cache(pipeline) -> None:
    """Remove what :func:`enable_step_cache` installed."""
    pipeline.transformer.__dict__.pop("_layer", None)
    pipeline.scheduler.__dict__.pop("set_timesteps", None)
    pipeline.step_cache = None
