"""``make ablation``: the paper's Figure 3 at tiny scale, DLC vs channel-wise vs spatial-wise concatenation.

All three are fine-tuned from the SAME shipped tiny base (``data/checkpoints/tiny/base``) with the same
trainer, data (the latent cache of ``make tiny-model``), steps, batch, learning rate and LoRA rank
(``configs/experiment/tiny_one4d.yaml`` with ``model.architecture`` switched). Each is then measured on
held-out scenes (seeds the training never saw):

* XYZ depth accuracy: the full-video task through the real sampler and post-optimisation, depth Abs Rel
  and delta < 1.25 after per-sequence scale & shift (as ``make demo`` scores it);
* RGB degradation: the RGB flow-matching loss of the model on held-out clips (image-to-video condition,
  fixed noise and noise levels) compared with the same loss of the base model before fine-tuning.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from one4d.demo import CHECKPOINT, DemoSettings, checkpoint_preset, load_demo_pipeline, run_task

ARCHITECTURES = ("dlc", "channel_concat", "spatial_concat")
HELD_OUT_SEED = 2_000_000
EVAL_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)


def held_out_cache(checkpoint: Path, work: Path, count: int, settings: DemoSettings):
    """Latents, conditions and embeddings of ``count`` held-out clips (the trainer's cache format)."""
    from one4d.data.dataset import ClipDataset
    from one4d.data.synthetic import write_synthetic_dataset
    from one4d.encoding import load_encoders, vae_fingerprint
    from one4d.training.cache import LatentCacheDataset, build_cache

    clips, cache = work / "held_out_clips", work / "held_out_cache"
    if not (cache / "cache.json").is_file():
        write_synthetic_dataset(clips, count, settings.num_frames, settings.height, settings.width, seed=HELD_OUT_SEED, rgb_format="png")
        dataset = ClipDataset(clips, settings.num_frames, settings.height, settings.width)
        encoders = load_encoders(str(checkpoint / "base")).to("cpu")
        build_cache(dataset, encoders, cache, vae=vae_fingerprint(str(checkpoint / "base")), sparse_counts=(), progress=False)
    return LatentCacheDataset(cache, settings.num_frames, settings.height, settings.width)


@torch.no_grad()
def rgb_flow_loss(predict_rgb, dataset) -> float:
    """Mean RGB flow-matching MSE over held-out clips and fixed noise levels, image-to-video condition, fixed noise."""
    from one4d.training.objective import FlowMatchingObjective

    objective, losses = FlowMatchingObjective(), []
    for index in range(len(dataset)):
        rgb, xyz = dataset.read(index, "rgb_latents")[None], dataset.read(index, "xyz_latents")[None]  # (1, 16, f, h, w)
        condition = dataset.read(index, "cond.single")[None]  # (1, 20, f, h, w)
        text, image = dataset.read(index, "text_embeds")[None], dataset.read(index, "image_embeds")[None]
        generator = torch.Generator().manual_seed(index)
        for sigma_value in EVAL_SIGMAS:
            sigma = torch.tensor([sigma_value])
            rgb_noise, xyz_noise = torch.randn(rgb.shape, generator=generator), torch.randn(xyz.shape, generator=generator)
            rgb_input = torch.cat([objective.noisy(rgb, rgb_noise, sigma), condition], dim=1)  # (1, 36, f, h, w)
            prediction = predict_rgb(rgb_input, objective.noisy(xyz, xyz_noise, sigma), objective.timesteps(sigma), text, image)
            losses.append(float(torch.mean((prediction - objective.target(rgb, rgb_noise)) ** 2)))
    return float(np.mean(losses))


def train_architecture(architecture: str, checkpoint: Path, work: Path, steps: int, overrides: list[str]) -> tuple[Path, dict]:
    """Fine-tune one architecture from the shipped base with the tiny_one4d recipe, as the build trains its One4D stage
    (``scripts/train.py``, one process per CPU thread); returns its trainable-state folder."""
    from one4d.training.tiny_model import path_overrides, train_stage, training_processes

    started = time.perf_counter()
    final, history, _, _ = train_stage("tiny_one4d", [
        *path_overrides(checkpoint, work.parent, f"ablation/{architecture}"), f"model.transformer={checkpoint / 'base'}",
        f"model.preset={checkpoint_preset(checkpoint)}",
        f"model.architecture={architecture}", f"train.steps={steps}", "train.checkpoint_every=0", *overrides,
    ], training_processes())
    folder = work / architecture / "state"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(final / "trainable", folder)
    tail = history[-50:]
    return folder, {"train_s": time.perf_counter() - started, "final_loss": float(np.mean(tail))}


def run_ablation(checkpoint: str | Path = CHECKPOINT, work: str | Path = "outputs/tiny_model/ablation", steps: int = 400,
                 held_out: int = 6, overrides: list[str] = (), settings: DemoSettings | None = None, log=print) -> dict:
    """Train and measure the three architectures; returns the results (also written to ``<work>/ablation.json``).

    ``settings``: size and sampler settings of the held-out evaluation (default: the demo's).
    """
    from one4d.models import WanBaseModel
    from one4d.weights import load_base_transformer

    checkpoint, work = Path(checkpoint), Path(work)
    settings = settings or DemoSettings()
    dataset = held_out_cache(checkpoint, work, held_out, settings)
    base = WanBaseModel(load_base_transformer(checkpoint / "base", preset=checkpoint_preset(checkpoint))).eval()
    results = {"base_rgb_loss": rgb_flow_loss(lambda rgb, xyz, t, text, image: base(rgb, t, text, image), dataset),
               "steps": steps, "held_out_clips": held_out, "architectures": {}}
    log(f"base model RGB flow loss on held-out clips: {results['base_rgb_loss']:.4f}")
    for architecture in ARCHITECTURES:
        folder, record = train_architecture(architecture, checkpoint, work, steps, list(overrides))
        pipe = load_demo_pipeline(checkpoint, settings, state=folder)
        model = pipe.transformer
        record["rgb_loss"] = rgb_flow_loss(lambda rgb, xyz, t, text, image: model(rgb, xyz, t, text, image)[0], dataset)
        depth, record["failed_scenes"] = [], 0
        for index in range(max(1, held_out // 2)):
            try:
                scores = run_task(pipe, "full", HELD_OUT_SEED + 100 + index, settings, None)[3]
                if not np.isfinite(scores["abs_rel"]):  # e.g. every point behind its camera: no valid depth to align
                    raise ValueError("no valid predicted depth at the ground truth's valid pixels")
                depth.append(scores)
            except ValueError as error:  # post-optimisation refuses pointmaps that are no camera's view
                record["failed_scenes"] += 1
                log(f"{architecture}: scene {index} not scored ({error})")
        for key in ("abs_rel", "delta_1_25", "baseline_abs_rel"):
            record[key] = float(np.mean([row[key] for row in depth])) if depth else float("nan")
        results["architectures"][architecture] = record
        log(f"{architecture}: Abs Rel {record['abs_rel']:.3f}, delta<1.25 {record['delta_1_25']:.3f}, "
            f"RGB flow loss {record['rgb_loss']:.4f} (base {results['base_rgb_loss']:.4f})")
    (work / "ablation.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def ablation_table(results: dict) -> str:
    """The Markdown table for ABLATION.md and the README."""
    base = results["base_rgb_loss"]
    lines = [
        f"| architecture | depth Abs Rel | delta<1.25 | RGB flow loss (base {base:.4f}) | RGB degradation | train time |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["architectures"].items():
        failed = f" ({row['failed_scenes']} scenes failed post-optimisation)" if row.get("failed_scenes") else ""
        lines.append(f"| {name} | {row['abs_rel']:.3f}{failed} | {row['delta_1_25']:.3f} | {row['rgb_loss']:.4f} | "
                     f"{100 * (row['rgb_loss'] / base - 1):+.1f}% | {row['train_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def machine_description() -> str:
    """Where the ablation ran, for its report: CPU cores and the GPU if one was used."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"a {os.cpu_count()}-core CPU, {gpu}"


def write_report(results: dict, path: str | Path, command: str) -> Path:
    path = Path(path)
    baseline = np.nanmean([row["baseline_abs_rel"] for row in results["architectures"].values()])
    text = "\n".join([
        "# Architecture ablation at tiny scale (paper Fig. 3)",
        "",
        f"`{command}` on {machine_description()} ({datetime.date.today().isoformat()}). Each architecture is fine-tuned from the same shipped base "
        f"(`base/`) for {results['steps']} steps with the `tiny_one4d` recipe (same data, batch, learning rate, LoRA rank). "
        f"Depth: full-video task on {results['held_out_clips'] // 2} held-out scenes through the sampler and post-optimisation "
        f"(constant-depth plane: Abs Rel {baseline:.3f}). RGB: flow-matching MSE on {results['held_out_clips']} held-out clips "
        f"(image-to-video condition, noise levels {list(EVAL_SIGMAS)}, fixed noise); degradation is relative to the base "
        "model before fine-tuning.",
        "",
        ablation_table(results),
    ])
    path.write_text(text)
    return path


def check_training_cache() -> None:
    """The three architectures train from the latent cache that `make tiny-model` leaves behind (tiny_one4d's data.cache)."""
    from one4d.training.testing import compose_train_config

    cache = Path(compose_train_config(["experiment=tiny_one4d"]).data.cache)
    if not (cache / "cache.json").is_file():
        raise ValueError(f"the ablation trains from the latent cache {cache}, which is missing: run `make tiny-model` first")


def main(argv: list[str] | None = None) -> int:
    from one4d.runtime import ArgumentParser
    import sys

    parser = ArgumentParser(description="DLC vs channel vs spatial concatenation from the shipped tiny base.")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--report", default=str(CHECKPOINT / "ABLATION.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        from one4d.demo import verify_checkpoint

        verify_checkpoint(args.checkpoint)
        check_training_cache()
        results = run_ablation(args.checkpoint, steps=args.steps)
    except ValueError as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    path = write_report(results, args.report, "make ablation")
    print(ablation_table(results))
    print(f"wrote {path}")
    return 0
