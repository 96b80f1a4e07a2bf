"""What ``scripts/sample.py`` runs: check everything the user gave, THEN load models, sample, write ``out/``.

``checkpoint=<folder>`` with a ``sampling.json`` (every trainer checkpoint, the shipped tiny model) supplies
its model preset and weights, its training size and its recommended sampler settings for every key the
command line leaves out (:func:`apply_checkpoint_settings`); a request far from that training size is
warned about, with the estimated time, before anything is loaded. CPU threads follow ``one4d.runtime``.

Bad input (a missing or unreadable file, a corrupt video, an unknown task, steps <= 0, a negative CFG,
a checkpoint of another preset, an output folder that cannot be written...) is found before any
model is loaded and reported as one line on stderr with exit code 2. Output goes to a temporary
folder that is renamed to ``out`` only when complete.

Across processes (``torchrun --nproc_per_node N scripts/sample.py ...``): ``parallel.cfg`` / ``parallel.ulysses`` /
``parallel.ring`` ranks sample one clip together (``one4d.parallel``, applied to the loaded pipeline from outside),
and ``inputs=FILE`` (``one4d.pipeline.jobs``) shares many clips out over the data-parallel groups this leaves. The
layout is checked before anything loads; only the first rank of a group decodes and writes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from one4d.conditioning import TASKS
from one4d.runtime import configure_cpu_threads, python_command, say
from one4d.sampling_file import read_sampling_file
from one4d.storage import check_precision, storage_dtype, torch_dtype

from .inputs import default_frame_count, prepare_conditions, print_warnings, read_input
from .jobs import read_jobs, share
from .loading import SCHEDULERS, checkpoint_folder, read_state_architecture
from .outputs import discard, prepare_output_folder, publish, write_outputs

BAD_INPUT = 2
FAR = 2.0  # a frame count or side this many times the training one (or a fraction as small) is far from it


class UnusableWeights(ValueError):
    """A weight file found only while loading (a .pth of another component, keys of another model)."""


def check_settings(cfg: DictConfig) -> None:
    """Plain value checks, one ValueError per problem."""
    for key in ("num_frames", "height", "width", "steps"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{key} must be a whole number{'' if key == 'steps' else ' or null'}, got {value!r}")
    if cfg.num_frames is not None and int(cfg.num_frames) < 5 and cfg.postopt.enabled:
        raise ValueError(f"num_frames={cfg.num_frames}: post-optimisation needs a video (4k + 1 >= 5 frames); "
                         f"use num_frames=5 or more, or postopt.enabled=false")
    if not cfg.get("inputs") and not cfg.input:
        raise ValueError("input=... is required (an image, a video or a frame folder), or inputs=FILE for a jobs file")
    if cfg.get("inputs") and cfg.input:
        raise ValueError("give input= (one clip) or inputs= (a jobs file), not both")
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


def given_keys(overrides) -> list[str]:
    """The config keys a list of Hydra command-line overrides sets (``model=...`` sets every ``model.*`` key)."""
    keys = []
    for override in overrides or ():
        key = override.split("=", 1)[0].lstrip("+~").strip()
        if key:
            keys.append(key)
    return keys


def _is_given(key: str, given: list[str]) -> bool:
    return any(key == name or key.startswith(name + ".") for name in given)


def apply_checkpoint_settings(cfg: DictConfig, given: list[str]) -> dict | None:
    """Fill ``cfg`` from the checkpoint's ``sampling.json`` for every key not in ``given``; returns its record.

    Model keys (preset, components, ...) and sampler keys (steps, cfg, shift, scheduler, negative_prompt)
    are taken as they are; the training size becomes ``height`` / ``width`` unless the size was asked for
    in any way (height, width or max_area), and caps ``num_frames`` (see :func:`checkpoint_frame_count`).
    """
    if not cfg.checkpoint:
        return None
    metadata = read_sampling_file(checkpoint_folder(cfg.checkpoint))
    if metadata is None:
        return None
    applied = {}
    for section, prefix in (("model", "model."), ("sampler", "")):
        for key, value in metadata[section].items():
            if not _is_given(prefix + key, given):
                OmegaConf.update(cfg, prefix + key, value, merge=False)
                if value is not None:
                    applied[prefix + key] = value
    trained = metadata["trained_at"]
    if {"height", "width"} <= set(trained) and not any(_is_given(key, given) for key in ("height", "width", "max_area")):
        cfg.height, cfg.width = trained["height"], trained["width"]
        applied["size"] = f"{trained['height']}x{trained['width']}"
    if "num_frames" in trained and not _is_given("num_frames", given):
        applied["num_frames"] = f"<= {trained['num_frames']}"
    shown = ", ".join(f"{key}={value!r}" if isinstance(value, str) and not value else f"{key}={value}" for key, value in applied.items())
    if int(os.environ.get("RANK", 0)) == 0:  # once, not once per process
        print(f"checkpoint {cfg.checkpoint}: {shown} (from its sampling.json; command-line values win)")
    return metadata


def checkpoint_frame_count(task: str, available: int, trained: int) -> int:
    """The frame count at the checkpoint's training length: a single image gets ``trained`` frames, a video the
    largest 4k + 1 <= min(its frames, ``trained``) (the input rule with the training length as the maximum)."""
    return trained if task == "single" else default_frame_count(available, max_frames=trained)


def warn_if_far_from_training(cfg: DictConfig, conditions, metadata: dict | None, device) -> str | None:
    """One warning line (stderr) with the estimated time when the fitted size is far from the training size."""
    trained = (metadata or {}).get("trained_at") or {}
    if set(trained) != {"num_frames", "height", "width"}:
        return None
    requested = {"num_frames": conditions.num_frames, "height": conditions.height, "width": conditions.width}
    if all(max(requested[k] / trained[k], trained[k] / requested[k]) < FAR for k in requested):
        return None
    from one4d.models import preset_config

    from .cost import estimate_step_seconds, format_duration, latent_tokens

    config = preset_config(cfg.model.preset)
    step = estimate_step_seconds(config, *requested.values(), guidance=float(cfg.cfg) > 1, device=device,
                                 dtype=torch_dtype(cfg.model.dtype))
    ratio = latent_tokens(config, *requested.values()) / latent_tokens(config, *trained.values())
    line = (f"warning: {requested['num_frames']} frames at {requested['height']}x{requested['width']} is far from the size "
            f"checkpoint {cfg.checkpoint} was trained at, {trained['num_frames']} frames at {trained['height']}x{trained['width']} "
            f"({ratio:.3g}x its tokens): estimated {format_duration(step)} a step on {device.type}, about "
            f"{format_duration(step * int(cfg.steps))} for {int(cfg.steps)} steps; num_frames={trained['num_frames']} "
            f"height={trained['height']} width={trained['width']} samples at its training size")
    say(line)
    return line


def resolve_device(name: str):
    """"auto": CUDA when present, else the CPU; a CUDA device asked for where there is none is one line."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} requested but no CUDA device is available")
    return device


