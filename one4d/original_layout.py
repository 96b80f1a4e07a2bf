"""The encoders of a Wan2.1-Fun download AS SHIPPED (original Wan layout .pth files) in the project's classes.

VideoX-Fun's Wan2.1-Fun-V1.1-14B-InP folder (Wan2.1's own layout) holds, next to the transformer
(``one4d.weights.load_original_wan_transformer``) and its ``config.json``:

* ``Wan2.1_VAE.pth``: ``WanVAE_`` of Wan2.1 ``wan/modules/vae.py`` -> ``AutoencoderKLWan`` through diffusers'
  own ``convert_wan_vae_to_diffusers``;
* ``models_t5_umt5-xxl-enc-bf16.pth`` + ``google/umt5-xxl/``: ``T5Encoder`` of ``wan/modules/t5.py`` ->
  ``UMT5EncoderModel`` + its tokenizer;
* ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``: ``XLMRobertaCLIP`` of ``wan/modules/clip.py``;
  its ``visual.*`` ViT-H/14 -> ``CLIPVisionModelWithProjection`` (``textual.*`` and ``log_scale`` are unused).

Files are read with ``torch.load(weights_only=True)``; models are built on meta and take the stored tensors
by assignment (memory holds one copy). Every key must match. Nothing here touches a hub.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from one4d.models.presets import cast_keeping_fp32_modules
from one4d.weights import assign_checked, existing_path, read_original_state_dict

VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
TOKENIZER_FOLDER = "google/umt5-xxl"
ORIGINAL_COMPONENTS = ("vae", "text_encoder", "tokenizer", "image_encoder", "image_processor")
_FUN_LAYOUT = f"a Wan2.1-Fun folder as VideoX-Fun ships it ({VAE_FILE}, {T5_FILE}, {TOKENIZER_FOLDER}/, {CLIP_FILE})"

# Wan2.1 wan/modules/t5.py T5Encoder (umt5_xxl: shared_pos=False, so every block has its own
# pos_embedding) -> transformers UMT5EncoderModel. token_embedding.weight is handled apart (two targets).
_UMT5_RENAMES = (
    (r"blocks\.(\d+)\.norm1\.weight", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"blocks\.(\d+)\.attn\.([qkvo])\.weight", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (r"blocks\.(\d+)\.pos_embedding\.embedding\.weight", r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight"),
    (r"blocks\.(\d+)\.norm2\.weight", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"blocks\.(\d+)\.ffn\.gate\.0\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),  # the GELU branch
    (r"blocks\.(\d+)\.ffn\.fc1\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),  # the linear branch
    (r"blocks\.(\d+)\.ffn\.fc2\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
    (r"norm\.weight", "encoder.final_layer_norm.weight"),
)
# Wan2.1 wan/modules/clip.py VisionTransformer -> transformers CLIPVisionModelWithProjection (same-shape renames).
_CLIP_RENAMES = (
    (r"visual\.patch_embedding\.weight", "vision_model.embeddings.patch_embedding.weight"),  # no bias: pre_norm=True
    (r"visual\.pre_norm\.(weight|bias)", r"vision_model.pre_layrnorm.\1"),
    (r"visual\.transformer\.(\d+)\.norm1\.(weight|bias)", r"vision_model.encoder.layers.\1.layer_norm1.\2"),
    (r"visual\.transformer\.(\d+)\.attn\.proj\.(weight|bias)", r"vision_model.encoder.layers.\1.self_attn.out_proj.\2"),
    (r"visual\.transformer\.(\d+)\.norm2\.(weight|bias)", r"vision_model.encoder.layers.\1.layer_norm2.\2"),
    (r"visual\.transformer\.(\d+)\.mlp\.0\.(weight|bias)", r"vision_model.encoder.layers.\1.mlp.fc1.\2"),
    (r"visual\.transformer\.(\d+)\.mlp\.2\.(weight|bias)", r"vision_model.encoder.layers.\1.mlp.fc2.\2"),
    (r"visual\.post_norm\.(weight|bias)", r"vision_model.post_layernorm.\1"),
)
_QKV = re.compile(r"visual\.transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)")


def umt5_xxl_config() -> UMT5Config:
    """google/umt5-xxl's encoder, as ``umt5_xxl`` in wan/modules/t5.py builds it (64 heads of 64, 24 layers, 32 buckets)."""
    return UMT5Config(
        vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_decoder_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6, dropout_rate=0.1, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )


def vit_huge_14_config() -> CLIPVisionConfig:
    """The vision tower of ``clip_xlm_roberta_vit_h_14`` (wan/modules/clip.py): exact GELU, LayerNorm eps 1e-5, 257 tokens."""
    return CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, projection_dim=1024, num_hidden_layers=32, num_attention_heads=16,
        image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5,
    )


