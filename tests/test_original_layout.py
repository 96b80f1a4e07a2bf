"""Loading the encoders of a Wan2.1-Fun download as shipped (original Wan layout .pth files).

Tiny random models in the diffusers/transformers classes are written in the ORIGINAL layouts by the
inverse key maps below (written here independently of one4d.original_layout), loaded back, and must
compute bit for bit what the originals compute. Small transcriptions of Wan's own forward passes check
that the key maps also mean the same math (a swapped gate/fc1 would survive a round trip).
"""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

from one4d.components import build_tokenizer
from one4d.encoding import encode_image, encode_prompt, encode_video
from one4d.original_layout import (
    CLIP_FILE,
    T5_FILE,
    TOKENIZER_FOLDER,
    VAE_FILE,
    convert_clip_to_transformers,
    convert_umt5_to_transformers,
    is_original_layout_folder,
    load_original_clip,
    load_original_components,
    load_original_umt5,
    load_original_vae,
    umt5_xxl_config,
    vit_huge_14_config,
)

# Tiny VAE: Wan's dim_mult and num_res_blocks (diffusers' converter hard-codes the decoder indices of
# that layout), 8 base channels.
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True])


def tiny_umt5_config() -> UMT5Config:
    return UMT5Config(vocab_size=len(build_tokenizer()), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1)


def tiny_clip_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, projection_dim=16, num_hidden_layers=3, num_attention_heads=4,
                            image_size=32, patch_size=8, hidden_act="gelu", layer_norm_eps=1e-5)


# ---- Inverse key maps: diffusers / transformers -> original Wan layout ---------------------------------------

# VAE names from diffusers' convert_wan_vae_to_diffusers (single_file_utils.py): residual.{0,2,3,6} are
# RMS_norm, CausalConv3d, RMS_norm, CausalConv3d of Wan's ResidualBlock (Sequential with SiLU/Dropout between).
_RESNET = {"norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight", "conv1.bias": "residual.2.bias",
           "norm2.gamma": "residual.3.gamma", "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
           "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias"}
_VAE_FIXED = {"quant_conv.weight": "conv1.weight", "quant_conv.bias": "conv1.bias",
              "post_quant_conv.weight": "conv2.weight", "post_quant_conv.bias": "conv2.bias"}


