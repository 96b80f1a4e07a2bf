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
