"""RGB LoRA export (issue 16 item 7): ``scripts/export_lora.py checkpoint=... out=...`` writes the diffusers file and
the ComfyUI file with VideoX-Fun's key names; the ComfyUI keys, mapped the way ComfyUI maps them onto the ORIGINAL
Wan layout of a tiny model, patch exactly the RGB branch's weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from one4d.models import One4DTransformer, build_base_transformer, export_rgb_lora, save_trainable_state
from one4d.models.lora import LORA_TARGET_MODULES
from one4d.models.state import COMFYUI_LORA_FILE, DIFFUSERS_LORA_FILE
from test_models import perturb_trainable
from test_weights import to_original_layout

REPO = Path(__file__).resolve().parents[1]
RANK, ALPHA = 4, 2.0  # scale alpha / rank = 0.5: the file must carry it


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny DLC with a non-zero RGB LoRA, saved as a trainable state and exported by the script."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = One4DTransformer(build_base_transformer("tiny"), lora_rank=RANK, lora_alpha=ALPHA, num_links=2)
    perturb_trainable(model)
    save_trainable_state(model, folder / "state")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "export_lora.py"), f"checkpoint={folder / 'state'}",
                             f"out={folder / 'out'}"], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return model, folder


def comfyui_patches(lora: dict, original_keys) -> dict[str, torch.Tensor]:
    """What ComfyUI does with the file: comfy/lora_convert.py ``convert_lora`` (the Wan-Fun detection key, then
    ``lora_unet__`` -> ``lora_unet_``), comfy/lora.py ``model_lora_keys_unet`` (``lora_unet_<path with _>`` ->
    ``diffusion_model.<path>.weight``) and ``calculate_weight`` (``alpha / rank * up @ down``)."""
    assert "lora_unet__blocks_0_cross_attn_k.lora_down.weight" in lora  # ComfyUI's test for a Wan-Fun LoRA
    lora = {("lora_unet_" + key[len("lora_unet__"):]) if key.startswith("lora_unet__") else key: value for key, value in lora.items()}
    key_map = {"lora_unet_" + key[: -len(".weight")].replace(".", "_"): key for key in original_keys if key.endswith(".weight")}
    patches, loaded = {}, set()
    for module, target in key_map.items():
        down, up = lora.get(f"{module}.lora_down.weight"), lora.get(f"{module}.lora_up.weight")
        if down is None:
            continue
        alpha = lora.get(f"{module}.alpha")
        scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
        patches[target] = scale * (up @ down)
        loaded |= {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"}
    assert set(lora) == loaded, sorted(set(lora) - loaded)[:3]  # ComfyUI warns "lora key not loaded" otherwise
    return patches


def test_comfyui_file_patches_every_rgb_lora_linear_of_the_original_layout(exported):
    model, folder = exported
    original = to_original_layout(model.base)  # the real Wan names (tests/test_weights.py checks them against diffusers)
    original = {key.replace(".base_layer.", "."): value for key, value in original.items() if ".lora_" not in key}
    patches = comfyui_patches(load_file(folder / "out" / COMFYUI_LORA_FILE), original)
    assert len(patches) == len(model.base.blocks) * len(LORA_TARGET_MODULES)
    assert "blocks.0.self_attn.q.weight" in patches and "blocks.0.cross_attn.k_img.weight" in patches
    for block_index, block in enumerate(model.base.blocks):
        for name in LORA_TARGET_MODULES:
            layer = block.get_submodule(name)
            delta = layer.scaling["rgb"] * (layer.lora_B["rgb"].weight @ layer.lora_A["rgb"].weight)  # peft's RGB change
            target = [key for key in patches if key.startswith(f"blocks.{block_index}.")
                      and original[key].shape == layer.base_layer.weight.shape
                      and torch.equal(original[key], layer.base_layer.weight)]
            assert len(target) == 1, (block_index, name, target)  # the one original weight of this Linear
            torch.testing.assert_close(patches[target[0]], delta)
    assert layer.scaling["rgb"] == ALPHA / RANK


def test_diffusers_file_equals_the_export_from_the_model(exported, tmp_path):
    model, folder = exported
    from_model = load_file(export_rgb_lora(model, tmp_path))
    from_script = load_file(folder / "out" / DIFFUSERS_LORA_FILE)
    assert set(from_model) == set(from_script) and all(torch.equal(from_model[k], from_script[k]) for k in from_model)
    assert (tmp_path / COMFYUI_LORA_FILE).is_file()


def test_not_a_checkpoint_is_one_line_exit_2(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "export_lora.py"), f"checkpoint={tmp_path}",
                             f"out={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "trainable state" in result.stderr
