"""Post-optimisation speed and accuracy: recover_cameras against the paper-literal Adam baseline.

    python benchmarks/bench_postopt.py                      # 81 frames at 352x624, baseline 300 iterations at 1/4 size
    python benchmarks/bench_postopt.py --baseline-scale 1   # baseline at full size too (minutes)
    python benchmarks/bench_postopt.py --frames 300 --window 81 --device cuda

Both solve the same corrupted pointmaps (box room, 1 % Gaussian noise relative to depth, 2 %
flying-pixel outliers) from known cameras, so the errors are against ground truth.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from postopt_adam_baseline import adam_baseline  # noqa: E402

from one4d.geometry import camera_centers, rotation_angle_degrees  # noqa: E402
from one4d.postopt import recover_cameras  # noqa: E402
from one4d.postopt.synthetic import corrupt_pointmaps, render_box_clip  # noqa: E402


def accuracy(clip, intrinsics, world_to_camera, centres, depth) -> dict[str, float]:
    truth = clip["world_to_camera"].double()
    rotation = world_to_camera[:, :3, :3].double().cpu()
    return {
        "focal_err": float((intrinsics[:, 0, 0].double().cpu() / clip["intrinsics"][:, 0, 0] - 1).abs().max()),
        "rot_err_deg": float(rotation_angle_degrees(rotation.transpose(-1, -2) @ truth[:, :3, :3]).max()),
        "centre_err": float((centres.double().cpu() - camera_centers(truth)).norm(dim=-1).max() / clip["depth"].mean()),
        "abs_rel": float(((depth.double().cpu() - clip["depth"]).abs() / clip["depth"]).mean()),
    }


def make_clip(frames, height, width, seed=0):
    clip = render_box_clip(num_frames=frames, height=height, width=width, seed=seed)
    noisy = corrupt_pointmaps(clip["pointmaps"], clip["depth"], noise=0.01, outliers=0.02, seed=seed).float()
    return clip, noisy


def run_ours(clip, noisy, device, window, repeats=3):
    points = noisy.to(device)
    recover_cameras(points, window=window)  # warm-up (allocations, CUDA context)
    times = []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = recover_cameras(points, window=window)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), accuracy(clip, result.intrinsics, result.world_to_camera, result.camera_centers, result.depth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=624)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--baseline-iterations", type=int, default=300)
    parser.add_argument("--baseline-scale", type=int, default=4, help="baseline at 1/scale of the height and width (0: skip)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")

    clip, noisy = make_clip(args.frames, args.height, args.width)
    seconds, found = run_ours(clip, noisy, args.device, args.window)
    print(f"| ours | {args.frames}x{args.height}x{args.width} | {seconds:.2f} s | " + " | ".join(f"{k} {v:.4f}" for k, v in found.items()) + " |")

    if args.baseline_scale:
        height, width = args.height // args.baseline_scale, args.width // args.baseline_scale
        small_clip, small_noisy = make_clip(args.frames, height, width)
        if args.baseline_scale != 1:
            seconds_small, found_small = run_ours(small_clip, small_noisy, args.device, args.window)
            print(f"| ours | {args.frames}x{height}x{width} | {seconds_small:.2f} s | " + " | ".join(f"{k} {v:.4f}" for k, v in found_small.items()) + " |")
        start = time.perf_counter()
        baseline = adam_baseline(small_noisy.double(), iterations=args.baseline_iterations)
        baseline_seconds = time.perf_counter() - start
        found_baseline = accuracy(small_clip, baseline["intrinsics"], baseline["world_to_camera"], baseline["camera_centers"], baseline["depth"])
        print(
            f"| Adam baseline, {args.baseline_iterations} it | {args.frames}x{height}x{width} | {baseline_seconds:.2f} s | "
            + " | ".join(f"{k} {v:.4f}" for k, v in found_baseline.items()) + " |"
        )
        if args.baseline_scale != 1:
            # Adam's cost is linear in pixels: time a few full-size iterations and scale to the budget.
            start = time.perf_counter()
            adam_baseline(noisy.double(), iterations=3)
            per_iteration = (time.perf_counter() - start) / 3
            print(
                f"| Adam baseline, full size | {args.frames}x{args.height}x{args.width} | {per_iteration:.2f} s/it -> "
                f"{per_iteration * args.baseline_iterations:.0f} s for {args.baseline_iterations} it | speed-up of ours "
                f"{per_iteration * args.baseline_iterations / seconds:.0f}x |"
            )
        else:
            print(f"| speed-up of ours | {baseline_seconds / seconds:.0f}x |")


if __name__ == "__main__":
    main()