def vae_key_to_wan(key: str) -> str:
    if key in _VAE_FIXED:
        return _VAE_FIXED[key]
    side, rest = key.split(".", 1)
    for diffusers_name, wan_name in (("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2.")):
        if rest.startswith(diffusers_name):
            return f"{side}.{wan_name}{rest[len(diffusers_name):]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest):  # middle = [resnet, attention, resnet]
        return f"{side}.middle.{2 * int(m[1])}.{_RESNET[m[2]]}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{side}.middle.1.{m[1]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(.+)", rest):  # flat in both; resample / time_conv keep their names
        return f"encoder.downsamples.{m[1]}.{_RESNET.get(m[2], m[2])}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):  # 3 resnets then an upsampler per block
        return f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}.{_RESNET[m[3]]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"decoder.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
    raise KeyError(key)


# Wan2.1 wan/modules/t5.py (commit fc124fd): T5Encoder.__init__ registers token_embedding, blocks, norm
# (no shared pos_embedding: umt5_xxl passes shared_pos=False); T5SelfAttention.__init__ registers norm1, attn,
# norm2, ffn, pos_embedding (T5RelativeEmbedding.embedding); T5Attention q, k, v, o (no bias); T5FeedForward
# gate = Sequential(Linear, GELU), fc1, fc2; forward: fc2(fc1(x) * gate(x)).
_T5_BLOCK = {"0.layer_norm.weight": "norm1.weight", "0.SelfAttention.q.weight": "attn.q.weight",
             "0.SelfAttention.k.weight": "attn.k.weight", "0.SelfAttention.v.weight": "attn.v.weight",
             "0.SelfAttention.o.weight": "attn.o.weight",
             "0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
             "1.layer_norm.weight": "norm2.weight", "1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
             "1.DenseReluDense.wi_1.weight": "ffn.fc1.weight", "1.DenseReluDense.wo.weight": "ffn.fc2.weight"}


def umt5_to_wan(state_dict: dict) -> dict:
    wan = {}
    for key, tensor in state_dict.items():
        if key == "shared.weight":
            wan["token_embedding.weight"] = tensor
        elif key == "encoder.final_layer_norm.weight":
            wan["norm.weight"] = tensor
        elif m := re.fullmatch(r"encoder\.block\.(\d+)\.layer\.(.+)", key):
            wan[f"blocks.{m[1]}.{_T5_BLOCK[m[2]]}"] = tensor
        elif key != "encoder.embed_tokens.weight":  # tied to shared.weight
            raise KeyError(key)
    return wan


def wan_t5_keys(num_layers: int) -> set[str]:
    """The state dict keys of Wan's T5Encoder, from the module tree above."""
    block = ["norm1.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight", "norm2.weight",
             "ffn.gate.0.weight", "ffn.fc1.weight", "ffn.fc2.weight", "pos_embedding.embedding.weight"]
    return {"token_embedding.weight", "norm.weight"} | {f"blocks.{i}.{name}" for i in range(num_layers) for name in block}


# Wan2.1 wan/modules/clip.py (commit 960af87): VisionTransformer.__init__ registers patch_embedding (Conv2d,
# bias=not pre_norm), cls_embedding (1, 1, dim), pos_embedding (1, 1 + patches, dim), pre_norm, transformer
# (Sequential of AttentionBlock: norm1, attn.to_qkv / attn.proj, norm2, mlp = Sequential(Linear, GELU, Linear,
# Dropout)), post_norm, head = Parameter(dim, out_dim) for pool_type 'token'.
_CLIP_LAYER = {"layer_norm1": "norm1", "self_attn.out_proj": "attn.proj", "layer_norm2": "norm2", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2"}


def clip_to_wan(state_dict: dict) -> dict:
    wan = {}
    for key, tensor in state_dict.items():
        if key == "vision_model.embeddings.class_embedding":
            wan["visual.cls_embedding"] = tensor.reshape(1, 1, -1)
        elif key == "vision_model.embeddings.position_embedding.weight":
            wan["visual.pos_embedding"] = tensor[None]
        elif key == "vision_model.embeddings.patch_embedding.weight":
            wan["visual.patch_embedding.weight"] = tensor
        elif key == "visual_projection.weight":
            wan["visual.head"] = tensor.t().contiguous()
        elif m := re.fullmatch(r"vision_model\.(pre_layrnorm|post_layernorm)\.(weight|bias)", key):
            wan[f"visual.{'pre_norm' if m[1] == 'pre_layrnorm' else 'post_norm'}.{m[2]}"] = tensor
        elif m := re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            prefix = f"vision_model.encoder.layers.{m[1]}.self_attn"
            if m[2] == "self_attn.v_proj":  # q, k, v packed into to_qkv in that order
                wan[f"visual.transformer.{m[1]}.attn.to_qkv.{m[3]}"] = torch.cat(
                    [state_dict[f"{prefix}.{name}_proj.{m[3]}"] for name in "qkv"])
            elif m[2] not in ("self_attn.q_proj", "self_attn.k_proj"):
                wan[f"visual.transformer.{m[1]}.{_CLIP_LAYER[m[2]]}.{m[3]}"] = tensor
        else:
            raise KeyError(key)
    return wan


def wan_clip_visual_keys(num_layers: int) -> set[str]:
    layer = [f"{name}.{kind}" for name in ("norm1", "attn.to_qkv", "attn.proj", "norm2", "mlp.0", "mlp.2") for kind in ("weight", "bias")]
    return ({"visual.patch_embedding.weight", "visual.cls_embedding", "visual.pos_embedding", "visual.head"}
            | {f"visual.{norm}.{kind}" for norm in ("pre_norm", "post_norm") for kind in ("weight", "bias")}
            | {f"visual.transformer.{i}.{name}" for i in range(num_layers) for name in layer})


# ---- Transcriptions of Wan's forward passes (float32) ---------------------------------------------------------

def wan_t5_forward(sd: dict, ids: torch.Tensor, mask: torch.Tensor, config: UMT5Config) -> torch.Tensor:
    """T5Encoder.forward of wan/modules/t5.py, eval mode, from Wan-layout tensors: (B, L) ids -> (B, L, dim)."""
    def rms(x, weight):  # T5LayerNorm
        return weight * (x * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + 1e-6))

    def buckets(rel_pos):  # T5RelativeEmbedding._relative_position_bucket, bidirectional
        num_buckets = config.relative_attention_num_buckets // 2
        rel_buckets = (rel_pos > 0).long() * num_buckets
        rel_pos = rel_pos.abs()
        max_exact = num_buckets // 2
        large = max_exact + (torch.log(rel_pos.float() / max_exact) / torch.log(torch.tensor(config.relative_attention_max_distance / max_exact))
                             * (num_buckets - max_exact)).long()
        large = large.clamp(max=num_buckets - 1)
        return rel_buckets + torch.where(rel_pos < max_exact, rel_pos, large)

    b, length, n, c = ids.shape[0], ids.shape[1], config.num_heads, config.d_kv
    x = F.embedding(ids, sd["token_embedding.weight"])
    rel_pos = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    for i in range(config.num_layers):
        p = f"blocks.{i}."
        pos_bias = F.embedding(buckets(rel_pos), sd[p + "pos_embedding.embedding.weight"]).permute(2, 0, 1)[None]  # (1, N, L, L)
        h = rms(x, sd[p + "norm1.weight"])
        q, k, v = (F.linear(h, sd[p + f"attn.{name}.weight"]).view(b, -1, n, c) for name in "qkv")
        bias = (torch.zeros(b, n, length, length) + pos_bias).masked_fill(mask.view(b, 1, 1, -1) == 0, torch.finfo(x.dtype).min)
        attn = F.softmax(torch.einsum("binc,bjnc->bnij", q, k) + bias, dim=-1)  # T5 does not scale
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", attn, v).reshape(b, -1, n * c), sd[p + "attn.o.weight"])
        h = rms(x, sd[p + "norm2.weight"])
        gate = F.gelu(F.linear(h, sd[p + "ffn.gate.0.weight"]), approximate="tanh")
        x = x + F.linear(F.linear(h, sd[p + "ffn.fc1.weight"]) * gate, sd[p + "ffn.fc2.weight"])
    return rms(x, sd["norm.weight"])


def wan_visual_forward_31(sd: dict, pixels: torch.Tensor, config: CLIPVisionConfig) -> torch.Tensor:
    """VisionTransformer.forward(x, use_31_block=True) of wan/modules/clip.py: all blocks but the last, no post_norm."""
    b, n, d = pixels.shape[0], config.num_attention_heads, config.hidden_size // config.num_attention_heads
    norm = lambda x, name: F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], 1e-5)  # noqa: E731
    x = F.conv2d(pixels, sd["visual.patch_embedding.weight"], stride=config.patch_size).flatten(2).permute(0, 2, 1)  # (B, patches, D)
    x = torch.cat([sd["visual.cls_embedding"].expand(b, -1, -1), x], dim=1) + sd["visual.pos_embedding"]
    x = norm(x, "visual.pre_norm")
    for i in range(config.num_hidden_layers - 1):
        p = f"visual.transformer.{i}."
        qkv = F.linear(norm(x, p + "norm1"), sd[p + "attn.to_qkv.weight"], sd[p + "attn.to_qkv.bias"])
        q, k, v = qkv.view(b, x.shape[1], 3, n, d).unbind(2)  # each (B, S, heads, head_dim)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # scale 1/sqrt(d)
        x = x + F.linear(attn.transpose(1, 2).reshape(x.shape), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.gelu(F.linear(norm(x, p + "norm2"), sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"]))
        x = x + F.linear(h, sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"])
    return x


# ---- Fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def originals():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY_VAE).eval()
    umt5 = UMT5EncoderModel(tiny_umt5_config()).eval()
    clip = CLIPVisionModelWithProjection(tiny_clip_config()).eval()
    return vae, umt5, clip


def clip_file_state(clip) -> dict:
    """What Wan's CLIP .pth holds: visual.* plus the text tower and log_scale, which the loader ignores."""
    return {**clip_to_wan(clip.state_dict()), "textual.token_embedding.weight": torch.randn(10, 8), "log_scale": torch.tensor(2.65)}


@pytest.fixture(scope="module")
def fun_folder(tmp_path_factory, originals):
    """A tiny Wan2.1-Fun download, files named as shipped (T5 in bf16 as shipped)."""
    vae, umt5, clip = originals
    folder = tmp_path_factory.mktemp("Wan2.1-Fun-V1.1-14B-InP")
    torch.save({vae_key_to_wan(k): v for k, v in vae.state_dict().items()}, folder / VAE_FILE)
    torch.save({k: v.to(torch.bfloat16) for k, v in umt5_to_wan(umt5.state_dict()).items()}, folder / T5_FILE)
    torch.save(clip_file_state(clip), folder / CLIP_FILE)
    build_tokenizer().save_pretrained(folder / TOKENIZER_FOLDER)
    (folder / "xlm-roberta-large").mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "WanModel", "model_type": "i2v"}))
    return folder


def tiny_configs():
    return {"vae": TINY_VAE, "text_encoder": tiny_umt5_config(), "image_encoder": tiny_clip_config()}


# ---- Tests ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def test_vae_round_trip_is_bit_exact_and_float32(tmp_path, originals):
    vae = originals[0]
    stored = {vae_key_to_wan(k): v for k, v in vae.state_dict().items()}
    torch.save(stored, tmp_path / VAE_FILE)
    loaded = load_original_vae(tmp_path / VAE_FILE, TINY_VAE)
    converted = convert_wan_vae_to_diffusers(stored)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert all(torch.equal(tensor, converted[key]) for key, tensor in loaded.state_dict().items())

    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1  # (B, 3, F, H, W)
    latents = vae.encode(video).latent_dist.mode()  # (1, 16, 2, 2, 2)
    assert torch.equal(loaded.encode(video).latent_dist.mode(), latents)
    assert torch.equal(loaded.decode(latents).sample, vae.decode(latents).sample)

    torch.save({k: v.to(torch.bfloat16) for k, v in stored.items()}, tmp_path / "bf16.pth")
    widened = load_original_vae(tmp_path / "bf16.pth", TINY_VAE)
    key = "decoder.conv_in.weight"
    assert widened.state_dict()[key].dtype == torch.float32
    assert torch.equal(widened.state_dict()[key], converted[key].to(torch.bfloat16).float())


@torch.no_grad()
def test_umt5_round_trip_is_bit_exact_and_matches_wans_math(tmp_path, originals):
    umt5, config = originals[1], tiny_umt5_config()
    stored = umt5_to_wan(umt5.state_dict())
    assert set(stored) == wan_t5_keys(config.num_layers)
    torch.save(stored, tmp_path / T5_FILE)
    loaded = load_original_umt5(tmp_path / T5_FILE, config)
    assert loaded.shared.weight is loaded.encoder.embed_tokens.weight

    ids = torch.randint(2, config.vocab_size, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0  # a padded prompt
    hidden = loaded(ids, mask).last_hidden_state  # (2, 12, 32)
    assert torch.equal(hidden, umt5(ids, mask).last_hidden_state)
    torch.testing.assert_close(hidden, wan_t5_forward(stored, ids, mask, config), rtol=1e-5, atol=1e-5)


def test_umt5_stored_bf16_loads_as_bf16(fun_folder):
    loaded = load_original_umt5(fun_folder / T5_FILE, tiny_umt5_config())
    stored = torch.load(fun_folder / T5_FILE, weights_only=True)
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    assert torch.equal(loaded.encoder.block[1].layer[1].DenseReluDense.wi_0.weight, stored["blocks.1.ffn.gate.0.weight"])
    assert load_original_umt5(fun_folder / T5_FILE, tiny_umt5_config(), dtype=torch.float32).shared.weight.dtype == torch.float32


@torch.no_grad()
def test_clip_round_trip_is_bit_exact_and_matches_wans_31_blocks(tmp_path, originals):
    clip, config = originals[2], tiny_clip_config()
    stored = clip_file_state(clip)
    assert {k for k in stored if k.startswith("visual.")} == wan_clip_visual_keys(config.num_hidden_layers)
    torch.save(stored, tmp_path / CLIP_FILE)
    loaded, processor = load_original_clip(tmp_path / CLIP_FILE, config)

    pixels = torch.randn(2, 3, 32, 32)
    hidden = loaded(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == config.num_hidden_layers + 1
    assert torch.equal(hidden[-2], clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2])
    assert torch.equal(loaded(pixel_values=pixels).image_embeds, clip(pixel_values=pixels).image_embeds)
    torch.testing.assert_close(hidden[-2], wan_visual_forward_31(stored, pixels, config), rtol=1e-5, atol=1e-5)

    # Wan's transform: a bicubic resize to the square (no crop) and OpenAI CLIP mean / std.
    image = (torch.rand(48, 80, 3) * 255).to(torch.uint8).numpy()
    assert processor(images=[image], return_tensors="pt").pixel_values.shape == (1, 3, 32, 32)
    assert not processor.do_center_crop and processor.resample == 3
    assert list(processor.image_mean) == [0.48145466, 0.4578275, 0.40821073] and list(processor.image_std) == [0.26862954, 0.26130258, 0.27577711]


def test_wrong_component_and_unsafe_pickle_are_refused_in_one_line(tmp_path, fun_folder):
    cases = [
        (lambda: load_original_umt5(fun_folder / CLIP_FILE, tiny_umt5_config()), "has no key token_embedding.weight: not Wan's UMT5 encoder"),
        (lambda: load_original_clip(fun_folder / VAE_FILE, tiny_clip_config()), "has no key visual.patch_embedding.weight"),
        (lambda: load_original_vae(fun_folder / T5_FILE, TINY_VAE), "not Wan2.1's VAE"),
        (lambda: load_original_umt5(fun_folder / T5_FILE, UMT5Config(**{**tiny_umt5_config().to_dict(), "num_layers": 3})),
         "is not Wan2.1's T5Encoder .*missing keys encoder.block.2"),
        (lambda: load_original_clip(fun_folder / CLIP_FILE, CLIPVisionConfig(**{**tiny_clip_config().to_dict(), "hidden_act": "quick_gelu"})),
         "exact GELU"),
    ]
    torch.save({"weight": torch.zeros(2), "options": argparse.Namespace(lr=1.0)}, tmp_path / "unsafe.pth")
    cases.append((lambda: load_original_umt5(tmp_path / "unsafe.pth", tiny_umt5_config()), "refusing to load"))
    for load, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            load()
        assert "\n" not in str(error.value)


@torch.no_grad()
def test_load_original_components_reads_a_fun_folder_as_shipped(tmp_path, fun_folder, originals):
    assert is_original_layout_folder(fun_folder) and not is_original_layout_folder(tmp_path)
    parts = load_original_components(fun_folder, configs=tiny_configs())
    assert set(parts) == {"vae", "text_encoder", "tokenizer", "image_encoder", "image_processor"}
    assert next(parts["vae"].parameters()).dtype == torch.float32
    assert next(parts["text_encoder"].parameters()).dtype == torch.bfloat16  # as stored
    assert next(parts["image_encoder"].parameters()).dtype == torch.float32

    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    assert encode_video(parts["vae"], video).shape == (1, 16, 2, 2, 2)
    prompt = encode_prompt(parts["tokenizer"], parts["text_encoder"], ["a red car drives on a road"])
    assert prompt.shape == (1, 512, 32) and prompt[0, :3].abs().sum() > 0 and prompt[0, 20:].abs().sum() == 0
    assert encode_image(parts["image_encoder"], parts["image_processor"], video[:, :, 0]).shape == (1, 17, 32)

    as_fp32 = load_original_components(fun_folder, dtype=torch.float32, components=("text_encoder",), configs=tiny_configs())
    assert next(as_fp32["text_encoder"].parameters()).dtype == torch.float32

    lacking = tmp_path / "partial"
    lacking.mkdir()
    (lacking / VAE_FILE).write_bytes((fun_folder / VAE_FILE).read_bytes())
    assert is_original_layout_folder(lacking)
    with pytest.raises(ValueError, match=f"lacks .*{T5_FILE}.*expected a Wan2.1-Fun folder"):
        load_original_components(lacking, configs=tiny_configs())


def test_real_sizes_parameter_counts_and_key_maps():
    """Full-size configs on meta: parameter counts, and Wan-layout key sets that convert to exactly the HF keys and shapes."""
    with torch.device("meta"):
        umt5 = UMT5EncoderModel(umt5_xxl_config())
        clip = CLIPVisionModelWithProjection(vit_huge_14_config())
    # 256384 x 4096 embedding + 24 x (4 x 4096^2 attention + 3 x 4096 x 10240 FFN + 2 norms + 32 x 64 bias) + final norm.
    assert sum(p.numel() for p in umt5.parameters()) == 5_680_910_336
    # ViT-H/14: 32 x 19,677,440 per block + patch/cls/pos embeddings, two LayerNorms outside the blocks, 1280 x 1024 projection.
    assert sum(p.numel() for p in clip.parameters()) == 632_076_800

    for model, to_wan, wan_keys, convert in (
        (umt5, umt5_to_wan, wan_t5_keys(24), convert_umt5_to_transformers),
        (clip, clip_to_wan, wan_clip_visual_keys(32), convert_clip_to_transformers),
    ):
        expected = {key: tensor.shape for key, tensor in model.state_dict().items()}
        wan = to_wan(model.state_dict())
        assert set(wan) == wan_keys
        assert {key: tensor.shape for key, tensor in convert(wan).items()} == expected
    assert wan["visual.transformer.0.attn.to_qkv.weight"].shape == (3840, 1280) and wan["visual.head"].shape == (1280, 1024)
    assert wan["visual.cls_embedding"].shape == (1, 1, 1280) and wan["visual.pos_embedding"].shape == (1, 257, 1280)

    with init_empty_weights():
        vae = AutoencoderKLWan()  # the default config is the Wan2.1 VAE
    expected = {key: tensor.shape for key, tensor in vae.state_dict().items()}
    wan = {vae_key_to_wan(key): tensor for key, tensor in vae.state_dict().items()}
    assert {key: tensor.shape for key, tensor in convert_wan_vae_to_diffusers(wan).items()} == expected