def acceleration_options(cfg: DictConfig) -> dict:
    """``load_pipeline``'s keyword arguments from ``acceleration.*``; ValueError for a value that cannot work."""
    acceleration = cfg.get("acceleration") or {}
    options = {"step_cache_threshold": float(acceleration.get("step_cache_threshold") or 0.0),
               "compile_blocks": bool(acceleration.get("compile", False)),
               "batched_decode": bool(acceleration.get("batched_decode", False))}
    if options["step_cache_threshold"] < 0:
        raise ValueError(f"acceleration.step_cache_threshold must be >= 0 (0 = off), got {options['step_cache_threshold']}")
    parallel = cfg.get("parallel") or {}
    if options["step_cache_threshold"] > 0 and max(int(parallel.get("ulysses", 1)), int(parallel.get("ring", 1))) > 1:
        raise ValueError("acceleration.step_cache_threshold decides on whole token sequences; with parallel.ulysses/ring > 1 "
                         "the ranks would decide apart: use parallel.cfg, or step_cache_threshold=0")
    return options


def check_parallel(cfg: DictConfig):
    """The parallel layout of ``parallel.*`` in the world torchrun started, checked against the preset (no weights read)."""
    from one4d.models import preset_config
    from one4d.parallel import check_layout, layout_from_config

    acceleration_options(cfg)  # before any model loads
    layout = layout_from_config(cfg.get("parallel"))
    check_layout(layout, heads=int(preset_config(cfg.model.preset)["num_attention_heads"]), backend=cfg.model.get("attention_backend"),
                 jobs_file=bool(cfg.get("inputs")), guidance=float(cfg.cfg) != 1.0)
    return layout


