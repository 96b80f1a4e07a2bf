"""The plain Wan I2V base as a trainable model: stage 1 of the tiny model (the "pretrained video prior")."""

from __future__ import annotations

import torch
from torch import nn

from .text_padding import collapse_text_padding

BASE_ARCHITECTURE = "base"


class WanBaseModel(nn.Module):
    """A ``WanTransformer3DModel`` with every weight trainable; forward predicts the RGB flow (B, 16, f, h, w)."""

    architecture = BASE_ARCHITECTURE

    def __init__(self, base):
        super().__init__()
        self.base = base.requires_grad_(True)
        collapse_text_padding(base)  # the prompt's padding attended as one key (one4d.models.text_padding)

    def forward(self, rgb_input, timestep, encoder_hidden_states, encoder_hidden_states_image=None):
        """Inputs of any float dtype are cast to the base's (diffusers' Wan forward does not cast them itself)."""
        dtype = self.base.patch_embedding.weight.dtype
        if encoder_hidden_states_image is not None:
            encoder_hidden_states_image = encoder_hidden_states_image.to(dtype)
        return self.base(rgb_input.to(dtype), timestep, encoder_hidden_states.to(dtype),
                         encoder_hidden_states_image=encoder_hidden_states_image, return_dict=False)[0]

    def enable_gradient_checkpointing(self) -> None:
        self.base.enable_gradient_checkpointing()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def architecture_config(self) -> dict:
        config = {key: (list(value) if isinstance(value, tuple) else value) for key, value in self.base.config.items()
                  if not key.startswith("_")}
        return {"architecture": self.architecture, "base": config}
