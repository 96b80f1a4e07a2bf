"""The registry of joint architectures, selected by config (``model.architecture``)."""

from __future__ import annotations

import torch

from .concat import ChannelConcatTransformer, SpatialConcatTransformer
from .dlc import One4DTransformer
from .presets import build_base_transformer

ARCHITECTURES = {
    "dlc": One4DTransformer,
    "channel_concat": ChannelConcatTransformer,
    "spatial_concat": SpatialConcatTransformer,
}


def build_model(
    architecture: str = "dlc",
    preset: str = "tiny",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    base_overrides: dict | None = None,
    attention_backend: str | None = None,
    **architecture_kwargs,
):
    """A random-weight base of ``preset`` wrapped by ``architecture`` (loading real weights is the caller's next step)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(ARCHITECTURES)}")
    base = build_base_transformer(preset, device=device, dtype=dtype, **(base_overrides or {}))
    model = ARCHITECTURES[architecture](base, **architecture_kwargs)
    if attention_backend is not None:
        model.set_attention_backend(attention_backend)
    return model


def compile_repeated_blocks(model, **options) -> None:
    """``torch.compile`` each block of the base of a joint (or plain base) model, from outside the model (STYLE
    item 2); the sampler's ``acceleration.compile`` and the trainer's ``train.compile``.

    diffusers' regional compilation (``ModelMixin.compile_repeated_blocks``: every ``WanTransformerBlock`` is
    compiled alone, so the 40 identical blocks share one compiled graph instead of tracing the whole model).
    Both DLC branches call the same compiled blocks: the active LoRA adapter is a guard, so each block
    compiles once per branch; the context-sharing memo (``one4d.models.sharing``) is a graph break.
    ``options``: ``torch.compile`` keyword arguments (``backend``, ``mode``, ``fullgraph``...). Compiling in place
    (``nn.Module.compile``) keeps the state-dict keys, so checkpoints do not change.
    """
    model.base.compile_repeated_blocks(**options)
