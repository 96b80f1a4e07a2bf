"""Saving and loading only the trainable state, and exporting the RGB LoRA for plain diffusers.

A trainable state is a folder with ``trainable_state.safetensors`` (LoRAs, links, XYZ in/out) and
``architecture.json`` (architecture, base shapes, LoRA rank, link layers), a few hundred MB at 14B
instead of the 28 GB base. Loading checks the architecture first, so a state of another preset
fails with the mismatch named rather than with a wall of shape errors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

STATE_FILE = "trainable_state.safetensors"
ARCHITECTURE_FILE = "architecture.json"


def save_trainable_state(model, folder: str | os.PathLike) -> Path:
    """Write the trainable weights and the architecture description of a joint model to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().to("cpu").contiguous() for name, p in model.trainable_state_dict().items()}
    save_file(tensors, folder / STATE_FILE, metadata={"format": "pt"})
    (folder / ARCHITECTURE_FILE).write_text(json.dumps(model.architecture_config(), indent=2) + "\n")
    return folder


def _first_difference(saved, expected, path: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(expected, dict):
        for key in sorted(set(saved) | set(expected)):
            found = _first_difference(saved.get(key), expected.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if saved == expected else f"{path}: checkpoint has {saved!r}, model has {expected!r}"


def load_trainable_state(model, folder: str | os.PathLike, strict: bool = True) -> None:
    """Load a state written by :func:`save_trainable_state` into a model of the same architecture."""
    folder = Path(folder)
    for name in (STATE_FILE, ARCHITECTURE_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} is not a One4D trainable state: {name} is missing")
    saved = json.loads((folder / ARCHITECTURE_FILE).read_text())
    mismatch = _first_difference(saved, model.architecture_config())
    if mismatch:
        raise ValueError(f"trainable state {folder} does not fit this model ({mismatch})")
    tensors = load_file(folder / STATE_FILE)
    parameters = model.trainable_state_dict()
    missing, unexpected = sorted(set(parameters) - set(tensors)), sorted(set(tensors) - set(parameters))
    if strict and (missing or unexpected):
        raise ValueError(f"trainable state {folder}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if name in parameters:
                if tensor.shape != parameters[name].shape:
                    raise ValueError(f"trainable state {folder}: {name} has shape {tuple(tensor.shape)}, model expects {tuple(parameters[name].shape)}")
                parameters[name].copy_(tensor)


def export_rgb_lora(model, folder: str | os.PathLike, weight_name: str = "pytorch_lora_weights.safetensors") -> Path:
    """Write the RGB adapter in the diffusers LoRA format, loadable by ``WanImageToVideoPipeline.load_lora_weights``.

    The RGB branch of DLC is the base plus this adapter (the links are One4D-only), so a plain Wan
    I2V pipeline with it loaded generates RGB the way the fine-tuned RGB branch does without XYZ coupling.
    """
    from diffusers import WanImageToVideoPipeline

    base = model.base
    layers = get_peft_model_state_dict(base, adapter_name="rgb")
    config = base.peft_config["rgb"]
    metadata = config.to_dict()
    metadata["target_modules"] = config.target_modules if isinstance(config.target_modules, str) else sorted(config.target_modules)
    WanImageToVideoPipeline.save_lora_weights(
        folder, transformer_lora_layers=layers, weight_name=weight_name, transformer_lora_adapter_metadata=metadata
    )
    return Path(folder) / weight_name
