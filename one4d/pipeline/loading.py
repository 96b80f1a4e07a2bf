"""Building a One4DPipeline from LOCAL weights (the paper's base, section 4.1), or the tiny preset with random weights.

* components: "tiny" (random stand-ins in the real classes, fixed seed) or a diffusers-format Wan I2V
  directory (vae/, text_encoder/, tokenizer/, image_encoder/, image_processor/).
* transformer: None (the directory's transformer/, or the tiny random base), a diffusers transformer
  folder, or VideoX-Fun's original Wan layout (safetensors shards with or without index, one file, or
  a .pth read with ``torch.load(weights_only=True)``), converted by diffusers' single-file code with
  the preset's LOCAL config (``one4d.weights.load_base_transformer``).
* state: a One4D trainable state (folder with trainable_state.safetensors + architecture.json), a
  trainer checkpoint holding one in ``trainable/``, a folder whose ``sampling.json`` names one (the
  shipped ``data/checkpoints/tiny``; ``one4d.sampling_file``), or a training run folder (its newest
  complete checkpoint). Its architecture.json decides the wrapper (architecture, LoRA rank, link
  layers); it is checked against the preset BEFORE any weight is read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from one4d.models import ARCHITECTURES, PRESETS, compile_repeated_blocks, load_trainable_state, preset_config
from one4d.models.state import ARCHITECTURE_FILE, STATE_FILE

from one4d.conditioning import UNOBSERVED_FILL
from one4d.sampling_file import read_sampling_file
from one4d.storage import torch_dtype

from .pipeline import One4DPipeline

logger = logging.getLogger(__name__)

SCHEDULERS = ("unipc", "euler")


def build_scheduler(name: str = "unipc", flow_shift: float = 3.0):
    """diffusers' flow-matching scheduler: UniPC (what Wan's diffusers repos ship) or Euler, with the flow shift."""
    if flow_shift <= 0:
        raise ValueError(f"flow shift must be positive, got {flow_shift}")
    if name == "unipc":
        from one4d.components import build_scheduler as build_unipc

        return build_unipc(flow_shift)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=flow_shift)
    raise ValueError(f"unknown scheduler {name!r}; expected one of {SCHEDULERS}")


def checkpoint_folder(checkpoint: str | Path) -> Path:
    """The checkpoint a ``checkpoint=`` value names: a training run folder means its newest complete checkpoint."""
    from one4d.training.checkpointing import latest_valid

    folder = Path(checkpoint)
    if not folder.exists():
        raise ValueError(f"checkpoint {folder} does not exist")
    if (folder / "checkpoints").is_dir() and not (folder / "trainable").is_dir():
        latest = latest_valid(folder / "checkpoints")
        if latest is None:
            raise ValueError(f"checkpoint {folder} is a training run without a complete checkpoint yet (checkpoints/ holds none)")
        folder = latest
    return folder


def resolve_state_folder(state: str | Path) -> Path:
    """The trainable-state folder of any ``checkpoint=`` value (see the module docstring); ValueError if none."""
    folder = checkpoint_folder(state)
    metadata = read_sampling_file(folder)
    if metadata is not None:
        folder = Path(metadata["state"])
    if (folder / "trainable" / STATE_FILE).is_file():
        folder = folder / "trainable"
    for name in (STATE_FILE, ARCHITECTURE_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"checkpoint {folder} is not a One4D trainable state: {name} is missing")
    return folder


def _preset_value(config: dict, key: str):
    return list(config[key]) if isinstance(config.get(key), tuple) else config.get(key)


def matching_presets(base: dict) -> list[str]:
    """The presets whose base shapes are all those a saved architecture.json records."""
    return [name for name, config in PRESETS.items() if all(_preset_value(config, key) == value for key, value in base.items())]


def read_state_architecture(state: str | Path, preset: str) -> dict:
    """The saved architecture.json, after checking that its base shapes are the preset's (no weights read)."""
    folder = resolve_state_folder(state)
    try:
        saved = json.loads((folder / ARCHITECTURE_FILE).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"checkpoint {folder}: {ARCHITECTURE_FILE} is not valid JSON ({error})") from None
    if saved.get("architecture") not in ARCHITECTURES:
        raise ValueError(f"checkpoint {folder}: unknown architecture {saved.get('architecture')!r}")
    config = preset_config(preset)
    for key, value in (saved.get("base") or {}).items():
        expected = _preset_value(config, key)
        if value != expected:
            matches = matching_presets(saved.get("base") or {})
            hint = (f"it matches preset {matches[0]!r}: pass model.preset={matches[0]}" if matches
                    else "no preset matches it (trained with model.base_overrides?)")
            raise ValueError(f"checkpoint {folder} is for another base model ({key}={value!r}, preset {preset!r} has {expected!r}); {hint}")
    return saved


