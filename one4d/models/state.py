"""Saving and loading only the trainable state, and exporting the RGB LoRA for plain diffusers and ComfyUI.

A trainable state is a folder with ``trainable_state.safetensors`` (LoRAs, links, XYZ in/out) and
``architecture.json`` (architecture, base shapes, LoRA rank, link layers), a few hundred MB at 14B
instead of the 28 GB base. Loading checks the architecture first, so a state of another preset
fails with the mismatch named rather than with a wall of shape errors.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
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


def check_trainable_state(model, folder: str | os.PathLike, strict: bool = True) -> None:
    """One line if the state in ``folder`` does not fit ``model``: its architecture and (``strict``) its tensor names,
    read from the safetensors header. Reads no tensor, so it also checks a model whose weights are partitioned (ZeRO-3)."""
    folder = Path(folder)
    for name in (STATE_FILE, ARCHITECTURE_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} is not a One4D trainable state: {name} is missing")
    saved = json.loads((folder / ARCHITECTURE_FILE).read_text())
    mismatch = _first_difference(saved, model.architecture_config())
    if mismatch:
        raise ValueError(f"trainable state {folder} does not fit this model ({mismatch})")
    if strict:
        with safe_open(folder / STATE_FILE, "pt") as handle:
            names = set(handle.keys())
        parameters = set(model.trainable_state_dict())
        missing, unexpected = sorted(parameters - names), sorted(names - parameters)
        if missing or unexpected:
            raise ValueError(f"trainable state {folder}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def load_trainable_state(model, folder: str | os.PathLike, strict: bool = True) -> None:
    """Load a state written by :func:`save_trainable_state` into a model of the same architecture."""
    folder = Path(folder)
    check_trainable_state(model, folder, strict)
    tensors = load_file(folder / STATE_FILE)
    parameters = model.trainable_state_dict()
    with torch.no_grad():
        for name, tensor in tensors.items():
            if name in parameters:
                if tensor.shape != parameters[name].shape:
                    raise ValueError(f"trainable state {folder}: {name} has shape {tuple(tensor.shape)}, model expects {tuple(parameters[name].shape)}")
                parameters[name].copy_(tensor)


DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
# VideoX-Fun's name for the same LoRA in kohya keys (scripts/wan2.1_fun/train_lora.py save hook), which ComfyUI loads.
COMFYUI_LORA_FILE = "lora_diffusion_pytorch_model_compatible_with_comfyui.safetensors"

# diffusers' Wan block Linear -> the original Wan layout's (ComfyUI's and VideoX-Fun's ``WanModel``): the inverse of
# ``TRANSFORMER_KEYS_RENAME_DICT`` in diffusers' ``convert_wan_transformer_to_diffusers`` (loaders/single_file_utils.py)
# for the twelve LoRA targets (``one4d.models.lora.LORA_TARGET_MODULES``).
ORIGINAL_LORA_TARGETS = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v", "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}
_RGB_LORA_KEY = re.compile(r"^base\.(blocks\.\d+)\.(.+)\.(lora_[AB])\.rgb\.weight$")


def rgb_lora_layers(trainable: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The RGB adapter of a trainable state in peft's names: ``base.blocks.N.<linear>.lora_A.rgb.weight`` ->
    ``blocks.N.<linear>.lora_A.weight`` (what ``get_peft_model_state_dict(base, adapter_name="rgb")`` returns)."""
    layers = {}
    for name, tensor in trainable.items():
        match = _RGB_LORA_KEY.match(name)
        if match:
            block, linear, part = match.groups()
            layers[f"{block}.{linear}.{part}.weight"] = tensor.detach().to("cpu").contiguous()
    if not layers:
        raise ValueError("the trainable state holds no RGB LoRA (no base.blocks.N.*.lora_A.rgb.weight): is it a One4D state?")
    return layers


