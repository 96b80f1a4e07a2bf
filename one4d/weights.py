"""Loading the Wan2.1(-Fun) base weights from LOCAL paths only (the paper's base, section 4.1).

Two layouts load:

* a diffusers-format Wan I2V directory (transformer/, vae/, text_encoder/, tokenizer/, image_encoder/,
  image_processor/, model_index.json): ``load_diffusers_components``;
* VideoX-Fun's Wan2.1-Fun(-V1.1)-InP transformer in the ORIGINAL Wan key layout
  (``blocks.0.self_attn.q.weight``...): one safetensors file, a folder of safetensors shards (with or
  without an index), or a .pth/.pt/.bin read with ``torch.load(weights_only=True)``. Keys are renamed
  by diffusers' own single-file conversion and the model is built from a LOCAL config:
  ``load_original_wan_transformer``.

``load_base_transformer`` picks the right one from what is on disk. Nothing here touches a hub.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    UMT5EncoderModel,
)

from one4d.models.presets import cast_keeping_fp32_modules, preset_config

DIFFUSERS_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor")

# The class that loads each component of a Wan I2V directory. Where real directories differ in the
# class they record (the CLIP tower is saved as CLIPVisionModel or CLIPVisionModelWithProjection; the
# scheduler as UniPC or flow-match Euler), the recorded name picks among these and nothing else.
_COMPONENT_CLASSES = {
    "transformer": {"WanTransformer3DModel": WanTransformer3DModel},
    "vae": {"AutoencoderKLWan": AutoencoderKLWan},
    "text_encoder": {"UMT5EncoderModel": UMT5EncoderModel},
    "image_encoder": {
        "CLIPVisionModel": CLIPVisionModel,
        "CLIPVisionModelWithProjection": CLIPVisionModelWithProjection,
    },
    "scheduler": {
        "UniPCMultistepScheduler": UniPCMultistepScheduler,
        "FlowMatchEulerDiscreteScheduler": FlowMatchEulerDiscreteScheduler,
    },
}
_MODEL_COMPONENTS = ("transformer", "vae", "text_encoder", "image_encoder")

# Index files of a sharded safetensors checkpoint, diffusers' name first.
_INDEX_NAMES = ("diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json")
_PICKLE_SUFFIXES = (".pth", ".pt", ".bin")


def load_diffusers_components(
    folder: str | Path,
    dtype: torch.dtype | None = None,
    components: tuple[str, ...] = DIFFUSERS_COMPONENTS,
) -> dict:
    """The named components of a diffusers-format Wan I2V directory, each loaded from its subfolder.

    ``dtype`` applies to the models (transformer, vae, text_encoder, image_encoder); tokenizer,
    image processor and scheduler have none. Only local files are read.
    """
    folder = existing_path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"{folder} is not a diffusers pipeline directory: it has no model_index.json")
    model_index = json.loads(index_path.read_text())
    allowed = set(DIFFUSERS_COMPONENTS) | {"scheduler"}
    unknown = [name for name in components if name not in allowed]
    if unknown:
        raise ValueError(f"unknown components {unknown}; expected some of {sorted(allowed)}")
    missing = [name for name in components if not (folder / name).is_dir()]
    if missing:
        raise ValueError(f"{folder} lacks the component folders {missing}")

    loaded = {}
    for name in components:
        subfolder = folder / name
        if name == "tokenizer":
            loaded[name] = AutoTokenizer.from_pretrained(subfolder, local_files_only=True)
        elif name == "image_processor":
            loaded[name] = CLIPImageProcessor.from_pretrained(subfolder, local_files_only=True)
        else:
            cls = _recorded_class(model_index, name)
            kwargs = {}
            if dtype is not None and name in _MODEL_COMPONENTS:
                # diffusers names the argument torch_dtype, transformers 5 names it dtype.
                kwargs["torch_dtype" if cls.__module__.startswith("diffusers") else "dtype"] = dtype
            loaded[name] = cls.from_pretrained(subfolder, local_files_only=True, **kwargs)
    return loaded


def _recorded_class(model_index: dict, name: str) -> type:
    """The class model_index.json records for a component, if it is one this project knows how to load."""
    choices = _COMPONENT_CLASSES[name]
    recorded = model_index.get(name)
    class_name = recorded[1] if isinstance(recorded, list) and len(recorded) == 2 else None
    if class_name is None:
        # Not recorded (e.g. an optional component saved as null): fall back to the standard class.
        return next(iter(choices.values()))
    if class_name not in choices:
        raise ValueError(f"model_index.json records {name} as {class_name!r}; expected one of {sorted(choices)}")
    return choices[class_name]


def read_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The raw tensors of a checkpoint: a .safetensors file, a folder of shards, or a .pth/.pt/.bin.

    A folder is read through its index (``diffusion_pytorch_model.safetensors.index.json`` or
    ``model.safetensors.index.json``) when it has one, otherwise every ``*.safetensors`` in it.
    Pickled files are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.
    """
    path = existing_path(path)
    if path.is_dir():
        return _read_safetensors_folder(path)
    if path.suffix == ".safetensors":
        return load_file(path, device="cpu")
    if path.suffix in _PICKLE_SUFFIXES:
        return _read_pickle(path)
    raise ValueError(f"unsupported checkpoint file {path}: expected .safetensors, .pth, .pt or .bin")