def architecture_kwargs(saved: dict) -> dict:
    """Constructor arguments of the saved wrapper (DLC has link layers, the baselines do not)."""
    kwargs = {"lora_rank": int(saved["lora_rank"]), "lora_alpha": saved.get("lora_alpha")}
    if saved["architecture"] == "dlc":
        kwargs["link_layers"] = [int(i) for i in saved["link_layers"]]
    return kwargs


def load_pipeline(
    preset: str = "tiny",
    components: str = "tiny",
    transformer: str | None = None,
    state: str | None = None,
    architecture: str = "dlc",
    lora_rank: int = 8,
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
    scheduler: str = "unipc",
    flow_shift: float = 3.0,
    encoder_dtype: str | torch.dtype | None = None,
    condition_fill: float = UNOBSERVED_FILL,
    transformer_from_components: bool = False,
    step_cache_threshold: float = 0.0,
    compile_blocks: bool = False,
    batched_decode: bool = False,
) -> One4DPipeline:
    """A pipeline on the CPU (move it with ``.to`` or ``enable_model_cpu_offload``).

    The encoders come from :func:`one4d.encoding.load_encoders`, exactly as the trainer loads them: the VAE
    in fp32, UMT5 and CLIP in ``encoder_dtype`` (None: ``dtype``, as ``model.encoder_dtype`` defaults).
    Without ``state`` the wrapper is freshly initialised, which equals the base model per branch
    (zero LoRA B, zero links): useful for smoke tests and benchmarks, not for real pointmaps.
    ``seed`` fixes the tiny random weights.

    Acceleration (``configs/sample.yaml`` ``acceleration``, all off by default): ``step_cache_threshold`` > 0 skips
    the blocks on steps whose input changed little (:mod:`one4d.pipeline.step_cache`); ``compile_blocks`` compiles
    each base block with ``torch.compile`` (:func:`compile_repeated_blocks`); ``batched_decode`` decodes RGB and
    XYZ in one VAE call (twice the VAE's activation memory; equal to two calls within float rounding).
    """
    from one4d.encoding import load_encoders
    from one4d.weights import base_transformer_source, load_base_transformer

    dtype = torch_dtype(dtype)
    saved = read_state_architecture(state, preset) if state else None
    noise_scheduler = build_scheduler(scheduler, flow_shift)
    if components == "tiny" and preset != "tiny":
        raise ValueError(f"components=tiny only fits preset tiny, not {preset!r}; give a local diffusers Wan I2V directory")
    source = base_transformer_source(preset, transformer, components, transformer_from_components)
    encoders = load_encoders(components, dtype=torch_dtype(encoder_dtype or dtype), seed=seed)
    if source is None:  # the tiny random base, seeded like the tiny encoders
        from one4d.components import build_tiny_components
        from one4d.models import cast_keeping_fp32_modules

        base = cast_keeping_fp32_modules(build_tiny_components(seed)["transformer"], dtype)
    else:
        base = load_base_transformer(source, preset=preset, dtype=dtype)

    if saved is not None:
        model = ARCHITECTURES[saved["architecture"]](base, **architecture_kwargs(saved))
        load_trainable_state(model, resolve_state_folder(state))
    else:
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(ARCHITECTURES)}")
        logger.warning("no One4D checkpoint given: the %s wrapper is freshly initialised (pointmaps are meaningless)", architecture)
        model = ARCHITECTURES[architecture](base, lora_rank=lora_rank)
    if step_cache_threshold < 0:
        raise ValueError(f"acceleration.step_cache_threshold must be >= 0 (0 = off), got {step_cache_threshold}")
    pipeline = One4DPipeline(model.eval(), scheduler=noise_scheduler, condition_fill=condition_fill, **vars(encoders))
    pipeline.batched_decode = bool(batched_decode)
    if step_cache_threshold > 0:
        from .step_cache import enable_step_cache

        enable_step_cache(pipeline, step_cache_threshold)
    if compile_blocks:
        compile_repeated_blocks(pipeline.transformer)
    return pipeline