def convert_umt5_to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's T5Encoder keys -> UMT5EncoderModel keys; same tensors, unknown keys pass through unchanged."""
    converted = {}
    for key, tensor in state_dict.items():
        if key == "token_embedding.weight":  # the encoder reads the shared embedding: one tensor, two names
            converted["shared.weight"] = converted["encoder.embed_tokens.weight"] = tensor
            continue
        converted[_rename(key, _UMT5_RENAMES)] = tensor
    return converted


def convert_clip_to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's XLMRobertaCLIP ``visual.*`` keys -> CLIPVisionModelWithProjection keys; ``textual.*`` and ``log_scale`` dropped."""
    converted = {}
    for key, tensor in state_dict.items():
        if key.startswith("textual.") or key == "log_scale":
            continue
        if qkv := _QKV.fullmatch(key):
            # Wan splits to_qkv(x).view(b, s, 3, heads, head_dim): q, k, v are consecutive row blocks.
            prefix = f"vision_model.encoder.layers.{qkv[1]}.self_attn"
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):  # (3D, ...) -> 3 x (D, ...)
                converted[f"{prefix}.{name}.{qkv[2]}"] = part
        elif key == "visual.cls_embedding":
            converted["vision_model.embeddings.class_embedding"] = tensor.reshape(-1)  # (1, 1, D) -> (D,)
        elif key == "visual.pos_embedding":
            converted["vision_model.embeddings.position_embedding.weight"] = tensor[0]  # (1, 1 + patches, D) -> (1 + patches, D)
        elif key == "visual.head":
            # Wan computes x @ head; a Linear computes x @ weight.T.
            converted["visual_projection.weight"] = tensor.t().contiguous()  # (D, projection) -> (projection, D)
        else:
            converted[_rename(key, _CLIP_RENAMES)] = tensor
    return converted


def _rename(key: str, renames: tuple) -> str:
    for pattern, target in renames:
        if match := re.fullmatch(pattern, key):
            return match.expand(target)
    return key


def load_original_vae(path: str | Path, config: dict | None = None) -> AutoencoderKLWan:
    """``AutoencoderKLWan`` in float32 from ``Wan2.1_VAE.pth``; ``config`` defaults to AutoencoderKLWan's (the Wan2.1 VAE).

    fp32 tensors are kept as stored (bit for bit); lower-precision ones are widened exactly.
    """
    state_dict = _read_checked(path, "decoder.middle.0.residual.0.gamma", "Wan2.1's VAE")
    with init_empty_weights():
        model = AutoencoderKLWan.from_config(config or {})
    layout = "Wan2.1's WanVAE_ (wan/modules/vae.py) renamed by diffusers' convert_wan_vae_to_diffusers"
    return assign_checked(model, convert_wan_vae_to_diffusers(state_dict), path, layout).float().eval()


def load_original_umt5(
    path: str | Path, config: UMT5Config | None = None, dtype: torch.dtype | None = None
) -> UMT5EncoderModel:
    """``UMT5EncoderModel`` from Wan's ``models_t5_umt5-xxl-enc-bf16.pth``; ``dtype=None`` keeps the stored dtype (bf16).

    The math is HF's UMT5 as Wan's T5Encoder computes it: RMS norms (eps 1e-6), gated tanh-GELU FFN
    (``fc1(x) * gelu(gate(x))`` = ``wi_1(x) * gelu_new(wi_0(x))``), unscaled attention with a per-layer
    bidirectional relative bias (32 buckets, max distance 128), no embedding scale. Differences: Wan
    replaces masked scores with the dtype minimum where HF's eager path adds it (equal after softmax);
    Wan's softmax runs in float32 where HF's eager one runs in the model dtype; under fp16 ``wo`` stays
    fp32 as ``from_pretrained`` keeps it (``_keep_in_fp32_modules``; fp16 overflows there), where Wan casts it.
    """
    state_dict = _read_checked(path, "token_embedding.weight", "Wan's UMT5 encoder")
    with init_empty_weights():
        model = UMT5EncoderModel(config or umt5_xxl_config())
    layout = "Wan2.1's T5Encoder (wan/modules/t5.py, umt5-xxl) for this config"
    model = assign_checked(model, convert_umt5_to_transformers(state_dict), path, layout)
    model.tie_weights()  # assignment gave shared and encoder.embed_tokens separate Parameters of one tensor
    return (model if dtype is None else cast_keeping_fp32_modules(model, dtype, keep_under=(torch.float16,))).eval()


