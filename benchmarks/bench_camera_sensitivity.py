"""How close must the XYZ latents be before post-optimisation's cameras beat the no-input mean path?

Issue 12's camera check (ATE below the mean training path) fails for every route through pointmaps, while a learned
reader gets the camera from the same latents (RESULTS_tiny_model.md section 19). This measures the pointmap route
alone: the TRUE normalised pointmaps of the demo's held-out scenes are encoded by the checkpoint's VAE, their latents
degraded by a known amount, decoded, post-optimised once and scored with the demo's rules (``score_geometry``: depth
Abs Rel after a per-sequence scale & shift, ATE of the camera centres after Sim(3) alignment). Two degradations:
``towards_mean`` (z + a (mean - z), the mean latent of the 64 training scenes the demo's prior uses: what a model
that regresses towards the average scene does) and ``noise`` (z + s eps, unstructured). The checkpoint's own one-step
XYZ estimate at sigma 1 (full-video condition, as ``bench_camera_readability --features xyz_estimate``) is scored
the same way and placed on both curves by its latent MSE; a third curve, ``towards_estimate``, moves the true latents
that fraction of the way to that estimate (z + a (estimate - z)): how much of the model's error the cameras can take.
Then where in the estimate that error sits (``parts``): the truth with one part replaced by the estimate's (one latent
frame; one decoded channel group in frame 0's camera coordinates: x, y lateral, z forward; one decoded frame group;
the error's component along each pixel's true ray, which changes depth only, or across it, which moves the point off
its ray), and the estimate with its mean error over the prior's 64 training scenes removed (a scene-independent bias).
Per scene, how far the estimate's frames move from frame 0 against the truth (``change_fraction``).
One CPU thread, a few minutes.

    .venv/bin/python benchmarks/bench_camera_sensitivity.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench_tiny_vae import HELD_OUT_SEED, held_out_scene, postopt_scores

PART_CHANNELS = {"x": [0], "y": [1], "z": [2], "xy": [0, 1]}  # decoded pointmap channels, frame 0's camera coordinates
LEVELS = {"towards_mean": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5), "noise": (0.05, 0.1, 0.2, 0.3, 0.5),
          "towards_estimate": (0.1, 0.2, 0.3, 0.5, 0.75)}


def degrade(latents: torch.Tensor, towards: torch.Tensor, kind: str, level: float, generator: torch.Generator) -> torch.Tensor:
    """(N, 16, f, h, w) latents moved ``level`` of the way to ``towards`` (the mean latent (1, 16, f, h, w) or the
    model's estimates (N, 16, f, h, w)), or for ``noise`` plus ``level`` x unit noise."""
    if kind == "noise":
        return latents + level * torch.randn(latents.shape, generator=generator)
    return latents + level * (towards - latents)


def substitute(truth: torch.Tensor, estimate: torch.Tensor, dim: int, index: list[int]) -> torch.Tensor:
    """``truth`` with the entries ``index`` along ``dim`` taken from ``estimate`` (same shape): one part of the error."""
    mixed = truth.clone()
    selector = [slice(None)] * truth.dim()
    selector[dim] = index
    mixed[tuple(selector)] = estimate[tuple(selector)]
    return mixed


def ray_split(error: torch.Tensor, points: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A pointmap error (3, F, H, W) split into its components along and across each pixel's true ray, the ray from the
    frame's true camera centre (F, 3) through the true point (3, F, H, W); all in one similarity frame."""
    ray = points - centres.T[:, :, None, None]  # (3, F, H, W)
    ray = ray / ray.norm(dim=0, keepdim=True).clamp_min(1e-9)
    along = (error * ray).sum(0, keepdim=True) * ray
    return along, error - along


def change_fraction(decoded: torch.Tensor, true_xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each frame of decoded pointmaps (N, 3, F, H, W) moves from the truth's frame 0, as a fraction of how far
    the truth moves: the least-squares ``lam`` of decoded_t - true_0 = lam (true_t - true_0) + r over every pixel and
    channel, and the leftover |r|^2 / |true_t - true_0|^2 -> both (N, F - 1), for frames 1 .. F - 1. lam 1 and no
    leftover is the truth; lam 0 a frame that stays where frame 0 is (its camera then seems not to have moved)."""
    change = (true_xyz[:, :, 1:] - true_xyz[:, :, :1]).transpose(1, 2).flatten(2)  # (N, F - 1, 3 H W)
    moved = (decoded[:, :, 1:] - true_xyz[:, :, :1]).transpose(1, 2).flatten(2)
    size = change.pow(2).sum(-1).clamp_min(1e-12)
    lam = (moved * change).sum(-1) / size
    return lam, (moved - lam[..., None] * change).pow(2).sum(-1) / size


@torch.no_grad()
def score_pointmaps(decoded: torch.Tensor, true_xyz: torch.Tensor, scenes: list, norms: list, iterations: int) -> dict:
    """XYZ L1 (on [-1, 1]) against the decoded truth ``true_xyz``, depth Abs Rel and ATE of decoded normalised
    pointmaps (N, 3, F, H, W), post-optimised and scored per scene as the demo does, means over the scenes."""
    from one4d.geometry import denormalize_pointmaps

    rows = []
    for index, (scene, norm) in enumerate(zip(scenes, norms)):
        pointmaps = denormalize_pointmaps(decoded[index].permute(1, 2, 3, 0), *norm)  # (F, H, W, 3)
        rows.append(postopt_scores(pointmaps, scene, iterations))
    return {"xyz_l1_vs_vae_roundtrip": float((decoded - true_xyz).abs().mean()),
            "abs_rel": sum(row["abs_rel"] for row in rows) / len(rows), "ate": sum(row["ate"] for row in rows) / len(rows)}


@torch.no_grad()
def score_latents(vae, latents: torch.Tensor, truth: torch.Tensor, true_xyz: torch.Tensor, scenes: list, norms: list,
                  iterations: int) -> dict:
    """Mean latent MSE against ``truth`` and :func:`score_pointmaps` of (N, 16, f, h, w) latents, decoded."""
    from one4d.encoding import decode_latents

    decoded = decode_latents(vae, latents)  # (N, 3, F, H, W)
    return {"latent_mse": float((latents - truth).pow(2).mean()),
            **score_pointmaps(decoded, true_xyz, scenes, norms, iterations)}


def error_parts(vae, truth, true_xyz, estimate, bias, scenes, norms, iterations):
    """(name, scores) of the truth with one part of the estimate's error, and of the estimate without its bias."""
    from one4d.demo import true_camera_path
    from one4d.encoding import decode_latents

    decoded = decode_latents(vae, estimate)  # (N, 3, F, H, W)
    yield "estimate_minus_training_bias", score_latents(vae, estimate - bias, truth, true_xyz, scenes, norms, iterations)
    for frame in range(truth.shape[2]):
        mixed = substitute(truth, estimate, 2, [frame])
        yield f"truth_with_estimated_latent_frame_{frame}", score_latents(vae, mixed, truth, true_xyz, scenes, norms, iterations)
    for name, channels in PART_CHANNELS.items():
        mixed = substitute(true_xyz, decoded, 1, channels)
        yield f"truth_with_estimated_{name}", score_pointmaps(mixed, true_xyz, scenes, norms, iterations)
    along_ray, across_ray = true_xyz.clone(), true_xyz.clone()
    for index, (scene, (centre, scale)) in enumerate(zip(scenes, norms)):
        points = ((scene.pointmaps - centre) / scale).permute(3, 0, 1, 2)  # (3, F, H, W), unclamped
        centres = (true_camera_path(scene)[:, :3, 3].to(points) - centre) / scale  # (F, 3)
        along, across = ray_split(decoded[index] - true_xyz[index], points, centres)
        along_ray[index] += along
        across_ray[index] += across
    for name, mixed in (("along_ray", along_ray), ("across_ray", across_ray)):
        yield f"truth_with_estimated_{name}", score_pointmaps(mixed, true_xyz, scenes, norms, iterations)
    stride, frames = vae.config.scale_factor_temporal, true_xyz.shape[2]
    for latent_frame in range(truth.shape[2]):  # the frames each latent frame decodes to: 0, then `stride` at a time
        group = [0] if latent_frame == 0 else list(range(1 + stride * (latent_frame - 1), min(1 + stride * latent_frame, frames)))
        name = "frame_0" if latent_frame == 0 else f"frames_{group[0]}_to_{group[-1]}"
        yield f"truth_with_estimated_{name}", score_pointmaps(substitute(true_xyz, decoded, 2, group), true_xyz, scenes, norms, iterations)


def main() -> None:
    from bench_camera_readability import branch_features

    from one4d.demo import DEMO_SEEDS, true_camera_path
    from one4d.demo_controls import PRIOR_SCENES, training_prior
    from one4d.encoding import decode_latents, encode_video, load_encoders
    from one4d.eval import pose_metrics
    from one4d.sampling_file import read_sampling_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="data/checkpoints/tiny", help="its VAE, and its One4D for the one-step estimate")
    parser.add_argument("--scenes", type=int, default=len(DEMO_SEEDS), help="held-out scenes from the demo's first seed")
    parser.add_argument("--iterations", type=int, default=15, help="post-optimisation iterations (the demo's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = Path(args.checkpoint)
    settings = read_sampling_file(checkpoint)["trained_at"]
    encoders = load_encoders(str(checkpoint / "base"))
    vae = encoders.vae.eval()
    started = time.perf_counter()
    seeds = range(HELD_OUT_SEED, HELD_OUT_SEED + args.scenes)
    held_out = [held_out_scene(seed, settings) for seed in seeds]
    scenes, norms = [item[0] for item in held_out], [item[3] for item in held_out]
    truth = encode_video(vae, torch.cat([item[2] for item in held_out]))  # (N, 16, f, h, w)
    true_xyz = decode_latents(vae, truth)  # (N, 3, F, H, W): the VAE ceiling's pointmaps
    prior_latents = encode_video(vae, torch.cat([held_out_scene(seed, settings)[2] for seed in range(PRIOR_SCENES)]))
    mean = prior_latents.mean(0, keepdim=True)  # (1, 16, f, h, w)
    prior = training_prior(settings["num_frames"], settings["height"], settings["width"])
    mean_path = sum(pose_metrics(prior.camera_to_world, true_camera_path(scene))["ate"] for scene in scenes) / len(scenes)
    print(json.dumps({"held_out_scenes": args.scenes, "no_input_mean_path_ate": round(mean_path, 4),
                      "mean_latent_mse": round(float((mean - truth).pow(2).mean()), 4)}), flush=True)
    estimate = branch_features(checkpoint, encoders, seeds, settings, "xyz_estimate")  # (N, 16, f, h, w)
    for kind, levels in LEVELS.items():
        for level in levels:
            towards = estimate if kind == "towards_estimate" else mean
            degraded = degrade(truth, towards, kind, level, torch.Generator().manual_seed(0))  # one noise draw, scaled per level
            scores = score_latents(vae, degraded, truth, true_xyz, scenes, norms, args.iterations)
            print(json.dumps({"degradation": kind, "level": level, **{k: round(v, 4) for k, v in scores.items()}}), flush=True)
    scores = score_latents(vae, estimate, truth, true_xyz, scenes, norms, args.iterations)
    print(json.dumps({"degradation": "one4d_one_step_estimate", "checkpoint": str(checkpoint), **{k: round(v, 4) for k, v in scores.items()}}),
          flush=True)
    bias = (branch_features(checkpoint, encoders, range(PRIOR_SCENES), settings, "xyz_estimate") - prior_latents).mean(0, keepdim=True)
    print(json.dumps({"training_bias_energy": round(float(bias.pow(2).mean()), 4),
                      "estimate_error_energy_per_latent_frame": [round(float((estimate - truth)[:, :, k].pow(2).mean()), 4)
                                                                 for k in range(truth.shape[2])]}), flush=True)
    lam, leftover = change_fraction(decode_latents(vae, estimate), true_xyz)
    for seed, scene_lam, scene_leftover in zip(seeds, lam.tolist(), leftover.tolist()):
        print(json.dumps({"seed": seed, "frames_1_on_moved_fraction": [round(v, 2) for v in scene_lam],
                          "leftover": [round(v, 2) for v in scene_leftover]}), flush=True)
    for name, scores in error_parts(vae, truth, true_xyz, estimate, bias, scenes, norms, args.iterations):
        print(json.dumps({"part": name, **{k: round(v, 4) for k, v in scores.items()}}), flush=True)
    print(json.dumps({"seconds": round(time.perf_counter() - started)}), flush=True)


if __name__ == "__main__":
    main()
