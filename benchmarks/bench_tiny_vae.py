"""How well the tiny VAE carries RGB and geometry on held-out clips (issue 12 item 1).

Scores one ``AutoencoderKLWan`` on held-out synthetic scenes (seeds from 1,000,000, as the demo) at the
shipped model's size, per modality:

- RGB: PSNR (on [0, 1]) of decode(mode(encode(video))) against the true frames, next to the PSNR of a
  flat image of each frame's mean colour (a VAE that keeps no detail scores that);
- XYZ: the true pointmaps normalised as the trainer does (``ClipDataset``), encoded and decoded,
  de-normalised, then post-optimised (``one4d.postopt.recover_cameras``, the demo's 15 iterations):
  depth Abs Rel (scale & shift aligned, ``protocol="exact"``, as the demo scores). The same with the
  TRUE pointmaps is the post-optimisation's own floor, and frame 0's decoded z (pointmaps live in
  frame 0's camera) needs no post-optimisation at all.

Either the VAE of a diffusers folder is scored, or a candidate is first trained with the stage-0 code
of ``make tiny-model`` (``one4d.training.tiny_model.train_tiny_vae`` then the decoder fine-tune) on
clips already written by its data stage, with ``default_settings()`` overridden by a JSON object:

    python benchmarks/bench_tiny_vae.py --vae data/checkpoints/tiny/base/vae
    python benchmarks/bench_tiny_vae.py --vae data/checkpoints/tiny/base/vae --first-seed 1000030 --scenes 200
    python benchmarks/bench_tiny_vae.py --train '{"vae_base_dim": 16}' --work outputs/vae_bench --save outputs/vae_bench/bd16
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

HELD_OUT_SEED = 1_000_000  # the demo's held-out seeds start here; training used 0 .. num_clips - 1


def held_out_scene(seed: int, settings: dict):
    """A held-out scene and its RGB / normalised XYZ videos (1, 3, F, H, W) in [-1, 1], normalised as the trainer does."""
    from one4d.data.synthetic import render_scene
    from one4d.geometry import normalize_pointmaps, pointmap_normalization

    scene = render_scene(seed, settings["num_frames"], settings["height"], settings["width"])
    valid = scene.depth > 0  # (F, H, W)
    centre, scale = pointmap_normalization(scene.pointmaps, valid, 0.02)
    xyz = normalize_pointmaps(scene.pointmaps, centre, scale) * valid[..., None]  # (F, H, W, 3)
    rgb = scene.rgb * 2 - 1
    return scene, rgb.permute(3, 0, 1, 2)[None], xyz.permute(3, 0, 1, 2)[None], (centre, scale)


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1], measured on [0, 1]."""
    mse = float((((prediction.clamp(-1, 1) - target) / 2) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def postopt_scores(pointmaps: torch.Tensor, scene, iterations: int) -> dict:
    """Pointmaps (F, H, W, 3) post-optimised once, depth and cameras scored against the scene on every frame by the
    demo's ``score_geometry`` (Abs Rel after a per-sequence scale & shift, ATE after Sim(3) alignment)."""
    from one4d.demo import score_geometry
    from one4d.postopt import recover_cameras

    result = recover_cameras(pointmaps.double(), iterations=iterations)
    depth = result.depth.float().reshape(scene.depth.shape)  # (F, H, W)
    return score_geometry(depth, result.camera_to_world, scene, list(range(scene.depth.shape[0])))


def frame0_z_abs_rel(pointmaps: torch.Tensor, scene) -> float:
    """Frame 0's z of pointmaps (F, H, W, 3) (frame 0's camera is the pointmaps' frame: z is its depth), no
    post-optimisation: Abs Rel against frame 0's depth, scale & shift aligned."""
    from one4d.eval import depth_metrics

    return float(depth_metrics(pointmaps[:1, ..., 2], scene.depth[:1], align="scale&shift", protocol="exact")["abs_rel"])


@torch.no_grad()
def score_vae(vae, settings: dict, scenes: int, iterations: int = 15, first_seed: int = HELD_OUT_SEED) -> dict:
    """Per-scene and mean RGB PSNR (VAE, flat colour) and depth Abs Rel (VAE, true pointmaps, frame-0 z) on held-out
    seeds ``first_seed`` onwards; the RGB gain's standard error says how far another draw of scenes may move it."""
    from one4d.geometry import denormalize_pointmaps

    rows = []
    for seed in range(first_seed, first_seed + scenes):
        scene, rgb, xyz, (centre, scale) = held_out_scene(seed, settings)
        rgb_out = vae.decode(vae.encode(rgb).latent_dist.mode()).sample  # (1, 3, F, H, W)
        xyz_out = vae.decode(vae.encode(xyz).latent_dist.mode()).sample.clamp(-1, 1)
        flat = rgb.mean(dim=(3, 4), keepdim=True).expand_as(rgb)  # each frame's mean colour
        decoded = denormalize_pointmaps(xyz_out[0].permute(1, 2, 3, 0), centre, scale)  # (F, H, W, 3)
        truth = denormalize_pointmaps(xyz[0].permute(1, 2, 3, 0), centre, scale)  # clamped to the normalisation's bounds
        rows.append({
            "seed": seed, "rgb_psnr": psnr(rgb_out, rgb), "flat_psnr": psnr(flat, rgb),
            "xyz_l1": float((xyz_out - xyz).abs().mean()),
            "abs_rel": postopt_scores(decoded, scene, iterations)["abs_rel"],
            "true_pointmaps_abs_rel": postopt_scores(truth, scene, iterations)["abs_rel"],
            "frame0_z_abs_rel": frame0_z_abs_rel(decoded, scene),
        })
    keys = [key for key in rows[0] if key != "seed"]
    mean = {key: sum(row[key] for row in rows) / len(rows) for key in keys}
    spread = {key: (sum((row[key] - mean[key]) ** 2 for row in rows) / len(rows)) ** 0.5 for key in keys}
    gain = mean["rgb_psnr"] - mean["flat_psnr"]  # the mean of the per-scene gains
    gain_variance = sum((row["rgb_psnr"] - row["flat_psnr"] - gain) ** 2 for row in rows) / max(1, len(rows) - 1)  # sample variance
    return {"mean": mean, "std": spread, "psnr_gain_db": gain,
            "psnr_gain_standard_error_db": (gain_variance / len(rows)) ** 0.5, "scenes": rows}


def train_candidate(settings: dict, work: Path) -> tuple[object, dict]:
    """Stages ``vae`` and ``decoder`` of ``make tiny-model`` (the same functions) with ``settings``, on ``work``/clips."""
    from one4d.training.tiny_model import polish_decoder, train_tiny_vae

    started = time.perf_counter()
    vae, losses, errors = train_tiny_vae(settings, work)
    vae_seconds = time.perf_counter() - started
    record = {"vae_s": round(vae_seconds, 1), "vae_final_loss": sum(losses[-50:]) / len(losses[-50:]), "vae_held_out_l1": errors}
    if settings["decoder_steps"]:
        decoder_losses, _, decoder_errors = polish_decoder(vae, settings, work)
        record["decoder_final_loss"] = sum(decoder_losses[-50:]) / len(decoder_losses[-50:])
        record["decoder_held_out_l1"] = decoder_errors
    record["train_s"] = round(time.perf_counter() - started, 1)
    return vae, record


def main() -> None:
    from one4d.training.tiny_model import default_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", help="a diffusers AutoencoderKLWan folder to score")
    parser.add_argument("--train", help="JSON object overriding default_settings(): train this candidate, then score it")
    parser.add_argument("--work", default="outputs/vae_bench", help="holds clips/ written by make_tiny_model's data stage")
    parser.add_argument("--save", help="write the trained candidate here (diffusers folder)")
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=HELD_OUT_SEED, help="first held-out seed (the demo's 10 by default)")
    parser.add_argument("--out", help="append the result as one JSON line to this file")
    args = parser.parse_args()
    if args.first_seed < HELD_OUT_SEED or args.scenes < 1:
        parser.error(f"--first-seed must be at least {HELD_OUT_SEED} (seeds below are training scenes) and --scenes at least 1")
    torch.set_num_threads(1)
    settings = dict(default_settings(), **json.loads(args.train or "{}"))
    if args.vae:
        from diffusers import AutoencoderKLWan

        vae, record = AutoencoderKLWan.from_pretrained(args.vae, local_files_only=True), {"vae": args.vae}
    else:
        vae, record = train_candidate(settings, Path(args.work))
        record["settings"] = json.loads(args.train or "{}")
        if args.save:
            vae.save_pretrained(args.save)
    vae.eval()
    started = time.perf_counter()
    record.update(score_vae(vae, settings, args.scenes, first_seed=args.first_seed), score_s=round(time.perf_counter() - started, 1))
    summary = {key: record[key] for key in record if key != "scenes"}
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
