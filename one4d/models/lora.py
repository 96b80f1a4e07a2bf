"""peft LoRA adapters on the frozen Wan base, and per-branch adapter activation.

Two adapters ("rgb", "xyz") live side by side in the same peft ``LoraLayer``s of the shared base.
Which one a block call uses is chosen by :func:`activate_adapter` on that block's LoRA layers, right
before the call and INSIDE any gradient-checkpointed region, which avoids three peft traps:

1. ``set_adapter`` flips ``requires_grad`` of the other adapter off (silently no gradients), so we
   only set the active-adapter list and never touch ``requires_grad`` after setup;
2. switching outside a checkpointed region makes the recomputation run with whichever adapter was
   active last (silently wrong gradients), so the switch is part of the checkpointed function;
3. ``adapter_names`` mixed batches copy activations per sub-batch, so we never use them.
"""

from __future__ import annotations

import re
import warnings

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

# The 12 Linear layers of every WanTransformerBlock (paper section 4.1: LoRA on all linear layers).
LORA_TARGET_MODULES = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "attn2.add_k_proj", "attn2.add_v_proj",
    "ffn.net.0.proj", "ffn.net.2",
)


def lora_config(rank: int, alpha: float | None = None, dropout: float = 0.0) -> LoraConfig:
    """The LoRA config of one branch: rank ``rank`` on the 12 block linears; alpha defaults to rank (scale 1)."""
    if rank <= 0:
        raise ValueError(f"lora_rank must be a positive integer, got {rank}")
    return LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        lora_dropout=dropout,
        # A string is a full-match regex in peft: only the transformer blocks, never the embedders.
        target_modules=r"blocks\.\d+\.(" + "|".join(re.escape(name) for name in LORA_TARGET_MODULES) + ")",
        init_lora_weights=True,  # B = 0: the adapter starts as the identity change
    )


def add_lora_adapters(base: torch.nn.Module, names: tuple[str, ...], config: LoraConfig) -> None:
    """Inject one peft adapter per name into the base; freeze the base and make every adapter trainable.

    Adapters are created on the base's device (so a meta-device 14B base allocates nothing) and kept in
    float32 whatever the base dtype: peft would otherwise give the first adapter the base's bf16.
    """
    device = next(base.parameters()).device
    with warnings.catch_warnings(), torch.device(device):
        # peft warns that a second adapter is being added: that is the design here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for name in names:
            base.add_adapter(config, adapter_name=name)
    for param in base.parameters():
        param.requires_grad_(False)
    for layer in lora_layers(base):
        for name in names:
            for adapter in (layer.lora_A[name], layer.lora_B[name]):
                adapter.to(device=device, dtype=torch.float32)
                adapter.weight.requires_grad_(True)


def lora_layers(module: torch.nn.Module) -> list[LoraLayer]:
    """All peft LoRA layers below a module, in registration order."""
    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def activate_adapter(layers: list[LoraLayer], name: str) -> None:
    """Make ``name`` the only active adapter of these layers without touching ``requires_grad`` (trap 1)."""
    for layer in layers:
        layer._active_adapter = [name]
