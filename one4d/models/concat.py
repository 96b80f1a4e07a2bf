"""The two ablation baselines of the paper's Figure 2, behind the One4D forward interface.

Both feed RGB and XYZ into ONE pass of the base with ONE shared LoRA:
- channel-wise concatenation (WVD style): [rgb 36 | xyz 16] channels into a widened patch embedding;
- spatial-wise concatenation (4DNeX style): RGB and XYZ token grids side by side along the width, one
  sequence of twice the tokens, RoPE over the widened grid.
Each uses the same XYZ output head as DLC (a trainable copy of ``proj_out``), so only the coupling differs.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel

from .joint import XYZ_CHANNELS, JointWanModel, copy_linear, copy_patch_embedding
from .lora import add_lora_adapters, lora_config

SHARED_ADAPTER = "joint"


class _SharedLoraModel(JointWanModel):
    def __init__(self, base: WanTransformer3DModel, lora_rank: int = 64, lora_alpha: float | None = None, lora_dropout: float = 0.0):
        super().__init__(base)
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha
        add_lora_adapters(base, (SHARED_ADAPTER,), lora_config(lora_rank, lora_alpha, lora_dropout))
        self.xyz_proj_out = copy_linear(base.proj_out)

    def architecture_config(self) -> dict:
        return {"architecture": self.architecture, "base": self.base_description(), "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha}

    def _blocks(self, tokens, context, timestep_proj, rotary_emb):
        for block in self.base.blocks:
            tokens = self._run(block, tokens, context, timestep_proj, rotary_emb)
        return tokens


class ChannelConcatTransformer(_SharedLoraModel):
    """One token stream whose patches see both RGB and XYZ channels (Fig. 2a)."""

    architecture = "channel_concat"

    def __init__(self, base: WanTransformer3DModel, lora_rank: int = 64, lora_alpha: float | None = None, lora_dropout: float = 0.0):
        super().__init__(base, lora_rank, lora_alpha, lora_dropout)
        # Zero weights on the XYZ channels: at init the RGB output equals the base's.
        self.patch_embedding = copy_patch_embedding(base.patch_embedding, base.config.in_channels + XYZ_CHANNELS)

    def forward(self, rgb_input, xyz_input, timestep, encoder_hidden_states, encoder_hidden_states_image=None):
        self.check_inputs(rgb_input, xyz_input, timestep, encoder_hidden_states, encoder_hidden_states_image)
        grid = self.patch_grid(rgb_input)
        rotary_emb = self.base.rope(rgb_input)
        temb, timestep_proj, context = self.embed_conditions(timestep, encoder_hidden_states, encoder_hidden_states_image)
        joint_input = torch.cat([rgb_input, xyz_input.to(rgb_input.dtype)], dim=1)  # (B, 52, f, h, w)
        tokens = self.to_tokens(self.embed_patches(self.patch_embedding, joint_input))  # (B, L, D)
        tokens = self._blocks(tokens.to(self.base.proj_out.weight.dtype), context, timestep_proj, rotary_emb)
        return (
            self.output_head(tokens, temb, self.base.proj_out, grid),  # (B, 16, f, h, w)
            self.output_head(tokens, temb, self.xyz_proj_out, grid),  # (B, 16, f, h, w)
        )


class SpatialConcatTransformer(_SharedLoraModel):
    """RGB and XYZ token grids concatenated along the width into one sequence (Fig. 2b, 4DNeX)."""

    architecture = "spatial_concat"

    def __init__(self, base: WanTransformer3DModel, lora_rank: int = 64, lora_alpha: float | None = None, lora_dropout: float = 0.0):
        super().__init__(base, lora_rank, lora_alpha, lora_dropout)
        self.xyz_patch_embedding = copy_patch_embedding(base.patch_embedding, XYZ_CHANNELS)

    def forward(self, rgb_input, xyz_input, timestep, encoder_hidden_states, encoder_hidden_states_image=None):
        self.check_inputs(rgb_input, xyz_input, timestep, encoder_hidden_states, encoder_hidden_states_image)
        frames, height, width = self.patch_grid(rgb_input)
        rgb_features = self.embed_patches(self.base.patch_embedding, rgb_input)  # (B, D, f, h, w)
        xyz_features = self.embed_patches(self.xyz_patch_embedding, xyz_input).to(rgb_features.dtype)
        joint = torch.cat([rgb_features, xyz_features], dim=-1)  # (B, D, f, h, 2w)
        # RoPE reads only the shape: positions over the widened latent grid.
        rotary_emb = self.base.rope(rgb_input.new_empty((*rgb_input.shape[:4], 2 * rgb_input.shape[4])))
        temb, timestep_proj, context = self.embed_conditions(timestep, encoder_hidden_states, encoder_hidden_states_image)
        tokens = self._blocks(self.to_tokens(joint), context, timestep_proj, rotary_emb)  # (B, f*h*2w, D)
        tokens = tokens.unflatten(1, (frames, height, 2 * width))  # (B, f, h, 2w, D)
        rgb_tokens = tokens[:, :, :, :width].flatten(1, 3)  # (B, L, D)
        xyz_tokens = tokens[:, :, :, width:].flatten(1, 3)  # (B, L, D)
        grid = (frames, height, width)
        return (
            self.output_head(rgb_tokens, temb, self.base.proj_out, grid),
            self.output_head(xyz_tokens, temb, self.xyz_proj_out, grid),
        )