def _read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    index = next((folder / name for name in _INDEX_NAMES if (folder / name).is_file()), None)
    if index is not None:
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no weight_map")
        shards = [folder / name for name in dict.fromkeys(weight_map.values())]
        absent = [shard.name for shard in shards if not shard.is_file()]
        if absent:
            raise ValueError(f"{index} names shards that are not in {folder}: {absent}")
    else:
        shards = sorted(folder.glob("*.safetensors"))
        if not shards:
            raise ValueError(f"{folder} holds no .safetensors files and no safetensors index")
    state_dict = {}
    for shard in shards:
        state_dict.update(load_file(shard, device="cpu"))
    if index is not None:
        lacking = sorted(set(weight_map) - set(state_dict))
        if lacking:
            raise ValueError(f"{index} lists tensors that its shards lack, e.g. {lacking[0]!r}")
    return state_dict


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        # torch's message is a paragraph; keep the line that names the blocked object.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "unpickling failed")
        raise ValueError(
            f"refusing to load {path}: it holds more than tensors and torch.load(weights_only=True) "
            f"rejects it ({reason}); convert it to safetensors where you trust its source"
        ) from None
    # VideoX-Fun and many trainers save {"state_dict": {...}}; unwrap that one level.
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return checkpoint


def load_original_wan_transformer(
    path: str | Path, config: dict | str | Path, dtype: torch.dtype | None = None
) -> WanTransformer3DModel:
    """A ``WanTransformer3DModel`` from a checkpoint in the original Wan key layout (e.g. VideoX-Fun's).

    ``config`` is a WanTransformer3DModel config: a dict (``preset_config(...)``) or a LOCAL folder or
    config.json file; never a hub id. Keys are renamed with diffusers' single-file conversion for Wan;
    the model is built with empty weights and takes the checkpoint tensors by assignment, so memory
    holds one copy. ``dtype=None`` keeps the stored dtypes; otherwise cast as ``from_pretrained(torch_dtype=)``
    would (norms, time embedder and modulation stay fp32). Every key must match: missing or unexpected
    keys and mismatching shapes are errors that name them.
    """
    config = _transformer_config(config)
    state_dict = convert_wan_transformer_to_diffusers(read_original_state_dict(path))
    with init_empty_weights():  # parameters on meta; the RoPE buffers (not in checkpoints) stay real
        model = WanTransformer3DModel.from_config(config)

    assign_checked(model, state_dict, path, "the transformer of this preset's config: pick the preset of this checkpoint")
    del state_dict  # the model now holds the only reference, so a cast below replaces tensors one by one
    if dtype is not None:
        cast_keeping_fp32_modules(model, dtype)
    return model.eval()


def _transformer_config(config: dict | str | Path) -> dict:
    if isinstance(config, dict):
        return config
    path = existing_path(config)
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise ValueError(f"no transformer config at {path}: expected a config.json file or a folder holding one")
    return json.loads(config_file.read_text())


