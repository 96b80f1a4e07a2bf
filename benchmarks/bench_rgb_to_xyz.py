"""How learnable is geometry from the tiny VAE's RGB latents, and how much does the number of training scenes matter?

The XYZ branch's hardest case (sigma 1: its own input is pure noise) is a regression from the scene's RGB latents to
its XYZ latents. This trains a small direct regressor for exactly that (a 3-D CNN, no noise, no transformer, no
LoRA) on the first ``--clips`` clips of a latent cache (``make tiny-model``'s, or one built with more clips), and
scores it on the demo's held-out scenes with ``bench_condition_use``'s split: what all scenes share (``bias``) and
what tells them apart (``scene_part``, against ``true_spread`` for the no-input mean latent). One CPU thread.

Latent MSE is not what the demo scores, so the regressor's estimates are then decoded and post-optimised exactly as
the demo's VAE ceiling is (``bench_tiny_vae.postopt_scores``, one post-optimisation per scene: 15 iterations, per-sequence scale & shift, Abs Rel),
on the held-out scenes and on the first training scenes, next to the demo's no-input prior scored the same way and
frame 0's decoded z alone (no post-optimisation), and the cameras that post-optimisation recovers (ATE, the demo's
``score_geometry``) next to the no-input mean path's. A regressor that does not beat the prior there tells how far
the XYZ branch, which learns the same mapping more slowly, is from the demo's depth and camera criteria.

A pointmap's ray directions depend on where each pixel is in the image, which Wan's relative (RoPE) positions leave
the transformer to infer from the image's edges; ``--positions`` trains the regressor with that knowledge taken away
(``none``), inferred from the edges (``borders``, the default) or given (``coordinates``).

    .venv/bin/python benchmarks/bench_rgb_to_xyz.py --cache outputs/tiny_model/cache --clips 192
    .venv/bin/python benchmarks/bench_rgb_to_xyz.py --cache outputs/tiny_model/cache --clips 384
    .venv/bin/python benchmarks/bench_rgb_to_xyz.py --clips 1536 --steps 3000 --positions coordinates --seed 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from bench_condition_use import held_out_inputs, mse, shared_and_scene_errors
from bench_tiny_vae import HELD_OUT_SEED, frame0_z_abs_rel, held_out_scene, postopt_scores

TRAIN_SCENES = 10  # training scenes (seeds 0 ..) scored beside the held-out ones: over-fitting shows as a gap
POSITIONS = ("borders", "coordinates", "none")  # what the regressor knows of a pixel's place: see regressor()


def cached_latents(cache: Path, count: int, settings: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB and XYZ latents (N, 16, f, h, w) of the first ``count`` samples of a latent cache built at ``settings``' size."""
    from one4d.training.cache import LatentCacheDataset

    samples = LatentCacheDataset(cache, settings["num_frames"], settings["height"], settings["width"])
    if len(samples) < count:
        raise ValueError(f"{cache} holds {len(samples)} samples, fewer than --clips {count}")
    return (torch.stack([samples.read(index, "rgb_latents") for index in range(count)]),
            torch.stack([samples.read(index, "xyz_latents") for index in range(count)]))


class PixelCoordinates(nn.Module):
    """Appends each latent pixel's (row, column) in [-1, 1] as two channels: (N, C, f, h, w) -> (N, C + 2, f, h, w)."""

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        n, _, f, h, w = latents.shape
        rows = torch.linspace(-1, 1, h).view(1, 1, 1, h, 1).expand(n, 1, f, h, w)
        columns = torch.linspace(-1, 1, w).view(1, 1, 1, 1, w).expand(n, 1, f, h, w)
        return torch.cat([latents, rows, columns], dim=1)


