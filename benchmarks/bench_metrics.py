"""Time the evaluation metrics at the benchmarks' real sizes, for every depth protocol and alignment.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py [--frames 50] [--height 436] [--width 1024]

Depth: one Sintel-sized sequence (50 x 436 x 1024, float32, prediction at the gt resolution) per
(protocol, alignment) on the CPU; with ``--frames F`` < 50 it measures F frames and also prints the
linear extrapolation to 50 (every solver is a fixed number of passes over the pixels). The Adam steps
taken are printed: Geo4D's loop ends on a float32 loss tie, after a data-dependent count. Pose: a
90-frame TUM-sized trajectory. Prints the best of ``--repeats`` runs in seconds.
"""

import argparse

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from one4d.eval import depth_metrics, pose_metrics
from one4d.eval.protocols import FIT_PIXELS, PROTOCOLS
from one4d.geometry import make_pose, quaternion_to_rotation
from timing import best_of

SINTEL_FRAMES = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=SINTEL_FRAMES)
    parser.add_argument("--height", type=int, default=436)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    gt = 1 + 20 * torch.rand(args.frames, args.height, args.width, generator=generator)
    pred = (gt * 0.3 + 0.1) * (1 + 0.1 * torch.randn(gt.shape, generator=generator))
    steps = [0]
    register_optimizer_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    factor = SINTEL_FRAMES / args.frames
    print(f"depth {tuple(gt.shape)} float32, torch threads {torch.get_num_threads()}, seconds "
          f"(and x{factor:g} for {SINTEL_FRAMES} frames)")
    runs = [(protocol, align, {}) for protocol, row in PROTOCOLS.items() for align in row.solvers]
    runs.append(("exact", "scale&shift", {"fit_pixels": FIT_PIXELS}))
    for protocol, align, options in runs:
        steps[0] = 0
        seconds = best_of(lambda: depth_metrics(pred, gt, align=align, protocol=protocol, post_clip_max=70.0, **options),
                          args.repeats)
        note = f"  Adam steps {steps[0] // args.repeats}" if steps[0] else ""
        note += "  (fit_pixels=2^20)" if options else ""
        print(f"  {protocol:8s} {align:12s} {seconds:8.2f} s  {seconds * factor:8.1f} s{note}")
    quaternions = torch.randn(90, 4, generator=generator, dtype=torch.float64)
    poses = make_pose(quaternion_to_rotation(quaternions), torch.randn(90, 3, generator=generator, dtype=torch.float64))
    noisy = poses.clone()
    noisy[:, :3, 3] += 0.01 * torch.randn(90, 3, generator=generator, dtype=torch.float64)
    print(f"  pose_metrics 90 frames          {best_of(lambda: pose_metrics(noisy, poses)) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
