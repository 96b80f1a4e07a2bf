"""Base-model presets (the paper's base, section 4.1) in one registry, and the builder of a random-weight base.

Every preset is a diffusers ``WanTransformer3DModel`` config. ``wan2.1-fun-14b-inp`` and
``wan2.1-fun-1.3b-inp`` match Wan2.1-Fun-V1.1-InP (36 input channels: 16 noisy + 4 mask + 16
condition latents; CLIP image context through added K/V projections). ``tiny`` takes the same code
paths at a size that runs in milliseconds on a CPU. ``demo`` is the shipped tiny model's base
(``data/checkpoints/tiny/``): wide enough to learn synthetic 4D scenes in minutes on a CPU, with
text_dim / image_dim of the tiny UMT5 and CLIP encoders of ``one4d.components``.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel

_WAN_I2V_COMMON = dict(
    patch_size=(1, 2, 2),
    in_channels=36,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=1280,
    rope_max_seq_len=1024,
)

PRESETS: dict[str, dict] = {
    "wan2.1-fun-14b-inp": dict(
        _WAN_I2V_COMMON, num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40,
        added_kv_proj_dim=5120,
    ),
    "wan2.1-fun-1.3b-inp": dict(
        _WAN_I2V_COMMON, num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30,
        added_kv_proj_dim=1536,
    ),
    "tiny": dict(
        _WAN_I2V_COMMON, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=4,
        text_dim=32, freq_dim=32, image_dim=32, added_kv_proj_dim=32,
    ),
    "demo": dict(
        _WAN_I2V_COMMON, num_attention_heads=4, attention_head_dim=32, ffn_dim=256, num_layers=4,
        text_dim=32, freq_dim=64, image_dim=32, added_kv_proj_dim=128,
    ),
}
# ``demo`` with a token per latent pixel (patch (1, 1, 1) instead of Wan's (1, 2, 2): 12 x 16 tokens per latent frame
# of the tiny model's 48 x 64 clips, where the 14B model has 30 x 52): the shipped tiny model's base since 2026-12-06
# (configs/experiment/tiny_base.yaml; benchmarks/RESULTS_tiny_model.md sections 21, 23-25).
PRESETS["demo_patch1"] = dict(PRESETS["demo"], patch_size=(1, 1, 1))

# Wan's attention processor takes `encoder_hidden_states.shape[1] - 512` as the image token count.
TEXT_TOKENS = 512


def preset_config(preset: str, **overrides) -> dict:
    """The WanTransformer3DModel config of a preset, with optional overrides (e.g. num_layers=2)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown base preset {preset!r}; expected one of {sorted(PRESETS)}")
    unknown = set(overrides) - set(PRESETS[preset])
    if unknown:
        raise ValueError(f"unknown WanTransformer3DModel config keys {sorted(unknown)} for preset {preset!r}")
    return dict(PRESETS[preset], **overrides)


def cast_keeping_fp32_modules(model: torch.nn.Module, dtype: torch.dtype,
                              keep_under: tuple = (torch.float16, torch.bfloat16)) -> torch.nn.Module:
    """Cast parameters to ``dtype`` but keep the model's ``_keep_in_fp32_modules`` in fp32 when ``dtype`` is one of
    ``keep_under``: diffusers' ``from_pretrained(torch_dtype=...)`` keeps them under fp16 and bf16 (norms, time
    embedder, modulation), transformers' under fp16 only (pass ``keep_under=(torch.float16,)``; UMT5's ``wo``).

    A model built from a config needs it done by hand. Buffers (RoPE tables) are left as they are.
    """
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    low_precision = dtype in keep_under
    for name, param in model.named_parameters():
        kept = low_precision and any(part in name.split(".") for part in keep)
        param.data = param.data.to(torch.float32 if kept else dtype)
    return model


def build_base_transformer(
    preset: str, device: str | torch.device | None = None, dtype: torch.dtype | None = None, **overrides
) -> WanTransformer3DModel:
    """A randomly initialised WanTransformer3DModel of a preset; ``device="meta"`` allocates nothing."""
    config = preset_config(preset, **overrides)
    with torch.device(device or "cpu"):
        model = WanTransformer3DModel(**config)
    if dtype is not None:
        cast_keeping_fp32_modules(model, dtype)
    return model