def regressor(width: int = 64, layers: int = 6, positions: str = "borders") -> nn.Sequential:
    """3 x 3 x 3 convolutions over (f, h, w) latents: every output sees a 13 x 13 latent neighbourhood.

    ``positions`` sets what the net can know of where a pixel is in the image, which a pointmap's ray directions need:
    ``borders`` (zero padding: inferred from the image's edges, like a transformer with relative positions only),
    ``coordinates`` (zero padding plus each pixel's coordinates as input channels) or ``none`` (circular padding in
    height and width: every column and row alike).
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")

    def conv(inputs: int, outputs: int) -> nn.Module:
        if positions != "none":
            return nn.Conv3d(inputs, outputs, 3, padding=1)
        # Height and width wrap around; time is zero-padded as in the other two.
        return nn.Sequential(nn.CircularPad3d((1, 1, 1, 1, 0, 0)), nn.Conv3d(inputs, outputs, 3, padding=(1, 0, 0)))

    if positions == "coordinates":
        blocks = [PixelCoordinates(), conv(16 + 2, width), nn.GELU()]  # the latents and each pixel's (row, column)
    else:
        blocks = [conv(16, width), nn.GELU()]
    for _ in range(layers - 2):
        blocks += [conv(width, width), nn.GELU()]
    return nn.Sequential(*blocks, conv(width, 16))


@torch.no_grad()
def depth_scores(net: nn.Module, vae, settings: dict, seeds) -> dict:
    """Mean depth Abs Rel over ``seeds`` of the regressor's decoded XYZ (post-optimised, and frame 0's z alone) and of
    the demo's no-input prior, all scale & shift aligned per sequence as the demo aligns them, over the scenes whose
    post-optimisation converged (``diverged`` counts the others). Every scene is rendered
    afresh (training seeds too: the same scenes as their cached clips but for the clips' 8-bit RGB)."""
    from one4d.demo import score_geometry
    from one4d.demo_controls import training_prior
    from one4d.encoding import decode_latents, encode_video
    from one4d.geometry import denormalize_pointmaps
    from one4d.postopt.recover import PostoptDiverged

    prior = training_prior(settings["num_frames"], settings["height"], settings["width"])
    all_frames = list(range(settings["num_frames"]))
    rows, diverged = [], 0
    for seed in seeds:
        scene, rgb, _, (centre, scale) = held_out_scene(seed, settings)
        decoded = decode_latents(vae, net(encode_video(vae, rgb)))[0]  # (3, F, H, W) normalised XYZ
        points = denormalize_pointmaps(decoded.permute(1, 2, 3, 0), centre, scale)  # (F, H, W, 3) in frame 0's camera
        prior_fit = score_geometry(prior.depth, prior.camera_to_world, scene, all_frames)
        try:
            fit = postopt_scores(points, scene, 15)  # one post-optimisation: depth and cameras, as the VAE ceiling's
            rows.append((fit["abs_rel"], frame0_z_abs_rel(points, scene), prior_fit["abs_rel"], fit["ate"], prior_fit["ate"]))
        except PostoptDiverged:  # no camera's view (an early regressor): counted, as the demo counts its failures
            diverged += 1
    means = [sum(column) / len(rows) for column in zip(*rows)] if rows else [float("nan")] * 5
    return {"regressor_abs_rel": round(means[0], 4), "regressor_frame0_z_abs_rel": round(means[1], 4),
            "prior_abs_rel": round(means[2], 4), "regressor_ate": round(means[3], 4), "mean_path_ate": round(means[4], 4),
            "diverged": diverged}


def main() -> None:
    from one4d.encoding import load_encoders

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="outputs/tiny_model/cache")
    parser.add_argument("--clips", type=int, default=384)
    parser.add_argument("--checkpoint", default="data/checkpoints/tiny", help="its VAE encodes the held-out scenes")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--positions", choices=POSITIONS, default="borders",
                        help="what the regressor knows of a pixel's place in the image (see regressor())")
    parser.add_argument("--seed", type=int, default=0, help="the regressor's initialisation and batch order")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    trained_at = json.loads((Path(args.checkpoint) / "sampling.json").read_text())["trained_at"]
    rgb, xyz = cached_latents(Path(args.cache), args.clips, trained_at)
    encoders = load_encoders(str(Path(args.checkpoint) / "base"))
    held_out = held_out_inputs(encoders, trained_at, args.scenes)
    net = regressor(positions=args.positions)
    run = {"clips": args.clips, "positions": args.positions, "seed": args.seed}  # printed with every line
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = torch.randint(0, len(rgb), (8,))
        loss = ((net(rgb[batch]) - xyz[batch]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 500 == 0 or step == args.steps:
            with torch.no_grad():
                estimate = net(held_out["rgb_latents"])
            split = {key: round(value, 3) for key, value in shared_and_scene_errors(estimate, held_out["xyz_latents"]).items()}
            print(json.dumps({**run, "step": step, "seconds": round(time.perf_counter() - started),
                              "train_batch_mse": round(loss.item(), 3),
                              "held_out_mse": round(mse(estimate, held_out["xyz_latents"]), 3), **split}), flush=True)
    net.eval()
    for name, seeds in (("held_out", range(HELD_OUT_SEED, HELD_OUT_SEED + args.scenes)), ("training", range(TRAIN_SCENES))):
        print(json.dumps({**run, "scenes": name, **depth_scores(net, encoders.vae, trained_at, seeds)}), flush=True)


if __name__ == "__main__":
    main()