def comfyui_lora_tensors(layers: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """peft-named LoRA layers -> the kohya keys of VideoX-Fun's ComfyUI-compatible file, on the original Wan layout.

    VideoX-Fun (aigc-apps/VideoX-Fun ``videox_fun/utils/lora_utils.py`` ``convert_peft_lora_to_kohya_lora``) writes
    ``lora_unet__blocks_0_self_attn_q.lora_down.weight`` / ``.lora_up.weight``; ComfyUI recognises that file by
    ``lora_unet__blocks_0_cross_attn_k.lora_down.weight`` and maps ``lora_unet_<path with _>`` to
    ``diffusion_model.<path>.weight`` (comfy/lora_convert.py ``convert_lora_wan_fun``, comfy/lora.py
    ``model_lora_keys_unet``). ``<name>.alpha`` is kohya's scale (``alpha / rank``; ComfyUI reads it, 1 without it).
    """
    tensors = {}
    for name, tensor in layers.items():
        block, rest = re.match(r"^(blocks\.\d+)\.(.+)\.lora_[AB]\.weight$", name).groups()
        module = "lora_unet__" + f"{block}.{ORIGINAL_LORA_TARGETS[rest]}".replace(".", "_")
        tensors[f"{module}.{'lora_down' if '.lora_A.' in name else 'lora_up'}.weight"] = tensor
        tensors[f"{module}.alpha"] = torch.tensor(float(alpha))
    return tensors


def write_rgb_lora(trainable: dict[str, torch.Tensor], architecture: dict, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write the RGB adapter twice: the diffusers file (``WanImageToVideoPipeline.load_lora_weights``) and the
    ComfyUI / VideoX-Fun file (:func:`comfyui_lora_tensors`). Returns both paths."""
    from diffusers import WanImageToVideoPipeline

    from .lora import lora_config

    rank, alpha = int(architecture["lora_rank"]), architecture.get("lora_alpha")
    config = lora_config(rank, alpha)
    layers = rgb_lora_layers(trainable)
    metadata = config.to_dict()
    metadata["target_modules"] = config.target_modules if isinstance(config.target_modules, str) else sorted(config.target_modules)
    folder = Path(folder)
    WanImageToVideoPipeline.save_lora_weights(
        folder, transformer_lora_layers=layers, weight_name=DIFFUSERS_LORA_FILE, transformer_lora_adapter_metadata=metadata
    )
    save_file(comfyui_lora_tensors(layers, config.lora_alpha), folder / COMFYUI_LORA_FILE,
              metadata={"format": "pt", "ss_network_dim": str(rank), "ss_network_alpha": str(config.lora_alpha)})
    return folder / DIFFUSERS_LORA_FILE, folder / COMFYUI_LORA_FILE


def export_rgb_lora(model, folder: str | os.PathLike) -> Path:
    """Write the RGB adapter in the diffusers LoRA format, loadable by ``WanImageToVideoPipeline.load_lora_weights``,
    and beside it the ComfyUI file (:func:`write_rgb_lora`); returns the diffusers file.

    The RGB branch of DLC is the base plus this adapter (the links are One4D-only), so a plain Wan
    I2V pipeline with it loaded generates RGB the way the fine-tuned RGB branch does without XYZ coupling.
    """
    return write_rgb_lora(model.trainable_state_dict(), model.architecture_config(), folder)[0]


def export_rgb_lora_from_state(state: str | os.PathLike, folder: str | os.PathLike) -> tuple[Path, Path]:
    """:func:`write_rgb_lora` straight from a saved trainable state (no base model is built: works for 14B on a laptop)."""
    state = Path(state)
    for name in (STATE_FILE, ARCHITECTURE_FILE):
        if not (state / name).is_file():
            raise ValueError(f"{state} is not a One4D trainable state: {name} is missing")
    architecture = json.loads((state / ARCHITECTURE_FILE).read_text())
    if "lora_rank" not in architecture:
        raise ValueError(f"{state / ARCHITECTURE_FILE} records no lora_rank: not a LoRA-trained One4D state")
    return write_rgb_lora(load_file(state / STATE_FILE), architecture, folder)
