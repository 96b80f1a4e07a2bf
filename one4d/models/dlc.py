"""Decoupled LoRA Control (paper section 3.2).

The frozen Wan base runs every block twice, once per modality, with disjoint computation: RGB tokens
through the RGB LoRA, XYZ tokens through the XYZ LoRA. Zero-initialised linear control links after a
few blocks let each branch read the other's pre-link features. At initialisation each branch is
exactly the base model.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from torch import nn

from .joint import XYZ_CHANNELS, JointWanModel, copy_linear, copy_patch_embedding
from .lora import activate_adapter, add_lora_adapters, lora_config, lora_layers
from .sharing import ContextProjectionSharing

BRANCHES = ("rgb", "xyz")


def default_link_layers(num_layers: int, num_links: int = 5) -> list[int]:
    """``num_links`` blocks spread evenly over the depth, the last block included (0-based indices)."""
    num_links = min(num_links, num_layers)
    return sorted({(k + 1) * num_layers // num_links - 1 for k in range(num_links)})


class ControlLink(nn.Module):
    """Two zero-initialised Linear(dim, dim) with bias: z_rgb += L(z_xyz), z_xyz += L(z_rgb)."""

    def __init__(self, dim: int, device=None, dtype=torch.float32):
        super().__init__()
        self.rgb_from_xyz = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.xyz_from_rgb = nn.Linear(dim, dim, device=device, dtype=dtype)
        for linear in (self.rgb_from_xyz, self.xyz_from_rgb):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, z_rgb: torch.Tensor, z_xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Both updates read the pre-link features (eq. 9).
        dtype = self.rgb_from_xyz.weight.dtype
        rgb = z_rgb + self.rgb_from_xyz(z_xyz.to(dtype)).to(z_rgb.dtype)
        xyz = z_xyz + self.xyz_from_rgb(z_rgb.to(dtype)).to(z_xyz.dtype)
        return rgb, xyz


class One4DTransformer(JointWanModel):
    """Joint RGB + XYZ flow model with Decoupled LoRA Control on a frozen ``WanTransformer3DModel``.

    rgb_input (B, 36, f, h, w): noisy RGB latents 16 + UMC mask 4 + condition latents 16.
    xyz_input (B, 16, f, h, w): noisy XYZ latents, embedded by a trainable copy of the base patch
    embedding's first 16 input channels; predicted through a trainable copy of ``proj_out``.
    Trainable: both LoRAs, the links, the XYZ patch embedding and the XYZ ``proj_out``.
    """

    architecture = "dlc"

    def __init__(
        self,
        base: WanTransformer3DModel,
        lora_rank: int = 64,
        link_layers: list[int] | None = None,
        num_links: int = 5,
        lora_alpha: float | None = None,
        lora_dropout: float = 0.0,
    ):
        super().__init__(base)
        num_layers = len(base.blocks)
        link_layers = default_link_layers(num_layers, num_links) if link_layers is None else sorted(set(link_layers))
        bad = [index for index in link_layers if not 0 <= index < num_layers]
        if bad:
            raise ValueError(f"link_layers must be block indices in [0, {num_layers - 1}], got {bad}")
        self.lora_rank, self.lora_alpha, self.link_layers = lora_rank, lora_alpha, list(link_layers)

        add_lora_adapters(base, BRANCHES, lora_config(lora_rank, lora_alpha, lora_dropout))
        self._block_lora = [lora_layers(block) for block in base.blocks]  # 12 LoRA layers per block
        self._context_sharing = ContextProjectionSharing(base.blocks)  # frozen context K/V once per block
        dim = base.config.num_attention_heads * base.config.attention_head_dim
        self.xyz_patch_embedding = copy_patch_embedding(base.patch_embedding, XYZ_CHANNELS)
        self.xyz_proj_out = copy_linear(base.proj_out)
        self.links = nn.ModuleDict(
            {str(index): ControlLink(dim, device=base.proj_out.weight.device) for index in self.link_layers}
        )

    def architecture_config(self) -> dict:
        return {
            "architecture": self.architecture, "base": self.base_description(), "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha, "link_layers": self.link_layers,
        }

    def _layer(self, index, z_rgb, z_xyz, context, timestep_proj, rotary_emb):
        """One base block per branch with its own adapter, then the control link if this block has one.

        Under activation checkpointing each branch is its own checkpoint (the link runs inside the XYZ one), so
        backward recomputes one branch's block at a time: half the recomputed activations of checkpointing the
        whole layer, the same FLOPs and exactly the same gradients. The frozen projections of the shared context
        are computed by the first branch and reused by the second (forward only; a recomputation computes its own).
        """
        with self._context_sharing.layer(index):
            z_rgb = self._run(self._branch, index, "rgb", z_rgb, context, timestep_proj, rotary_emb)  # (B, L, D)
            if str(index) in self.links:
                z_rgb, z_xyz = self._run(self._xyz_branch_and_link, index, z_rgb, z_xyz, context, timestep_proj, rotary_emb)
            else:
                z_xyz = self._run(self._branch, index, "xyz", z_xyz, context, timestep_proj, rotary_emb)  # (B, L, D)
        return z_rgb, z_xyz

    def _branch(self, index, branch, z, context, timestep_proj, rotary_emb):
        """Block ``index`` with ``branch``'s adapter; the switch is inside, so a recomputation uses the same adapter."""
        activate_adapter(self._block_lora[index], branch)
        return self.base.blocks[index](z, context, timestep_proj, rotary_emb)  # (B, L, D)

    def _xyz_branch_and_link(self, index, z_rgb, z_xyz, context, timestep_proj, rotary_emb):
        """The XYZ block, then the link from both branches' pre-link features (eq. 9)."""
        z_xyz = self._branch(index, "xyz", z_xyz, context, timestep_proj, rotary_emb)
        return self.links[str(index)](z_rgb, z_xyz)

    def forward(self, rgb_input, xyz_input, timestep, encoder_hidden_states, encoder_hidden_states_image=None):
        self.check_inputs(rgb_input, xyz_input, timestep, encoder_hidden_states, encoder_hidden_states_image)
        grid = self.patch_grid(rgb_input)
        rotary_emb = self.base.rope(rgb_input)
        temb, timestep_proj, context = self.embed_conditions(timestep, encoder_hidden_states, encoder_hidden_states_image)
        z_rgb = self.to_tokens(self.embed_patches(self.base.patch_embedding, rgb_input))  # (B, L, D)
        z_xyz = self.to_tokens(self.embed_patches(self.xyz_patch_embedding, xyz_input))  # (B, L, D)
        z_xyz = z_xyz.to(z_rgb.dtype)
        for index in range(len(self.base.blocks)):
            z_rgb, z_xyz = self._layer(index, z_rgb, z_xyz, context, timestep_proj, rotary_emb)
        rgb_pred = self.output_head(z_rgb, temb, self.base.proj_out, grid)  # (B, 16, f, h, w)
        xyz_pred = self.output_head(z_xyz, temb, self.xyz_proj_out, grid)  # (B, 16, f, h, w)
        return rgb_pred, xyz_pred
