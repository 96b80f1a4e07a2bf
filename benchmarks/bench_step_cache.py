"""Step caching (issue 16 item 5): speed-up against the change in the output, on the shipped tiny One4D at the
demo's setting (``one4d.demo.DemoSettings``: the checkpoint's clip size, UniPC steps, CFG and shift, the held-out
seeds, the three tasks), on the CPU.

For each (task, seed) every threshold is run back to back (so machine noise hits them alike); 0 is the
uncached sampler. Reported per threshold: the share of guidance-pass steps whose blocks were skipped, the
transformer's time (forward hooks) and the whole call's time (denoising, decode, post-optimisation) as
speed-ups over threshold 0, RGB PSNR and pointmap error (mean Euclidean distance of the decoded normalised
pointmaps, in [-1, 1] units) against the uncached sample of the same seed, and the demo's depth Abs Rel
against the scene's true depth (``one4d.demo.score``: scale & shift alignment).

    python benchmarks/bench_step_cache.py [--thresholds 0.05,0.1,0.2] [--threads 1] [--seeds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from one4d.demo import CHECKPOINT, DemoSettings, load_demo_pipeline, run_task
from one4d.pipeline.step_cache import disable_step_cache, enable_step_cache


def transformer_timer(pipe) -> dict:
    """Accumulate the wall time of every transformer forward into the returned dict's "seconds"."""
    timer = {"seconds": 0.0, "start": 0.0}
    pipe.transformer.register_forward_pre_hook(lambda *_: timer.__setitem__("start", time.perf_counter()))
    pipe.transformer.register_forward_hook(
        lambda *_: timer.__setitem__("seconds", timer["seconds"] + time.perf_counter() - timer["start"]))
    return timer


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", default="0.05,0.1,0.2", help="comma-separated positive thresholds (0 is always run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3, help="how many of the demo's held-out seeds")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per sample (the fastest counts)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    thresholds = [0.0, *[float(t) for t in args.thresholds.split(",")]]
    settings = DemoSettings()
    settings.seeds = settings.seeds[: args.seeds]
    torch.manual_seed(0)
    pipe = load_demo_pipeline(Path(CHECKPOINT), settings)
    timer = transformer_timer(pipe)
    rows = {t: {"skipped": [], "transformer": [], "call": [], "psnr": [], "xyz": [], "abs_rel": []} for t in thresholds}
    run_task(pipe, "full", settings.seeds[0], settings, None)  # warm-up
    for task in settings.tasks:
        for seed in settings.seeds:
            reference = None
            for round_index in range(args.rounds):  # the thresholds interleaved; the fastest round of each counts
                for threshold in thresholds:
                    cache = enable_step_cache(pipe, threshold) if threshold > 0 else None
                    timer["seconds"] = 0.0
                    try:
                        _, output, _, metrics, _, seconds = run_task(pipe, task, seed, settings, None)
                    finally:
                        if cache is not None:
                            disable_step_cache(pipe)
                    row = rows[threshold]
                    if round_index > 0:  # the outputs are the same every round: only the times are kept
                        row["transformer"][-1] = min(row["transformer"][-1], timer["seconds"])
                        row["call"][-1] = min(row["call"][-1], seconds)
                        continue
                    forwards = sum(cache.stats.computed) if cache else 0
                    total = forwards + cache.stats.skipped_rows if cache else 1
                    row["skipped"].append(cache.stats.skipped_rows / total if cache else 0.0)
                    row["transformer"].append(timer["seconds"])
                    row["call"].append(seconds)
                    row["abs_rel"].append(metrics["abs_rel"])
                    if reference is None:
                        reference = output
                    row["psnr"].append(psnr(output.rgb, reference.rgb))
                    row["xyz"].append(float(np.linalg.norm(output.normalized_pointmaps - reference.normalized_pointmaps, axis=-1).mean()))
            print(f"{task} seed {seed}: " + ", ".join(
                f"t={t:g} skip {rows[t]['skipped'][-1]:.0%} {rows[t]['transformer'][-1]:.2f}s" for t in thresholds), flush=True)
    base_transformer, base_call = sum(rows[0.0]["transformer"]), sum(rows[0.0]["call"])
    print(f"\n{len(settings.tasks) * len(settings.seeds)} samples per threshold (tasks {', '.join(settings.tasks)}; "
          f"seeds {', '.join(map(str, settings.seeds))}), {settings.steps} steps, CFG {settings.guidance_scale:g}, "
          f"{settings.num_frames} frames at {settings.height}x{settings.width}, {args.threads} thread(s), "
          f"fastest of {args.rounds} rounds\n")
    print("| threshold | steps skipped | transformer speed-up | whole call speed-up | RGB PSNR vs uncached (dB) "
          "| pointmap error vs uncached | depth Abs Rel (demo) |")
    print("|---|---|---|---|---|---|---|")
    for t in thresholds:
        row = rows[t]
        finite = [p for p in row["psnr"] if math.isfinite(p)]
        shown_psnr = "identical" if not finite else f"{np.mean(finite):.1f} (min {min(finite):.1f})"
        print(f"| {t:g}{' (off)' if t == 0 else ''} | {np.mean(row['skipped']):.0%} | {base_transformer / sum(row['transformer']):.2f}x "
              f"| {base_call / sum(row['call']):.2f}x | {shown_psnr} | {np.mean(row['xyz']):.4f} | {np.mean(row['abs_rel']):.3f} |")


if __name__ == "__main__":
    main()
