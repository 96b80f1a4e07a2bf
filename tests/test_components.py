"""The tiny real-class components: they round-trip through a diffusers Wan I2V directory and run the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from PIL import Image

from one4d.components import build_tiny_components, build_tiny_directory, build_tokenizer, build_vae
from one4d.models.presets import TEXT_TOKENS
from one4d.weights import DIFFUSERS_COMPONENTS, load_diffusers_components


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_directory(tmp_path_factory.mktemp("tiny") / "wan-i2v")


@pytest.fixture(scope="module")
def loaded(folder):
    return load_diffusers_components(folder, components=DIFFUSERS_COMPONENTS + ("scheduler",))


def test_directory_has_the_wan_i2v_layout(folder):
    model_index = json.loads((folder / "model_index.json").read_text())
    assert model_index["_class_name"] == "WanImageToVideoPipeline"
    for name in DIFFUSERS_COMPONENTS + ("scheduler",):
        assert (folder / name).is_dir(), name
        assert model_index[name][0] in ("diffusers", "transformers"), name


def test_components_load_back_with_the_written_weights(folder, loaded):
    # build_tiny_directory(folder) wrote build_tiny_components(seed=0).
    rebuilt = build_tiny_components(seed=0)
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        expected = rebuilt[name].state_dict()
        assert loaded[name].state_dict().keys() == expected.keys()
        for key, tensor in expected.items():
            assert torch.equal(loaded[name].state_dict()[key], tensor), f"{name}.{key}"
    transformer = loaded["transformer"]
    assert transformer.config.in_channels == 36
    assert transformer.config.text_dim == loaded["text_encoder"].config.d_model
    assert transformer.config.image_dim == loaded["image_encoder"].config.hidden_size


def test_load_dtype_and_errors(folder, tmp_path):
    half = load_diffusers_components(folder, dtype=torch.bfloat16, components=("text_encoder", "vae"))
    assert half["text_encoder"].dtype == torch.bfloat16
    assert half["vae"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="no model_index.json"):
        load_diffusers_components(tmp_path)
    with pytest.raises(ValueError, match="unknown components"):
        load_diffusers_components(folder, components=("unet",))


def test_tokenizer_pads_and_truncates_to_512(loaded, tmp_path):
    tokenizer = loaded["tokenizer"]
    long_prompt = " ".join(["a dog runs on the beach"] * 200)  # 1200 words
    batch = tokenizer(
        ["a red car drives slowly", long_prompt],
        padding="max_length", max_length=TEXT_TOKENS, truncation=True, return_tensors="pt",
    )
    assert batch.input_ids.shape == (2, TEXT_TOKENS)
    short_length = int(batch.attention_mask[0].sum())
    assert short_length == 6  # five words and </s>
    assert batch.input_ids[0, short_length - 1] == tokenizer.eos_token_id == 1
    assert (batch.input_ids[0, short_length:] == tokenizer.pad_token_id).all() and tokenizer.pad_token_id == 0
    assert batch.attention_mask[1].all() and batch.input_ids[1, -1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in batch.input_ids[0].tolist()
    # The locally built tokenizer saves and loads like the real one.
    build_tokenizer().save_pretrained(tmp_path)
    assert loaded["tokenizer"].__class__.from_pretrained(tmp_path)("a dog").input_ids == tokenizer("a dog").input_ids


def test_vae_compresses_like_wan():
    vae = build_vae("tiny")
    video = torch.rand(1, 3, 9, 32, 48) * 2 - 1  # (B, 3, F=4k+1, H, W)
    with torch.no_grad():
        latents = vae.encode(video).latent_dist.mode()  # (B, 16, k+1, H/8, W/8)
        decoded = vae.decode(latents).sample  # (B, 3, F, H, W)
    assert latents.shape == (1, 16, 3, 4, 6)
    assert decoded.shape == video.shape


def encode_prompt(tokenizer, text_encoder, prompts):
    """Text embeddings as WanImageToVideoPipeline makes them: 512 tokens, zeros past each prompt's length.

    The pipeline's own text path needs the optional ``ftfy`` package, so the test encodes here.
    """
    batch = tokenizer(prompts, padding="max_length", max_length=TEXT_TOKENS, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = text_encoder(batch.input_ids, batch.attention_mask).last_hidden_state  # (B, 512, text_dim)
    return hidden * batch.attention_mask[..., None]


def test_pipeline_runs_two_steps_from_loaded_components(loaded):
    pipeline = WanImageToVideoPipeline(**loaded)
    pipeline.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    prompt_embeds = encode_prompt(loaded["tokenizer"], loaded["text_encoder"], ["a dog runs on the beach"])
    negative_embeds = encode_prompt(loaded["tokenizer"], loaded["text_encoder"], [""])
    common = dict(
        image=image, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds,
        height=32, width=32, num_frames=5, num_inference_steps=2, guidance_scale=5.0,
    )
    latents = pipeline(**common, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    assert latents.shape == (1, 16, 2, 4, 4)  # (B, 16, (F - 1) / 4 + 1, H / 8, W / 8)
    assert torch.isfinite(latents).all()
    video = pipeline(**common, output_type="np", generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 5, 32, 32, 3)  # (B, F, H, W, 3)
    assert np.isfinite(video).all() and video.min() >= 0 and video.max() <= 1