def load_base_transformer(
    source: str | Path, preset: str | None = None, dtype: torch.dtype | None = None
) -> WanTransformer3DModel:
    """The base Wan transformer from whichever local layout ``source`` is in.

    * a diffusers transformer folder (config.json of a WanTransformer3DModel);
    * a diffusers pipeline folder (has transformer/);
    * the original Wan layout (a checkpoint file or a folder of safetensors shards, as VideoX-Fun
      ships Wan2.1-Fun; its own config.json, if any, is not a diffusers one): needs ``preset`` for the
      config. With a diffusers layout, ``preset`` (if given) is checked against the stored config.
    """
    source = existing_path(source)
    if source.is_dir() and (source / "transformer").is_dir():
        source = source / "transformer"
    if source.is_dir() and _is_diffusers_transformer_folder(source):
        kwargs = {} if dtype is None else {"torch_dtype": dtype}
        model = WanTransformer3DModel.from_pretrained(source, local_files_only=True, **kwargs)
        if preset is not None:
            _check_config_matches_preset(dict(model.config), preset, source)
        return model.eval()
    if source.is_dir() and not any(source.glob("*.safetensors")):
        raise ValueError(
            f"{source} is neither a diffusers folder (config.json of a WanTransformer3DModel, or transformer/) "
            f"nor a folder of original-layout safetensors shards"
        )
    if preset is None:
        raise ValueError(f"{source} is in the original Wan layout: pass preset= to say which config it has")
    return load_original_wan_transformer(source, preset_config(preset), dtype=dtype)


# Presets whose base is a Wan2.1-Fun InP model. Wan2.1-I2V downloads (diffusers layout, or Wan's own with the same
# file names as a Fun download) hold a transformer of the same shapes that is the plain I2V model, and nothing in a
# folder tells the two apart: so these presets never take a components folder's transformer without being asked.
FUN_PRESETS = ("wan2.1-fun-14b-inp", "wan2.1-fun-1.3b-inp")


def base_transformer_source(preset: str, transformer: str | None, components: str | None, from_components: bool = False) -> str | None:
    """Where the base transformer comes from: ``transformer``, else the components folder, else None (random, tiny only).

    For the Fun presets the components folder's transformer is taken only with ``from_components``
    (``model.transformer_from_components=true``); pass the Fun folder as ``model.transformer`` instead,
    which may be the same folder as ``model.components`` (the Fun download as shipped holds both).
    """
    if not components or (components == "tiny" and preset in FUN_PRESETS):
        raise ValueError(f"preset {preset} needs model.components=<the Wan2.1-Fun folder as downloaded, or a diffusers "
                         f"Wan2.1 I2V directory> (README \"Weights\"); the tiny random components fit only the tiny presets")
    if transformer:
        return transformer
    if components == "tiny":
        return None
    if preset in FUN_PRESETS and not from_components:
        raise ValueError(
            f"preset {preset} needs model.transformer=<your Wan2.1-Fun-V1.1-InP folder> (it may be model.components itself): "
            f"the transformer of {components} is taken only with model.transformer_from_components=true, since a "
            f"Wan2.1-I2V download's is the plain I2V model with the same shapes"
        )
    return components


def _is_diffusers_transformer_folder(folder: Path) -> bool:
    config_file = folder / "config.json"
    if not config_file.is_file():
        return False
    return json.loads(config_file.read_text()).get("_class_name") == WanTransformer3DModel.__name__


def _check_config_matches_preset(config: dict, preset: str, source: Path) -> None:
    for key, value in preset_config(preset).items():
        stored = config.get(key)
        if isinstance(value, tuple) and isinstance(stored, list):
            stored = tuple(stored)
        if stored != value:
            raise ValueError(f"{source} has {key}={stored!r} but preset {preset!r} has {key}={value!r}")


def assign_checked(model: torch.nn.Module, state_dict: dict, path: str | Path, expected: str) -> torch.nn.Module:
    """Give a model built on meta the file's tensors (no copy), after checking every key and shape.

    Missing or unexpected keys and mismatching shapes are one-line errors naming ``path``, a key and the
    ``expected`` layout (keys are compared after conversion to the diffusers / transformers names).
    """
    wanted = model.state_dict()
    for key, tensor in wanted.items():
        if key in state_dict and state_dict[key].shape != tensor.shape:
            raise ValueError(f"{path} does not fit: {key} is {tuple(state_dict[key].shape)} in the file but "
                             f"{tuple(tensor.shape)} in the model (expected {expected})")
    missing = [key for key in wanted if key not in state_dict]
    unexpected = [key for key in state_dict if key not in wanted]
    if missing or unexpected:
        raise ValueError(f"{path} is not {expected}: missing keys {some_keys(missing)}, unexpected keys "
                         f"{some_keys(unexpected)} (names after conversion)")
    model.load_state_dict(state_dict, assign=True)
    return model


def existing_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no such file or folder: {path}")
    return path


def some_keys(keys: list[str], limit: int = 5) -> str:
    """At most ``limit`` keys for an error message, with a count of the rest."""
    shown = ", ".join(keys[:limit]) or "none"
    return shown if len(keys) <= limit else f"{shown} (+{len(keys) - limit} more)"
