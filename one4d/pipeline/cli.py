"""What ``scripts/sample.py`` runs: check everything the user gave, THEN load models, sample, write ``out/``.

Bad input (a missing or unreadable file, a corrupt video, an unknown task, steps <= 0, a negative CFG,
a checkpoint of another preset, an output folder that cannot be written...) is found before any
model is loaded and reported as one line on stderr with exit code 2. Output goes to a temporary
folder that is renamed to ``out`` only when complete.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from one4d.conditioning import TASKS

from one4d.storage import check_precision, storage_dtype, torch_dtype

from .inputs import prepare_conditions, read_input
from .loading import SCHEDULERS, read_state_architecture
from .outputs import discard, prepare_output_folder, publish, write_outputs

BAD_INPUT = 2


class UnusableWeights(ValueError):
    """A weight file found only while loading (a .pth of another component, keys of another model)."""


def check_settings(cfg: DictConfig) -> None:
    """Plain value checks, one ValueError per problem."""
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; expected one of {', '.join(TASKS)}")
    if int(cfg.steps) <= 0:
        raise ValueError(f"steps must be positive, got {cfg.steps}")
    if float(cfg.cfg) < 0:
        raise ValueError(f"cfg (guidance scale) must be >= 0, got {cfg.cfg}")
    if cfg.task == "sparse" and cfg.frames is None and not 0 < float(cfg.sparsity) <= 1:
        raise ValueError(f"sparsity must be in (0, 1], got {cfg.sparsity}")
    if cfg.scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; expected one of {', '.join(SCHEDULERS)}")
    if float(cfg.shift) <= 0:
        raise ValueError(f"shift must be positive, got {cfg.shift}")
    if float(cfg.pointmap_scale) <= 0 or len(cfg.pointmap_centre) != 3:
        raise ValueError("pointmap_scale must be positive and pointmap_centre three numbers")
    if int(cfg.ply_stride) < 0:
        raise ValueError(f"ply_stride must be >= 0, got {cfg.ply_stride}")
    if not isinstance(cfg.prompt, str) or not isinstance(cfg.negative_prompt, (str, type(None))):
        raise ValueError("prompt and negative_prompt must be text (quote them on the command line)")
    torch_dtype(cfg.model.dtype)
    if cfg.model.get("base_overrides"):
        raise ValueError("model.base_overrides are not supported when sampling: a checkpoint fixes the base shapes")
    for name in ("transformer", "components"):
        value = cfg.model.get(name)
        if value and value != "tiny" and not Path(value).exists():
            raise ValueError(f"model.{name} {value} does not exist (weights are read from local paths only)")
    if cfg.model.components == "tiny" and cfg.model.preset != "tiny":
        raise ValueError(f"model.components=tiny only fits the tiny preset; give a local diffusers Wan I2V directory for {cfg.model.preset}")
    from one4d.weights import base_transformer_source

    base_transformer_source(cfg.model.preset, cfg.model.get("transformer"), cfg.model.components,
                            bool(cfg.model.get("transformer_from_components", False)))


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} requested but no CUDA device is available")
    return device


def sample(cfg: DictConfig) -> int:
    """The whole run; returns the exit code (2 for bad input, with one line on stderr)."""
    temporary = None
    try:
        check_settings(cfg)
        device = resolve_device(cfg.device)
        check_precision(torch_dtype(cfg.model.dtype), device, storage_dtype(cfg.model.get("base_storage_dtype")))
        source = read_input(cfg.input)
        frames = None if cfg.frames is None else [int(i) for i in cfg.frames]
        conditions = prepare_conditions(
            cfg.task, source, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
            max_area=int(cfg.max_area), sparsity=float(cfg.sparsity), frames=frames,
        )
        if cfg.fps is not None:
            conditions.fps = float(cfg.fps)
        if cfg.checkpoint:
            read_state_architecture(cfg.checkpoint, cfg.model.preset)
        temporary = prepare_output_folder(cfg.out)
    except (ValueError, OmegaConfBaseException) as error:
        discard(temporary)
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return BAD_INPUT

    try:
        summary = run_sampling(cfg, conditions, device, temporary)
        out = publish(temporary, cfg.out)
    except UnusableWeights as error:  # a weight file that is not what it should be: bad input too
        discard(temporary)
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return BAD_INPUT
    except BaseException:
        discard(temporary)
        raise
    print(f"wrote {out} ({summary['num_frames']} frames at {summary['height']}x{summary['width']}, task {summary['task']})")
    return 0


def run_sampling(cfg: DictConfig, conditions, device, folder: Path) -> dict:
    """Load the pipeline, sample once and write every output into ``folder``."""
    import torch

    from .loading import load_pipeline

    timings = {}
    start = time.perf_counter()
    model = cfg.model
    try:
        pipe = load_pipeline(
            preset=model.preset, components=model.components, transformer=model.get("transformer"), state=cfg.checkpoint,
            architecture=model.architecture, lora_rank=int(model.lora_rank), dtype=model.dtype,
            seed=int(model.get("components_seed", 0)), scheduler=cfg.scheduler, flow_shift=float(cfg.shift),
            encoder_dtype=model.get("encoder_dtype"), condition_fill=float(model.get("condition_fill", 0.0)),
            transformer_from_components=bool(model.get("transformer_from_components", False)),
        )
    except ValueError as error:
        raise UnusableWeights(str(error)) from None
    if model.get("attention_backend"):
        pipe.transformer.set_attention_backend(model.attention_backend)
    storage = storage_dtype(model.get("base_storage_dtype"))
    if storage is not None:  # cast on the CPU, so only fp8 weights ever reach the GPU
        from one4d.storage import enable_fp8_base_storage

        enable_fp8_base_storage(pipe.transformer, storage)
    if cfg.memory.get("group_offload"):
        pipe.enable_group_offload(device)
    elif cfg.memory.cpu_offload:
        pipe.enable_model_cpu_offload(device)
    else:
        pipe.to(device)
    if cfg.memory.vae_tiling:
        pipe.enable_vae_tiling()
    if cfg.memory.vae_slicing:
        pipe.enable_vae_slicing()
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    postopt = {"iterations": int(cfg.postopt.iterations), "subsample": int(cfg.postopt.subsample), "window": cfg.postopt.window}
    negative = {} if cfg.negative_prompt is None else {"negative_prompt": cfg.negative_prompt}  # None: the pipeline's (Wan's)
    output = pipe(
        conditions.images, conditions.observed, conditions.num_frames, prompt=cfg.prompt, **negative,
        num_inference_steps=int(cfg.steps), guidance_scale=float(cfg.cfg), generator=torch.Generator().manual_seed(int(cfg.seed)),
        recover_cameras=bool(cfg.postopt.enabled), pointmap_centre=list(cfg.pointmap_centre),
        pointmap_scale=float(cfg.pointmap_scale), postopt_kwargs=postopt, progress=bool(cfg.progress),
    )
    timings["sample"] = time.perf_counter() - start
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings["input"] = str(Path(cfg.input).absolute())
    return write_outputs(folder, output, conditions, settings, ply_stride=int(cfg.ply_stride), timings=timings)
