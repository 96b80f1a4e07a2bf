"""What the three joint RGB+XYZ architectures share around the frozen diffusers Wan base.

The base's own modules do all the work (patch embedding, condition embedder, RoPE, blocks, output
norm); this class only calls them in the order ``WanTransformer3DModel.forward`` does, so a
branch can run the blocks with its own LoRA and its own input/output projections.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from .presets import TEXT_TOKENS
from .text_padding import collapse_text_padding

XYZ_CHANNELS = 16  # Wan VAE latent channels of a pointmap video


class JointWanModel(nn.Module):
    """Base class: input checks, shared conditions, patch embedding and the output head.

    Subclasses implement ``forward(rgb_input, xyz_input, timestep, encoder_hidden_states,
    encoder_hidden_states_image=None) -> (rgb_pred, xyz_pred)`` and ``architecture_config()``.
    Gradient checkpointing is offered here and switched on from outside (the trainer decides).
    """

    architecture: str = ""

    def __init__(self, base: WanTransformer3DModel):
        super().__init__()
        self.base = base
        collapse_text_padding(base)  # the prompt's padding attended as one key (one4d.models.text_padding)
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ offered to the trainer

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each layer in backward; gradients stay exact (the adapter switch is inside)."""
        self.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = False

    def set_attention_backend(self, backend: str | None) -> None:
        """Select diffusers' attention dispatcher backend ("native" = SDPA, "flash", ...); None resets."""
        if backend is None:
            self.base.reset_attention_backend()
        else:
            self.base.set_attention_backend(backend)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained weights (LoRA, links, XYZ in/out), by parameter name."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def base_description(self) -> dict:
        """The base config entries that decide trainable shapes; saved with a trainable state."""
        keys = ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "in_channels",
                "out_channels", "text_dim", "image_dim", "added_kv_proj_dim", "patch_size")
        return {key: (list(self.base.config[key]) if key == "patch_size" else self.base.config[key]) for key in keys}

    # ------------------------------------------------------------------ shared computation

    def _run(self, function, *args):
        """Call ``function`` under activation checkpointing when it is on and gradients are needed."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(function, *args, use_reentrant=False)
        return function(*args)

    def check_inputs(self, rgb_input, xyz_input, timestep, encoder_hidden_states, encoder_hidden_states_image) -> None:
        """Raise a ValueError naming what was expected and what was given."""
        config = self.base.config
        p_t, p_h, p_w = config.patch_size
        if rgb_input.ndim != 5 or rgb_input.shape[1] != config.in_channels:
            raise ValueError(
                f"rgb_input must be (B, {config.in_channels}, f, h, w) = noisy RGB 16 + mask 4 + condition 16 "
                f"channels, got {tuple(rgb_input.shape)}"
            )
        if xyz_input.ndim != 5 or xyz_input.shape[1] != XYZ_CHANNELS:
            raise ValueError(f"xyz_input must be (B, {XYZ_CHANNELS}, f, h, w), got {tuple(xyz_input.shape)}")
        if rgb_input.shape[0] != xyz_input.shape[0] or rgb_input.shape[2:] != xyz_input.shape[2:]:
            raise ValueError(
                f"RGB and XYZ latents must share batch and (f, h, w), got {tuple(rgb_input.shape)} and "
                f"{tuple(xyz_input.shape)}"
            )
        _, _, frames, height, width = rgb_input.shape
        if frames % p_t or height % p_h or width % p_w:
            raise ValueError(f"latent (f, h, w) = {(frames, height, width)} must be divisible by the patch size {(p_t, p_h, p_w)}")
        if timestep.ndim != 1 or timestep.shape[0] != rgb_input.shape[0]:
            raise ValueError(f"timestep must be (B,) = ({rgb_input.shape[0]},), got {tuple(timestep.shape)}")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[-1] != config.text_dim:
            raise ValueError(f"encoder_hidden_states must be (B, tokens, {config.text_dim}), got {tuple(encoder_hidden_states.shape)}")
        has_image_context = self.base.condition_embedder.image_embedder is not None
        if has_image_context and encoder_hidden_states_image is None:
            raise ValueError("this base model has CLIP image context (image_dim set): pass encoder_hidden_states_image")
        if not has_image_context and encoder_hidden_states_image is not None:
            raise ValueError("encoder_hidden_states_image given, but this base model has no image embedder (image_dim is None)")
        if has_image_context and encoder_hidden_states.shape[1] != TEXT_TOKENS:
            # Wan's attention takes shape[1] - 512 as the image token count: anything else mixes text into image.
            raise ValueError(
                f"with image embeddings the text sequence must be exactly {TEXT_TOKENS} tokens (pad the UMT5 "
                f"output), got {encoder_hidden_states.shape[1]}"
            )

    @property
    def condition_dtype(self) -> torch.dtype:
        """The compute dtype of the base's text embedder (bf16 for a bf16 base).

        UMT5 and CLIP embeddings arrive in fp32 from the trainer, the cache and validation; diffusers'
        condition embedder does not cast them, so a bf16 base would fail on "mat1 and mat2 must have
        the same dtype" unless they are cast here, once, for every caller.
        """
        return self.base.condition_embedder.text_embedder.linear_1.weight.dtype

    def embed_conditions(self, timestep, encoder_hidden_states, encoder_hidden_states_image):
        """Time, text and image embeddings, computed once and shared by every branch; inputs of any float dtype.

        Returns temb (B, D), timestep_proj (B, 6, D) and the context (B, image + 512, D).
        """
        dtype = self.condition_dtype
        encoder_hidden_states = encoder_hidden_states.to(dtype)
        if encoder_hidden_states_image is not None:
            encoder_hidden_states_image = encoder_hidden_states_image.to(dtype)
        temb, timestep_proj, context, image_context = self.base.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image
        )
        timestep_proj = timestep_proj.unflatten(1, (6, -1))  # (B, 6, D)
        if image_context is not None:
            context = torch.cat([image_context, context], dim=1)  # (B, 257 + 512, D)
        return temb, timestep_proj, context

    @staticmethod
    def embed_patches(embedding: nn.Conv3d, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, f, h, w) latents -> (B, D, f/p_t, h/p_h, w/p_w) patch features, in the conv's dtype."""
        return embedding(latents.to(embedding.weight.dtype))

    @staticmethod
    def to_tokens(features: torch.Tensor) -> torch.Tensor:
        """(B, D, f, h, w) -> (B, f*h*w, D), contiguous like the base does before its blocks."""
        return features.flatten(2).transpose(1, 2).contiguous()

    def output_head(self, hidden: torch.Tensor, temb: torch.Tensor, proj_out: nn.Linear, grid: tuple[int, int, int]) -> torch.Tensor:
        """The base's output norm + modulation, then ``proj_out`` and unpatchify: (B, L, D) -> (B, C, f, h, w)."""
        shift, scale = (self.base.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)  # (B, 1, D) each
        hidden = (self.base.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        hidden = proj_out(hidden.to(proj_out.weight.dtype))  # (B, L, p_t*p_h*p_w*C)
        p_t, p_h, p_w = self.base.config.patch_size
        frames, height, width = grid
        hidden = hidden.reshape(hidden.shape[0], frames, height, width, p_t, p_h, p_w, -1)
        hidden = hidden.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, f, p_t, h, p_h, w, p_w)
        return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)  # (B, C, F, H, W)

    def patch_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        p_t, p_h, p_w = self.base.config.patch_size
        return latents.shape[2] // p_t, latents.shape[3] // p_h, latents.shape[4] // p_w


def copy_patch_embedding(source: nn.Conv3d, in_channels: int, dtype=torch.float32) -> nn.Conv3d:
    """A trainable patch embedding for ``in_channels`` inputs, initialised from the first channels of ``source``.

    Taking the first channels is the same as feeding zeros in the others (paper section 3.2); channels
    beyond ``source``'s are zero-initialised.
    """
    conv = nn.Conv3d(in_channels, source.out_channels, source.kernel_size, source.stride, device=source.weight.device, dtype=dtype)
    with torch.no_grad():
        conv.weight.zero_()
        shared = min(in_channels, source.in_channels)
        conv.weight[:, :shared].copy_(source.weight[:, :shared])
        conv.bias.copy_(source.bias)
    return conv


def copy_linear(source: nn.Linear, dtype=torch.float32) -> nn.Linear:
    """A trainable copy of a Linear (the XYZ ``proj_out``)."""
    linear = nn.Linear(source.in_features, source.out_features, device=source.weight.device, dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(source.weight)
        linear.bias.copy_(source.bias)
    return linear

