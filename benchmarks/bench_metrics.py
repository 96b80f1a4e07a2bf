"""Time the evaluation metrics at the benchmarks' real sizes (metric time must never matter).

    .venv/bin/python benchmarks/bench_metrics.py [--frames 50] [--height 436] [--width 1024]

Depth: one Sintel-sized sequence (50 x 436 x 1024) per alignment; pose: a 90-frame TUM-sized
trajectory. Prints the best of 3 runs in seconds.
"""

import argparse

import torch

from one4d.eval import depth_metrics, pose_metrics
from one4d.geometry import make_pose, quaternion_to_rotation
from timing import best_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--height", type=int, default=436)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    gt = 1 + 20 * torch.rand(args.frames, args.height, args.width, generator=generator)
    pred = (gt * 0.3 + 0.1) * (1 + 0.1 * torch.randn(gt.shape, generator=generator))
    print(f"depth {tuple(gt.shape)} float32, torch threads {torch.get_num_threads()}")
    for align in ("scale&shift", "scale", "median", "none"):
        print(f"  depth_metrics align={align:12s} {best_of(lambda: depth_metrics(pred, gt, align=align)):.2f} s")
    quaternions = torch.randn(90, 4, generator=generator, dtype=torch.float64)
    poses = make_pose(quaternion_to_rotation(quaternions), torch.randn(90, 3, generator=generator, dtype=torch.float64))
    noisy = poses.clone()
    noisy[:, :3, 3] += 0.01 * torch.randn(90, 3, generator=generator, dtype=torch.float64)
    print(f"  pose_metrics 90 frames          {best_of(lambda: pose_metrics(noisy, poses)) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
