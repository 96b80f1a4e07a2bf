"""Interim end-to-end demo (until the trained tiny model ships, issue 8).

It runs the most complete path that exists today on a held-out synthetic 4D scene: render the scene,
run the tiny One4D (random weights, so its output is not meaningful yet) once to show the joint
RGB + XYZ forward, post-optimise the scene's pointmaps (with 1% noise and 2% outliers standing in for
generated ones) into cameras and depth, and score them against the scene's ground truth.
"""

import json
from pathlib import Path

import torch

from one4d.data.synthetic import render_scene
from one4d.eval import depth_metrics, pose_metrics
from one4d.geometry import invert_pose
from one4d.models import build_model
from one4d.postopt import recover_cameras, save_cameras

OUT = Path("outputs/demo")


def main() -> None:
    print("One4D interim demo: the trained tiny model is not shipped yet; the model below has random weights.")
    scene = render_scene(seed=10_000, num_frames=17, height=64, width=96)
    model = build_model("dlc", "tiny", lora_rank=8, num_links=2)
    latent = dict(frames=5, height=8, width=12)
    with torch.no_grad():
        rgb, xyz = model(
            torch.randn(1, 36, *latent.values()), torch.randn(1, 16, *latent.values()), torch.tensor([500.0]),
            torch.randn(1, 512, 32), torch.randn(1, 257, 32),
        )
    print(f"DLC forward (tiny preset): RGB prediction {tuple(rgb.shape)}, XYZ prediction {tuple(xyz.shape)}")

    generator = torch.Generator().manual_seed(0)
    noisy = scene.pointmaps + 0.01 * scene.depth[..., None] * torch.randn(scene.pointmaps.shape, generator=generator)
    outliers = torch.rand(scene.depth.shape, generator=generator) < 0.02
    noisy[outliers] += torch.randn(int(outliers.sum()), 3, generator=generator) * scene.depth.mean()
    result = recover_cameras(noisy)
    depth = depth_metrics(result.depth, scene.depth, align="none")
    pose = pose_metrics(result.camera_to_world, invert_pose(scene.world_to_camera))
    OUT.mkdir(parents=True, exist_ok=True)
    save_cameras(result, OUT)
    summary = {"scene": scene.caption, "depth": depth, "pose": pose}
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(f"scene: {scene.caption}")
    print(f"post-optimisation: depth Abs Rel {depth['abs_rel']:.4f}, delta<1.25 {depth['delta_1_25']:.3f}, "
          f"ATE {pose['ate']:.5f}")
    print(f"wrote {OUT}/summary.json, cameras.json and a TUM trajectory")


if __name__ == "__main__":
    main()