def load_original_clip(
    path: str | Path, config: CLIPVisionConfig | None = None, dtype: torch.dtype | None = None
) -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    """The ViT-H/14 of Wan's ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` and its image processor.

    Wan feeds the I2V transformer ``visual(x, use_31_block=True)``: the output of all blocks but the
    last, before post_norm; that is HF's ``hidden_states[-2]`` (``one4d.encoding.encode_image``).
    ``post_norm`` and ``head`` (Wan never applies them) become ``post_layernorm`` and ``visual_projection``.
    Wan runs it in fp16 with its LayerNorms in float32; HF's LayerNorms run in the model dtype.
    """
    config = config or vit_huge_14_config()
    if config.hidden_act != "gelu":
        raise ValueError(f"Wan's ViT-H/14 uses exact GELU; the config has hidden_act={config.hidden_act!r}")
    state_dict = _read_checked(path, "visual.patch_embedding.weight", "Wan's open-clip XLM-RoBERTa ViT-H/14")
    with init_empty_weights():  # position_ids (a buffer) stays real
        model = CLIPVisionModelWithProjection(config)
    layout = "Wan2.1's XLMRobertaCLIP visual.* (wan/modules/clip.py) for this config"
    model = assign_checked(model, convert_clip_to_transformers(state_dict), path, layout)
    return (model if dtype is None else model.to(dtype)).eval(), wan_clip_image_processor(config.image_size)


def wan_clip_image_processor(image_size: int = 224) -> CLIPImageProcessor:
    """Wan's CLIP preprocessing: bicubic resize to a square (no crop, aspect not kept), OpenAI CLIP mean/std.

    Wan resizes the float [-1, 1] tensor with ``F.interpolate(bicubic)`` (no antialias, no clamp, no
    8-bit rounding); this processor resizes the uint8 image with PIL's bicubic, which antialiases when
    shrinking. diffusers' Wan I2V repos instead ship a shortest-edge resize plus a centre crop.
    """
    square = {"height": image_size, "width": image_size}
    return CLIPImageProcessor(
        size=square, crop_size=square, do_center_crop=False, resample=PILImageResampling.BICUBIC,
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD),
    )


def _read_checked(path: str | Path, key: str, component: str) -> dict[str, torch.Tensor]:
    state_dict = read_original_state_dict(path)
    if key not in state_dict:
        raise ValueError(f"{path} has no key {key}: not {component} (expected {_FUN_LAYOUT})")
    return state_dict


def is_original_layout_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds any encoder file of the original Wan / VideoX-Fun layout."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / name).is_file() for name in (VAE_FILE, T5_FILE, CLIP_FILE))


def load_original_components(
    folder: str | Path,
    dtype: torch.dtype | None = None,
    components: tuple[str, ...] = ORIGINAL_COMPONENTS,
    configs: dict | None = None,
) -> dict:
    """The named encoders of a Wan2.1-Fun download folder as shipped, keyed as diffusers keys them.

    The VAE is always float32; text and image encoders take ``dtype`` (their stored dtype when None).
    ``configs`` may replace the real sizes per component ("vae": dict, "text_encoder": UMT5Config,
    "image_encoder": CLIPVisionConfig), e.g. for tiny test folders. Only local files are read.
    """
    folder, configs = existing_path(folder), configs or {}
    unknown = [name for name in components if name not in ORIGINAL_COMPONENTS]
    if unknown:
        raise ValueError(f"unknown components {unknown}; expected some of {list(ORIGINAL_COMPONENTS)}")
    needs = {"vae": VAE_FILE, "text_encoder": T5_FILE, "tokenizer": TOKENIZER_FOLDER, "image_encoder": CLIP_FILE}
    absent = [needs[name] for name in components if name in needs and not (folder / needs[name]).exists()]
    if absent:
        raise ValueError(f"{folder} lacks {absent}: expected {_FUN_LAYOUT}")

    loaded = {}
    for name in components:
        if name == "vae":
            loaded[name] = load_original_vae(folder / VAE_FILE, configs.get("vae"))
        elif name == "text_encoder":
            loaded[name] = load_original_umt5(folder / T5_FILE, configs.get("text_encoder"), dtype)
        elif name == "tokenizer":
            loaded[name] = AutoTokenizer.from_pretrained(folder / TOKENIZER_FOLDER, local_files_only=True)
        elif name == "image_encoder":
            loaded[name], _ = load_original_clip(folder / CLIP_FILE, configs.get("image_encoder"), dtype)
        else:  # image_processor: a fixed preprocessing sized like the image encoder
            loaded[name] = wan_clip_image_processor((configs.get("image_encoder") or vit_huge_14_config()).image_size)
    return loaded