def check_architecture(cfg: DictConfig, layout) -> None:
    """The wrapper that will load (the checkpoint's architecture.json decides, else ``model.architecture``) against
    what the layout and the step cache need; before any model loads (after it, the error came with a traceback)."""
    architecture = read_state_architecture(cfg.checkpoint, cfg.model.preset)["architecture"] if cfg.checkpoint else cfg.model.architecture
    if layout.sequence_parallel > 1 and architecture == "spatial_concat":
        raise ValueError("sequence parallel splits each branch's tokens; spatial_concat mixes both in one grid, use parallel.cfg")
    if acceleration_options(cfg)["step_cache_threshold"] > 0 and architecture != "dlc":
        raise ValueError(f"step caching needs the DLC wrapper (architecture dlc), not {architecture}; "
                         "set acceleration.step_cache_threshold=0")


def prepare_job(cfg: DictConfig, metadata: dict | None, layout):
    """Read one clip's input (``cfg.input``) and fit it to the model; ValueError for bad input. May set ``cfg.num_frames``."""
    from one4d.models import preset_config
    from one4d.parallel import check_token_count

    from .cost import latent_tokens, vae_spatial_factor

    source = read_input(cfg.input)
    if cfg.num_frames is None and "num_frames" in ((metadata or {}).get("trained_at") or {}):
        cfg.num_frames = checkpoint_frame_count(cfg.task, len(source.frames), metadata["trained_at"]["num_frames"])
    frames = None if cfg.frames is None else [int(i) for i in cfg.frames]
    conditions = prepare_conditions(
        cfg.task, source, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
        max_area=int(cfg.max_area), sparsity=float(cfg.sparsity), frames=frames, prompt=cfg.prompt,
    )
    if cfg.fps is not None:
        conditions.fps = float(cfg.fps)
    tokens = latent_tokens(preset_config(cfg.model.preset), conditions.num_frames, conditions.height, conditions.width,
                           vae_spatial_factor(cfg.model.components))
    check_token_count(layout, tokens, cfg.model.get("attention_backend"))
    return conditions


def _error(error: BaseException) -> int:
    """One line on stderr (from the first rank only: every rank meets the same bad input); the exit code."""
    if int(os.environ.get("RANK", 0)) == 0:
        say(f"error: {str(error).splitlines()[0]}")
    return BAD_INPUT


