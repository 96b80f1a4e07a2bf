"""Tiny random pipeline components in the REAL classes, and a writer of a diffusers-format Wan I2V directory.

No machine here can download weights, so tests and the CPU demo use these instead of the real
Wan2.1-Fun components. Each builder returns the class the real checkpoint uses (``AutoencoderKLWan``,
``UMT5EncoderModel``, a T5 tokenizer, ``CLIPVisionModelWithProjection`` + ``CLIPImageProcessor``) with a
config small enough to run in milliseconds, and sized to match the ``tiny`` transformer preset
(text_dim 32, image_dim 32). The code paths that consume them are the ones the 14B model takes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    T5TokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

from one4d.models.presets import PRESETS, TEXT_TOKENS, build_base_transformer

# Sizes of the tiny components per transformer preset; only "tiny" has random stand-ins.
_TINY = {
    "tiny": dict(text_dim=PRESETS["tiny"]["text_dim"], image_dim=PRESETS["tiny"]["image_dim"], image_size=32),
}

# A small English vocabulary for the tiny tokenizer: words a video caption uses. Letters are added
# separately so that any lowercase word still tokenizes (into letters) instead of becoming <unk>.
_WORDS = """
a an the this that these those it its they them their he she his her we you i of in on at to from by
with without into onto over under above below between behind near far through across along around
and or but not no yes is are was were be been being has have had do does did can will would should
may might must very more most less few many much some any all each every other another same new old
one two three four five six seven eight nine ten first last next then now still again also only just
up down left right forward backward front back top bottom side middle center inside outside here there
slowly quickly gently fast slow small large big tiny huge tall short long wide narrow high low bright
dark light heavy soft hard wet dry hot cold warm cool clean dirty empty full open closed quiet loud
red orange yellow green blue purple pink brown black white gray grey golden silver colorful
man woman boy girl child children baby person people crowd family friend player dancer driver rider
dog cat bird horse cow sheep fish duck lion tiger bear elephant monkey rabbit deer animal animals
car bus truck train bicycle bike boat ship plane airplane motorcycle wheel road street highway bridge
house building room kitchen door window wall floor roof table chair bed sofa lamp shelf book cup
bottle plate bowl box bag ball toy phone camera screen computer clock picture painting mirror
tree trees flower flowers grass leaf leaves forest garden park field farm mountain mountains hill
river lake sea ocean beach wave waves water rain snow ice cloud clouds sky sun moon star stars wind
fire smoke sand rock rocks stone city town village market shop store office school church tower
walks walking runs running jumps jumping dances dancing sits sitting stands standing moves moving
turns turning rotates rotating flies flying swims swimming drives driving rides riding plays playing
looks looking holds holding carries carrying throws throwing catches catching opens opening falls
falling rises rising flows flowing spins spinning waves waving smiles smiling talks talking eats
eating drinks drinking climbs climbing pushes pushing pulls pulling follows following passes passing
camera pans zooms tracks orbits tilts shot view scene video clip frame close wide aerial static
moving handheld slow motion time lapse background foreground detail details texture surface shadow
shadows reflection lights night day morning evening sunset sunrise summer winter autumn spring
indoor outdoor urban natural realistic cinematic beautiful quality high resolution sharp blurry
""".split()


def _check_preset(preset: str) -> dict:
    if preset not in _TINY:
        raise ValueError(f"no tiny components for preset {preset!r}; expected one of {sorted(_TINY)}")
    return _TINY[preset]


def build_vae(preset: str = "tiny") -> AutoencoderKLWan:
    """A tiny random ``AutoencoderKLWan`` with Wan's compression: z_dim 16, time x4 (4k+1 -> k+1), space x8."""
    _check_preset(preset)
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],  # three spatial downsamples: x8
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],  # two temporal downsamples: x4
    )


def build_text_encoder(preset: str = "tiny") -> UMT5EncoderModel:
    """A tiny random ``UMT5EncoderModel`` whose d_model equals the transformer's text_dim."""
    sizes = _check_preset(preset)
    config = UMT5Config(
        vocab_size=len(build_tokenizer()),
        d_model=sizes["text_dim"],
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return UMT5EncoderModel(config)


def build_tokenizer() -> T5TokenizerFast:
    """A T5 (Unigram) tokenizer over a few hundred English words, built locally: no download.

    Ids follow T5: <pad>=0, </s>=1, <unk>=2. It saves and loads with ``save_pretrained`` /
    ``from_pretrained`` like the real umt5-xxl tokenizer, and the pipeline pads it to 512 tokens.
    """
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [(letter, -8.0) for letter in letters]
    vocab += [("\u2581" + letter, -8.0) for letter in letters]
    vocab += [("\u2581" + word, -2.0) for word in dict.fromkeys(_WORDS) if len(word) > 1]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=TEXT_TOKENS)


def build_image_encoder(preset: str = "tiny") -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    """A tiny random CLIP vision tower and its processor.

    The pipeline feeds the penultimate hidden states (not the projection) to the transformer, so
    hidden_size equals the transformer's image_dim. 32x32 images in 8x8 patches give 17 tokens
    (the real ViT-H/14 at 224 gives 257).
    """
    sizes = _check_preset(preset)
    size = sizes["image_size"]
    config = CLIPVisionConfig(
        hidden_size=sizes["image_dim"],
        intermediate_size=64,
        projection_dim=sizes["image_dim"],
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=size,
        patch_size=8,
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
    )
    return CLIPVisionModelWithProjection(config), processor


def build_scheduler(flow_shift: float = 3.0) -> UniPCMultistepScheduler:
    """The scheduler Wan's diffusers I2V repos ship: UniPC on flow-matching sigmas (shift 3.0 at 480p)."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift)


def write_diffusers_directory(
    folder: str | Path,
    transformer: WanTransformer3DModel,
    vae: AutoencoderKLWan,
    text_encoder: UMT5EncoderModel,
    tokenizer: T5TokenizerFast,
    image_encoder: CLIPVisionModelWithProjection,
    image_processor: CLIPImageProcessor,
    scheduler: UniPCMultistepScheduler | None = None,
) -> Path:
    """Write the standard diffusers Wan I2V layout (one subfolder per component + model_index.json).

    It is exactly what ``WanImageToVideoPipeline.save_pretrained`` writes, so the real
    Wan2.1 I2V diffusers directories and this one load through the same code.
    """
    pipeline = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler or build_scheduler(),
        image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=transformer,
    )
    folder = Path(folder)
    pipeline.save_pretrained(folder)
    return folder


def build_tiny_components(seed: int = 0) -> dict:
    """All tiny components of a Wan I2V pipeline with random weights (fixed seed), keyed as diffusers keys them."""
    torch.manual_seed(seed)
    image_encoder, image_processor = build_image_encoder("tiny")
    return dict(
        transformer=build_base_transformer("tiny"),
        vae=build_vae("tiny"),
        text_encoder=build_text_encoder("tiny"),
        tokenizer=build_tokenizer(),
        image_encoder=image_encoder,
        image_processor=image_processor,
    )


def build_tiny_directory(folder: str | Path, seed: int = 0) -> Path:
    """Write a complete tiny diffusers-format Wan I2V directory with random weights (fixed seed)."""
    return write_diffusers_directory(folder, **build_tiny_components(seed))
