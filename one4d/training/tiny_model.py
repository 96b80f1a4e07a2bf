"""``make tiny-model``: the shipped tiny One4D, reproduced from nothing in stages (issue 8).

Stages (each writes what the next reads; ``--stages`` reruns a subset):

* ``data``  - synthetic 4D clips (``one4d.data.synthetic``, seeds 0 .. N-1) under ``<work>/clips``;
* ``vae``   - stage 0: a tiny ``AutoencoderKLWan`` trained on RGB and normalised XYZ of those clips
  (``one4d.training.vae``), then the diffusers Wan I2V folder ``<out>/base`` with it, a tiny UMT5 text
  encoder, a tokenizer over a small English vocabulary and a tiny CLIP image encoder (random weights:
  the text and image encoders are NOT trained) and a randomly initialised ``demo`` transformer;
* ``decoder`` - the VAE decoder alone fine-tuned on whole clips, for a stage 0 trained on crops shorter than
  a clip (the causal decoder must decode every latent frame); the encoder, hence every latent, is unchanged.
  Stage 0 now trains on whole-length 9-frame crops; this stage then polishes the decoder on whole frames at a
  low learning rate (held-out pointmap depth Abs Rel 0.021 -> 0.019; at 5e-4 on crops it made XYZ worse) for
  1600 steps (3200 add about +0.16 dB of held-out RGB, RESULTS_tiny_model.md section 18, but cost the ten minutes
  the 1 x 1 token grid's transformer stages need within the 90-minute build, section 24);
* ``cache`` - VAE latents, UMC conditions, UMT5 and CLIP embeddings of every clip (``scripts/cache_latents.py``);
* ``base``  - stage 1, ``experiment=tiny_base``: the transformer trained on RGB (the "video prior"),
  written into ``<out>/base/transformer``;
* ``one4d`` - stage 2, ``experiment=tiny_one4d``: DLC on the frozen base, written to ``<out>/one4d``
  (a trainable-state folder, the layout of every One4D checkpoint).

The two trainer stages run the user's command, ``scripts/train.py``, on a CPU under torchrun with one process per
torch thread of the build (gloo DDP, one thread each; ``train.global_batch_size`` and the trainer's ``StepDraws``
make that the one-process run up to rounding), and export their final checkpoint.

Every stage records its command, seed, wall time and final loss in ``<out>/training_log.json``, and
``<out>/README.md`` is rewritten from it at the end.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from one4d.data.dataset import ClipDataset
from one4d.data.synthetic import write_synthetic_dataset
from one4d.runtime import openmp_wait_setting, run_child

from .checkpointing import latest_valid
from .testing import compose_train_config

logger = logging.getLogger(__name__)

STAGES = ("data", "vae", "decoder", "cache", "base", "one4d")
OUT = Path("data/checkpoints/tiny")
WORK = Path("outputs/tiny_model")
LOG_NAME = "training_log.json"
TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train.py"  # the trainer stages run the user's command
VAE_HELD_OUT = 8  # clips whose reconstruction error is reported (not trained on by the VAE)


def default_settings() -> dict:
    """Sizes and budgets of the shipped model (the experiment configs hold the trainer's)."""
    return dict(
        num_clips=1536, num_frames=9, height=48, width=64, data_seed=0,
        vae_clips=192, vae_steps=4000, vae_lr=2e-3, vae_batch=4, vae_crop=[32, 32], vae_frames=9, vae_kl=1e-4, vae_base_dim=8, vae_spatial_factor=4, vae_residual=True,
        vae_xyz_repeats=2, decoder_steps=1600, decoder_lr=2e-4, decoder_batch=4, decoder_crop=[12, 16],
        components_seed=0,
    )


# ----------------------------------------------------------------------------- stages


def stage_data(settings: dict, out: Path, work: Path, overrides: list[str]) -> dict:
    clips = work / "clips"
    shutil.rmtree(clips, ignore_errors=True)
    # One rendering process per torch thread of the build (the same clips, byte for byte, as one process writes).
    workers = torch.get_num_threads()
    write_synthetic_dataset(clips, settings["num_clips"], settings["num_frames"], settings["height"], settings["width"],
                            seed=settings["data_seed"], rgb_format="png", workers=workers)
    return {"clips": str(clips), "seeds": [settings["data_seed"], settings["data_seed"] + settings["num_clips"] - 1],
            "processes": workers}


def training_videos(work: Path, settings: dict, count: int) -> torch.Tensor:
    """RGB and normalised XYZ of the first ``count`` training samples, exactly as the trainer sees them: (2 count, 3, F, H, W)."""
    dataset = ClipDataset(work / "clips", settings["num_frames"], settings["height"], settings["width"], seed=settings["data_seed"])
    videos = []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        videos += [sample["rgb"], sample["xyz"]]
    return torch.stack(videos)


def vae_videos(work: Path, settings: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's training videos and the held-out ones (RGB, XYZ alternating), from the first clips of the data stage."""
    videos = training_videos(work, settings, settings["vae_clips"] + VAE_HELD_OUT)
    held_out_clips = max(1, min(VAE_HELD_OUT, len(videos) // 4))
    return videos[: -2 * held_out_clips], videos[-2 * held_out_clips :]


def build_tiny_vae(settings: dict):
    """The untrained tiny ``AutoencoderKLWan`` of ``settings`` (seeded with ``components_seed``): x4 in time, 16 latent channels.

    ``vae_spatial_factor`` 8 is Wan's layout (three spatial downsamples, the first without a temporal one);
    4 drops the first level (two downsamples, both temporal). At 48 x 64 an x8 VAE leaves 6 x 8 latents, too
    coarse to carry the synthetic scenes (issue 12: +0.6 dB over a flat image at best); x4 keeps 12 x 16.
    ``vae_residual``: Wan2.2's residual blocks (average-pooling shortcuts around each down/up block), which
    start near block averaging and train in minutes on a CPU where Wan2.1's plain blocks took hours.
    """
    from diffusers import AutoencoderKLWan

    torch.manual_seed(settings["components_seed"])
    factor = settings["vae_spatial_factor"]
    if factor not in (4, 8):
        raise ValueError(f"vae_spatial_factor must be 4 or 8, got {factor}")
    dim_mult, temporal = ([1, 2, 2, 2], [False, True, True]) if factor == 8 else ([1, 2, 2], [True, True])
    return AutoencoderKLWan(base_dim=settings["vae_base_dim"], z_dim=16, dim_mult=dim_mult, num_res_blocks=1, attn_scales=[],
                            temperal_downsample=temporal, scale_factor_spatial=factor, is_residual=settings["vae_residual"])


def train_tiny_vae(settings: dict, work: Path):
    """Stage 0's training on the clips under ``work``: returns the VAE (latent statistics set), its losses and held-out L1."""
    from .vae import reconstruction_error, set_latent_statistics, train_vae

    train, held_out = vae_videos(work, settings)
    vae = build_tiny_vae(settings)
    # vae_xyz_repeats: how often each pointmap video is drawn per RGB video (their balance in the loss).
    weighted = torch.cat([train[0::2], *[train[1::2]] * settings["vae_xyz_repeats"]])
    losses = train_vae(vae, weighted, steps=settings["vae_steps"], lr=settings["vae_lr"], batch_size=settings["vae_batch"],
                       num_frames=settings["vae_frames"], crop=tuple(settings["vae_crop"]), kl_weight=settings["vae_kl"],
                       seed=settings["components_seed"])
    set_latent_statistics(vae, train)
    errors = {"rgb": reconstruction_error(vae, held_out[0::2]), "xyz": reconstruction_error(vae, held_out[1::2])}
    return vae, losses, errors


def stage_vae(settings: dict, out: Path, work: Path, overrides: list[str]) -> dict:
    from one4d.components import build_image_encoder, build_scheduler, build_text_encoder, build_tokenizer, write_diffusers_directory
    from one4d.models.presets import build_base_transformer

    vae, losses, errors = train_tiny_vae(settings, work)
    torch.manual_seed(settings["components_seed"])
    image_encoder, image_processor = build_image_encoder("tiny")
    folder = write_diffusers_directory(
        out / "base", transformer=build_base_transformer("demo"), vae=vae, text_encoder=build_text_encoder("tiny"),
        tokenizer=build_tokenizer(), image_encoder=image_encoder, image_processor=image_processor, scheduler=build_scheduler(3.0),
    )
    return {"folder": str(folder), "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "held_out_l1": errors, "note": "text and image encoders keep their seeded random weights"}


def polish_decoder(vae, settings: dict, work: Path) -> tuple[list[float], dict, dict]:
    """The decoder alone on whole clips, at stage 0's RGB / XYZ balance and the ``decoder_*`` settings; returns its
    losses and the held-out L1 (RGB, XYZ) before and after. The one polish: the build's and the VAE benchmark's."""
    from .vae import finetune_decoder, reconstruction_error

    train, held_out = vae_videos(work, settings)
    before = {"rgb": reconstruction_error(vae, held_out[0::2]), "xyz": reconstruction_error(vae, held_out[1::2])}
    weighted = torch.cat([train[0::2], *[train[1::2]] * settings["vae_xyz_repeats"]])  # the balance of stage 0
    losses = finetune_decoder(vae, weighted, steps=settings["decoder_steps"], lr=settings["decoder_lr"], batch_size=settings["decoder_batch"],
                              latent_crop=tuple(settings["decoder_crop"]), seed=settings["components_seed"])
    errors = {"rgb": reconstruction_error(vae, held_out[0::2]), "xyz": reconstruction_error(vae, held_out[1::2])}
    return losses, before, errors


def stage_decoder(settings: dict, out: Path, work: Path, overrides: list[str]) -> dict:
    from diffusers import AutoencoderKLWan

    folder = out / "base" / "vae"
    if not settings["decoder_steps"]:
        return {"folder": str(folder),
                "note": "skipped (decoder_steps 0): stage 0 trains on whole-length clips, and this stage made held-out XYZ worse"}
    vae = AutoencoderKLWan.from_pretrained(folder, local_files_only=True)
    losses, before, errors = polish_decoder(vae, settings, work)
    vae.save_pretrained(folder)
    return {"folder": str(folder), "final_loss": sum(losses[-50:]) / len(losses[-50:]), "held_out_l1_before": before,
            "held_out_l1": errors, "note": "decoder only, on whole 4k+1-frame clips; the encoder and its latents are unchanged"}


def stage_cache(settings: dict, out: Path, work: Path, overrides: list[str]) -> dict:
    from .cache import cache_from_config

    overrides = [*path_overrides(out, work, "base"), *overrides]
    cfg = compose_train_config(["experiment=tiny_base", *overrides])
    shutil.rmtree(cfg.data.cache, ignore_errors=True)
    # One encoding process per torch thread of the build: the same latents bit for bit (one4d.training.cache.build_cache).
    workers = torch.get_num_threads()
    with_folder = compose_train_config(["experiment=tiny_base", f"+cache_dir={cfg.data.cache}", f"+cache_workers={workers}",
                                        *overrides])
    return {"cache": str(cache_from_config(with_folder)), "processes": workers}


def path_overrides(out: Path, work: Path, run: str) -> list[str]:
    """Point the experiment configs at ``out`` and ``work`` (their defaults are data/checkpoints/tiny and outputs/tiny_model)."""
    return [f"model.components={out / 'base'}", f"data.roots=[{work / 'clips'}]", f"data.cache={work / 'cache'}",
            f"run_dir={work / run}"]


def training_processes() -> int:
    """Processes of a trainer stage: one per torch thread of the build on a CPU (gloo DDP, one thread each: the One4D
    step's throughput 1.3x that of one process on two threads, benchmarks/RESULTS_tiny_model.md section 27), one on a GPU."""
    return 1 if torch.cuda.is_available() else torch.get_num_threads()


def training_command(experiment: str, overrides: list[str], processes: int) -> list[str]:
    """The user's command for a trainer stage: ``scripts/train.py``, under torchrun (``launcher=ddp``, one CPU thread
    per process) for more than one process. ``train.global_batch_size`` in the tiny experiments keeps the batch, and
    ``StepDraws`` the noise of every sample, the same on any number of processes."""
    script = [str(TRAIN_SCRIPT), f"experiment={experiment}"]
    if processes == 1:
        return [sys.executable, *script, f"threads={torch.get_num_threads()}", *overrides]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *script,
            "launcher=ddp", "threads=1", *overrides]


def train_stage(experiment: str, overrides: list[str], processes: int) -> tuple[Path, list[float], str, DictConfig]:
    """Train ``experiment`` from scratch with the user's command; returns its final checkpoint, the loss of every step,
    the command and its composed config. The stage's outputs are exported from that checkpoint, as a user would from
    theirs."""
    cfg = compose_train_config([f"experiment={experiment}", *overrides])  # bad overrides: one line before any process starts
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    command = training_command(experiment, overrides, processes)
    code = run_child(command)
    if code:
        raise ValueError(f"the {experiment} stage's training exited with code {code} (its error is above): {' '.join(command)}")
    final = latest_valid(Path(cfg.run_dir) / "checkpoints")
    if final is None or int(final.name.split("-")[1]) != int(cfg.train.steps):
        raise ValueError(f"the {experiment} stage's training left no checkpoint of step {cfg.train.steps} in {cfg.run_dir}")
    return final, json.loads((final / "losses.json").read_text()), " ".join(command), cfg


def stage_base(settings: dict, out: Path, work: Path, overrides: list[str]) -> dict:
    from one4d.models.state import load_trainable_state

    from .base_model import build_base_model

    overrides = [*path_overrides(out, work, "base"), *overrides]
    processes = training_processes()
    final, history, command, cfg = train_stage("tiny_base", overrides, processes)
    model = build_base_model(cfg.model)
    load_trainable_state(model, final / "trainable")
    folder = out / "base" / "transformer"
    shutil.rmtree(folder, ignore_errors=True)
    model.base.save_pretrained(folder)
    return {"folder": str(folder), "steps": len(history), "first_loss": history[0], "final_loss": _tail_mean(history),
            "processes": processes, "training_command": command}


def stage_one4d(settings: dict, out: Path, work: Path, overrides: list[str]) -> dict:
    overrides = [*path_overrides(out, work, "one4d"), f"model.transformer={out / 'base'}", *overrides]
    processes = training_processes()
    final, history, command, cfg = train_stage("tiny_one4d", overrides, processes)
    folder = out / "one4d"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(final / "trainable", folder)  # save_trainable_state's folder: the layout of every One4D checkpoint
    return {"folder": str(folder), "preset": str(cfg.model.preset), "steps": len(history), "first_loss": history[0],
            "final_loss": _tail_mean(history), "processes": processes, "training_command": command}


STAGE_FUNCTIONS = {"data": stage_data, "vae": stage_vae, "decoder": stage_decoder, "cache": stage_cache, "base": stage_base, "one4d": stage_one4d}


def _tail_mean(values: list[float], count: int = 50) -> float:
    tail = values[-count:]
    return sum(tail) / len(tail)


# ----------------------------------------------------------------------------- the run


def make_tiny_model(stages=STAGES, out: Path = OUT, work: Path = WORK, settings: dict | None = None,
                    overrides: list[str] = ()) -> dict:
    """Run ``stages`` in order, recording each in ``<out>/training_log.json``; ``overrides`` go to both trainer configs."""
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; expected some of {', '.join(STAGES)}")
    settings = dict(default_settings(), **(settings or {}))
    out, work = Path(out), Path(work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_NAME
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    log.update(settings=settings, machine=f"{platform.machine()} CPU, torch {torch.__version__}")
    log.setdefault("stages", {})
    for stage in STAGES:
        if stage not in stages:
            continue
        logger.info("stage %s ...", stage)
        started = time.perf_counter()
        record = STAGE_FUNCTIONS[stage](settings, out, work, list(overrides))
        record["wall_s"] = round(time.perf_counter() - started, 1)
        record["threads"] = torch.get_num_threads()  # stages of one shipped build may come from runs on different threads
        record["openmp_wait"] = openmp_wait_setting()  # the script's: one4d.runtime.spin_waiting_threads
        record["command"] = " ".join(["python scripts/make_tiny_model.py --stages", stage, *overrides])
        if log_path.is_file():  # records written meanwhile by another process (e.g. --stages decoder beside --stages base) are kept
            log["stages"] = json.loads(log_path.read_text()).get("stages", {})
        log["stages"][stage] = record
        log_path.write_text(json.dumps(log, indent=1) + "\n")
        logger.info("stage %s done in %.0f s", stage, record["wall_s"])
    write_sampling_metadata(out, settings, preset=built_preset(log["stages"]))
    write_readme(out, log)
    from one4d.demo import write_manifest

    write_manifest(out)  # the demo refuses a checkpoint whose files differ from this record
    return log


def built_preset(stages: dict) -> str:
    """The base preset of the build: the one its One4D stage trained on (logs from before it was recorded: ``demo``)."""
    return stages.get("one4d", {}).get("preset", "demo")


def write_sampling_metadata(out: Path, settings: dict, preset: str = "demo") -> Path:
    """``<out>/sampling.json``: the preset, weights, training size and the demo's sampler settings, so that
    ``scripts/sample.py checkpoint=<out>`` alone samples as ``make demo`` does (``one4d.sampling_file``).
    ``preset``: the One4D stage's ``model.preset`` (``tiny_one4d.yaml``: ``demo_patch1``; another for a one-off base grid)."""
    from one4d.demo import DemoSettings
    from one4d.sampling_file import write_sampling_file

    demo = DemoSettings()
    return write_sampling_file(
        out, state="one4d", model={"preset": preset, "components": "base", "transformer": None, "dtype": "float32"},
        trained_at={"num_frames": settings["num_frames"], "height": settings["height"], "width": settings["width"]},
        sampler={"steps": demo.steps, "cfg": demo.guidance_scale, "shift": demo.flow_shift, "scheduler": "unipc",
                 "negative_prompt": ""},  # the tiny tokenizer cannot read Wan's negative prompt; training dropped captions to ""
    )


def write_readme(out: Path, log: dict) -> Path:
    """``<out>/README.md``: how the shipped files were made, from the training log (commands, seeds, times, losses)."""
    settings, stages = log["settings"], log.get("stages", {})
    lines = [
        "# The shipped tiny One4D (`make tiny-model`)",
        "",
        "Rebuilt from nothing by `make tiny-model` (`python scripts/make_tiny_model.py`); this file and",
        f"`{LOG_NAME}` are rewritten by it, `MANIFEST.json` records the sha256 of every file (checked by `make demo`).",
        "",
        "| folder | layout | what |",
        "|---|---|---|",
        "| `base/` | diffusers Wan I2V directory (`WanImageToVideoPipeline.save_pretrained`) | tiny `AutoencoderKLWan` (trained, stage 0), "
        f"`WanTransformer3DModel` preset `{built_preset(stages)}` (trained, stage 1), tiny UMT5 text encoder and CLIP image encoder (seeded random weights, "
        "NOT trained), T5 tokenizer over a small English vocabulary, UniPC scheduler |",
        "| `one4d/` | One4D trainable state (`trainable_state.safetensors` + `architecture.json`) | DLC: RGB and XYZ LoRAs, control links, "
        "XYZ patch embedding and output head (stage 2) |",
        "| `sampling.json` | `one4d.sampling_file` | preset, weights, training size and the demo's sampler settings: "
        "`scripts/sample.py checkpoint=data/checkpoints/tiny` needs nothing else |",
        "",
        f"Data: {settings['num_clips']} synthetic clips (`one4d.data.synthetic`, seeds {settings['data_seed']} .. "
        f"{settings['data_seed'] + settings['num_clips'] - 1}), {settings['num_frames']} frames at {settings['height']} x {settings['width']}. "
        "The demo scores held-out seeds from 1,000,000.",
        f"Machine: {log.get('machine', 'unknown')}, shared with other jobs; torch threads (or processes) of each stage's run beside its wall time.",
        "",
        "| stage | command | wall time | result |",
        "|---|---|---|---|",
    ]
    for name, record in ((name, stages[name]) for name in STAGES if name in stages):
        if "final_loss" in record and "steps" in record:
            result = f"{record['steps']} steps, loss {record['first_loss']:.4f} -> {record['final_loss']:.4f} (mean of the last 50)"
        elif "held_out_l1" in record:
            errors = record["held_out_l1"]
            steps = settings["decoder_steps" if name == "decoder" else "vae_steps"]
            result = (f"{steps} steps, final loss {record['final_loss']:.4f}; held-out L1 of whole clips (in [-1, 1]) "
                      f"RGB {errors['rgb']:.3f}, XYZ {errors['xyz']:.3f}")
        else:
            result = ", ".join(f"{key}: {value}" for key, value in record.items()
                               if key not in ("wall_s", "command", "threads", "openmp_wait", "processes", "training_command"))
        if record.get("processes", 1) > 1:  # the data, cache and trainer stages: one process of one thread per thread
            how = [f"{record['processes']} processes of 1 thread"]
        else:
            how = [f"{record['threads']} thread{'s' if record['threads'] > 1 else ''}"] if "threads" in record else []
        if record.get("openmp_wait", "default") != "default":
            how.append(record["openmp_wait"])
        how = f" ({', '.join(how)})" if how else ""
        lines.append(f"| {name} | `{record['command']}` | {record['wall_s']:.0f} s{how} | {result} |")
    lines += [""] + [f"Note: {note}" for note in log.get("notes", [])]
    lines += [
        "",
        "Seeds: data seeds above; VAE, encoders and transformer initialisation `components_seed` = "
        f"{settings['components_seed']}; trainer `train.seed` = 0 (configs/experiment/tiny_base.yaml, tiny_one4d.yaml).",
        "Trainer settings (steps, batch, learning rate, LoRA rank, links) are in those two experiment files; "
        "the stage-0 settings are `one4d.training.tiny_model.default_settings()`:",
        "",
        "```json",
        json.dumps(settings, indent=1),
        "```",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    """``scripts/make_tiny_model.py [--stages data,vae,...] [trainer overrides...]``."""
    from one4d.runtime import ArgumentParser, available_cpus, configure_cpu_threads

    parser = ArgumentParser(description="Train the shipped tiny One4D (data/checkpoints/tiny) from nothing.")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--work", default=str(WORK), help="clips, cache and trainer runs (not shipped)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: every CPU this process may use; the build is the machine's only job)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both trainer stages, e.g. train.steps=100")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        # Both cores of the 2-core reference CPU: a One4D training step takes 0.43 s on two threads against 0.65 s on
        # one (benchmarks/RESULTS_tiny_model.md section 10); the shipped files were built on one thread (a two-thread rerun
        # of the One4D stage gives the same demo table, section 13).
        configure_cpu_threads(args.threads if args.threads is not None else available_cpus())
        make_tiny_model([s for s in args.stages.split(",") if s], Path(args.out), Path(args.work), overrides=args.overrides)
    except ValueError as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0