def sample(cfg: DictConfig, overrides: list[str] | None = None) -> int:
    """The whole run; returns the exit code (2 for bad input, with one line on stderr).

    ``overrides``: the command line's Hydra overrides (``scripts/sample.py`` passes them); the keys they set
    win over the checkpoint's ``sampling.json``. None: no key was given, the checkpoint's values apply.
    """
    temporary = None
    try:
        metadata = apply_checkpoint_settings(cfg, given_keys(overrides))
        check_settings(cfg)
        layout = check_parallel(cfg)
        from one4d.parallel import rank_device

        device = rank_device(layout, resolve_device(cfg.device))
        configure_cpu_threads(cfg.get("threads"), cpu=device.type == "cpu")
        check_precision(torch_dtype(cfg.model.dtype), device, storage_dtype(cfg.model.get("base_storage_dtype")))
        check_architecture(cfg, layout)
        if cfg.get("inputs"):
            jobs, bad_lines = read_jobs(cfg.inputs, default_seed=int(cfg.seed))
        else:
            conditions = prepare_job(cfg, metadata, layout)
            temporary = _output_folder(cfg.out, layout)
    except (ValueError, OmegaConfBaseException) as error:
        discard(temporary)
        return _error(error)
    if cfg.get("inputs"):
        return sample_jobs(cfg, jobs, bad_lines, layout, device, metadata)
    if layout.writes:
        print_warnings(conditions)
        warn_if_far_from_training(cfg, conditions, metadata, device)

    try:
        pipe = load(cfg, device, layout)
        summary = sample_into(pipe, cfg, conditions, temporary, layout)
        out = publish(temporary, cfg.out) if layout.writes else None
    except UnusableWeights as error:  # a weight file that is not what it should be: bad input too
        discard(temporary)
        return _error(error)
    except BaseException:
        discard(temporary)
        raise
    finally:
        _stop(layout)
    if out is not None:
        print(f"wrote {out} ({summary['num_frames']} frames at {summary['height']}x{summary['width']}, task {summary['task']})")
        print(f"view it in 4D: {python_command()} scripts/view.py {out}")
    return 0


def sample_jobs(cfg: DictConfig, jobs, bad_lines: list[str], layout, device, metadata: dict | None) -> int:
    """Every unfinished job of an ``inputs=`` file, shared out over the data-parallel groups; 0 when all went well.

    Which jobs are unfinished is decided once, by rank 0, before any group writes. A job with bad input (or a
    malformed line) is one error line and the others still run; the exit code is then 2 (rank 0's; torchrun's is 1).
    """
    writer = int(os.environ.get("RANK", 0)) == 0
    for line in bad_lines:
        if writer:
            say(f"error: {line}")
    try:
        pipe = load(cfg, device, layout)  # every rank: the process group starts here, and groups without jobs join its collectives
    except UnusableWeights as error:
        _stop(layout)
        return _error(error)
    try:
        pending = [job for job in jobs if not job.finished]
        if layout.distributed:
            import torch.distributed as dist

            shared = [pending]
            dist.broadcast_object_list(shared, src=0)
            pending = shared[0]
        if writer and len(pending) < len(jobs):
            print(f"{len(jobs) - len(pending)} of {len(jobs)} jobs already finished: skipped")
        failed = done = 0
        for job in share(pending, layout.dp, layout.dp_rank):
            job_cfg = cfg.copy()
            OmegaConf.update(job_cfg, "inputs", None, merge=False)
            for key, value in job.overrides().items():
                OmegaConf.update(job_cfg, key, value, merge=False)
            temporary = None
            try:
                conditions = prepare_job(job_cfg, metadata, layout)
                temporary = _output_folder(job.out, layout)
                if layout.writes:
                    print_warnings(conditions)
            except ValueError as error:
                discard(temporary)
                failed += 1
                if layout.writes:
                    say(f"error: {cfg.inputs} line {job.line}: {str(error).splitlines()[0]}")
                continue
            try:
                summary = sample_into(pipe, job_cfg, conditions, temporary, layout)
                out = publish(temporary, job.out) if layout.writes else None
            except BaseException:
                discard(temporary)
                raise
            if layout.group_size > 1:  # the others wait here for the writer's decode and write, with a long timeout
                from one4d.parallel.layout import sampling_wait_group

                dist.barrier(group=sampling_wait_group())
            done += 1
            if out is not None:
                print(f"wrote {out} ({summary['num_frames']} frames at {summary['height']}x{summary['width']}, task {summary['task']}; line {job.line})")
        if layout.distributed:
            from one4d.parallel.layout import wait_group

            counts = [None] * layout.world_size  # groups end their shares a clip or more apart: the long-waiting group
            dist.all_gather_object(counts, (done, failed) if layout.writes else (0, 0), group=wait_group())
            done, failed = (sum(count[i] for count in counts) for i in (0, 1))
    finally:
        _stop(layout)
    if not writer:  # rank 0 reports the run; a rank exiting 2 first would make torchrun stop rank 0 mid-report
        return 0
    print(f"jobs: {done} sampled, {len(jobs) - len(pending)} already finished, {failed + len(bad_lines)} failed")
    return BAD_INPUT if failed or bad_lines else 0


