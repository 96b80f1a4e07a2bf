"""Loading the base transformer from tiny random checkpoints in both layouts written to a tmp dir."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import save_file

from one4d.models.presets import build_base_transformer
from one4d.weights import load_base_transformer, load_original_wan_transformer

# Inverse of diffusers' convert_wan_transformer_to_diffusers, applied in this order to each key.
_DIFFUSERS_TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
]


def to_original_key(key: str) -> str:
    """The original Wan name of a diffusers WanTransformer3DModel key."""
    if key == "scale_shift_table":
        return "head.modulation"
    for new, old in _DIFFUSERS_TO_ORIGINAL:
        key = key.replace(new, old)
    key = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", key)
    # diffusers' norm2 is the cross-attention norm, Wan's norm3 (diffusers' norm3 has no weights).
    return re.sub(r"^(blocks\.\d+)\.norm2\.", r"\1.norm3.", key)


def to_original_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {to_original_key(key): tensor.clone().contiguous() for key, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return build_base_transformer("tiny").eval()


@pytest.fixture(scope="module")
def original(source):
    return to_original_layout(source)


@pytest.fixture(scope="module")
def inputs():
    """A tiny I2V forward input: 36 channels, 2 latent frames of 4x4, 512 text + 17 image tokens."""
    generator = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, 36, 2, 4, 4, generator=generator),  # (B, C, f, h, w)
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 512, 32, generator=generator),  # (B, 512, text_dim)
        encoder_hidden_states_image=torch.randn(1, 17, 32, generator=generator),  # (B, 17, image_dim)
        return_dict=False,
    )


def assert_same_model(loaded, source, inputs):
    expected = source.state_dict()
    actual = loaded.state_dict()
    assert actual.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key
    with torch.no_grad():
        # Equal weights; from_pretrained may pick other CPU kernels, so outputs agree to float32 rounding.
        torch.testing.assert_close(loaded(**inputs)[0], source(**inputs)[0])


def test_inverse_mapping_round_trips_through_diffusers_conversion(source, original):
    names = set(original)
    for name in [
        "blocks.0.self_attn.q.weight", "blocks.0.cross_attn.k_img.weight", "blocks.0.ffn.0.weight",
        "patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
        "time_projection.1.weight", "head.head.weight", "head.modulation", "img_emb.proj.0.weight",
        "blocks.0.modulation", "blocks.0.norm3.weight", "blocks.0.cross_attn.norm_k_img.weight",
    ]:
        assert name in names, name
    converted = convert_wan_transformer_to_diffusers(dict(original))
    assert converted.keys() == source.state_dict().keys()


def test_diffusers_transformer_and_pipeline_folders(tmp_path, source, inputs):
    source.save_pretrained(tmp_path / "pipe" / "transformer")
    assert_same_model(load_base_transformer(tmp_path / "pipe" / "transformer"), source, inputs)
    assert_same_model(load_base_transformer(tmp_path / "pipe", preset="tiny"), source, inputs)


def test_diffusers_folder_checked_against_preset(tmp_path, source):
    source.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="text_dim=32 but preset 'wan2.1-fun-1.3b-inp' has text_dim=4096"):
        load_base_transformer(tmp_path, preset="wan2.1-fun-1.3b-inp")


def write_shards(folder, state_dict, with_index, index_name="diffusion_pytorch_model.safetensors.index.json"):
    """Two safetensors shards named as diffusers/VideoX-Fun name them, optionally with their index."""
    folder.mkdir(parents=True)
    keys = list(state_dict)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    weight_map = {}
    for number, half in enumerate(halves, start=1):
        name = f"diffusion_pytorch_model-0000{number}-of-00002.safetensors"
        save_file({key: state_dict[key] for key in half}, folder / name)
        weight_map.update({key: name for key in half})
    if with_index:
        (folder / index_name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    # VideoX-Fun ships the original Wan config.json beside its shards; it must not look like a diffusers one.
    (folder / "config.json").write_text(json.dumps({"_class_name": "WanModel", "dim": 32, "model_type": "i2v"}))


@pytest.mark.parametrize(
    "with_index, index_name",
    [(True, "diffusion_pytorch_model.safetensors.index.json"), (True, "model.safetensors.index.json"), (False, None)],
)
def test_original_layout_shards(tmp_path, source, original, inputs, with_index, index_name):
    write_shards(tmp_path / "ckpt", original, with_index, index_name)
    assert_same_model(load_base_transformer(tmp_path / "ckpt", preset="tiny"), source, inputs)


def test_original_layout_single_file_with_local_config_folder(tmp_path, source, original, inputs):
    save_file(original, tmp_path / "model.safetensors")
    source.save_config(tmp_path / "config")
    loaded = load_original_wan_transformer(tmp_path / "model.safetensors", config=tmp_path / "config")
    assert_same_model(loaded, source, inputs)


def test_original_layout_pth_and_prefixed_keys(tmp_path, source, original, inputs):
    torch.save(original, tmp_path / "plain.pth")
    assert_same_model(load_base_transformer(tmp_path / "plain.pth", preset="tiny"), source, inputs)
    # Checkpoints saved from a wrapper carry "model.diffusion_model." and sit under "state_dict".
    prefixed = {f"model.diffusion_model.{key}": tensor for key, tensor in original.items()}
    torch.save({"state_dict": prefixed}, tmp_path / "wrapped.pt")
    assert_same_model(load_base_transformer(tmp_path / "wrapped.pt", preset="tiny"), source, inputs)


def test_dtype_casts_but_keeps_fp32_modules(tmp_path, original):
    save_file(original, tmp_path / "model.safetensors")
    loaded = load_base_transformer(tmp_path / "model.safetensors", preset="tiny", dtype=torch.bfloat16)
    assert loaded.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert loaded.scale_shift_table.dtype == torch.float32
    assert loaded.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32


class _RunsCode:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path, original):
    marker = tmp_path / "code_ran"
    payload = {"patch_embedding.weight": original["patch_embedding.weight"], "payload": _RunsCode(marker)}
    torch.save(payload, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refusing to load .*evil.pth"):
        load_base_transformer(tmp_path / "evil.pth", preset="tiny")
    assert not marker.exists()


def test_preset_with_other_shapes_names_the_first_mismatch(tmp_path, original):
    save_file(original, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"scale_shift_table is \(1, 2, 32\) in the file "
                       r"but \(1, 2, 1536\) in the model \(expected the transformer of this preset's config"):
        load_base_transformer(tmp_path / "model.safetensors", preset="wan2.1-fun-1.3b-inp")


def test_missing_and_unexpected_keys_are_named(tmp_path, original):
    broken = dict(original)
    del broken["blocks.1.cross_attn.v_img.weight"]
    broken["blocks.0.extra.weight"] = torch.zeros(1)
    save_file(broken, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing keys blocks.1.attn2.add_v_proj.weight, "
                       r"unexpected keys blocks.0.extra.weight"):
        load_base_transformer(tmp_path / "model.safetensors", preset="tiny")


def test_bad_sources(tmp_path, original):
    with pytest.raises(ValueError, match="no such file or folder"):
        load_base_transformer(tmp_path / "absent", preset="tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a diffusers folder"):
        load_base_transformer(tmp_path / "empty", preset="tiny")
    save_file(original, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="pass preset="):
        load_base_transformer(tmp_path / "model.safetensors")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported checkpoint file"):
        load_base_transformer(tmp_path / "notes.txt", preset="tiny")