def _output_folder(out, layout) -> Path | None:
    """The writing rank's temporary output folder. Every rank checks ``out`` the same way, so a group agrees on
    whether a job runs without talking (a rank that skipped it alone would leave the others waiting)."""
    temporary = prepare_output_folder(out)
    if layout.writes:
        return temporary
    discard(temporary)
    return None


def _stop(layout) -> None:
    if layout.distributed:
        from one4d.parallel import stop

        stop()


def load(cfg: DictConfig, device, layout):
    """The pipeline on ``device`` with the memory options, parallelised over ``layout`` (the process group starts here)."""
    from .loading import load_pipeline

    start = time.perf_counter()
    model = cfg.model
    try:
        pipe = load_pipeline(
            preset=model.preset, components=model.components, transformer=model.get("transformer"), state=cfg.checkpoint,
            architecture=model.architecture, lora_rank=int(model.lora_rank), dtype=model.dtype,
            seed=int(model.get("components_seed", 0)), scheduler=cfg.scheduler, flow_shift=float(cfg.shift),
            encoder_dtype=model.get("encoder_dtype"), condition_fill=float(model.get("condition_fill", 0.0)),
            transformer_from_components=bool(model.get("transformer_from_components", False)),
            **acceleration_options(cfg),
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
    if layout.distributed:
        from one4d.parallel import parallelize, start as start_processes

        parallelize(pipe.transformer, layout, start_processes(layout, device))
    pipe.load_seconds = time.perf_counter() - start
    return pipe


def sample_into(pipe, cfg: DictConfig, conditions, folder: Path | None, layout) -> dict | None:
    """Sample one clip with a loaded pipeline and write every output into ``folder`` (on the group's writing rank;
    the others stop at the latents and return None)."""
    import torch

    timings = {"load": getattr(pipe, "load_seconds", 0.0)}
    start = time.perf_counter()
    postopt = {"iterations": int(cfg.postopt.iterations), "subsample": int(cfg.postopt.subsample), "window": cfg.postopt.window,
               "max_behind": float(cfg.postopt.max_behind), "on_divergence": "mark"}  # the model ran: keep its outputs
    negative = {} if cfg.negative_prompt is None else {"negative_prompt": cfg.negative_prompt}  # None: the pipeline's (Wan's)
    output = pipe(
        conditions.images, conditions.observed, conditions.num_frames, prompt=cfg.prompt, **negative,
        num_inference_steps=int(cfg.steps), guidance_scale=float(cfg.cfg), generator=torch.Generator().manual_seed(int(cfg.seed)),
        recover_cameras=bool(cfg.postopt.enabled), pointmap_centre=list(cfg.pointmap_centre),
        pointmap_scale=float(cfg.pointmap_scale), postopt_kwargs=postopt, progress=bool(cfg.progress) and layout.writes,
        output_type="np" if layout.writes else "latent",
    )
    timings["sample"] = time.perf_counter() - start
    if not layout.writes:
        return None
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings["input"] = str(Path(cfg.input).absolute())
    settings["threads"] = torch.get_num_threads()
    return write_outputs(folder, output, conditions, settings, ply_stride=int(cfg.ply_stride), timings=timings)
