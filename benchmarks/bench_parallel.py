"""Sampling across processes: CFG-parallel and Ulysses speed-up of a One4D denoising step over one process (issue 16).

    python benchmarks/bench_parallel.py [--shapes tiny,1.3b] [--out outputs/bench_parallel.json]   # CPU, 2 processes
    python benchmarks/bench_parallel.py --gpu [--gpus 1,2,4,8] [--blocks 40]                        # one node, 8 GPUs

What is timed: the DLC forward of one denoising step as the pipeline runs it (conditional and unconditional
passes, batch 2; the scheduler step and guidance sum are element-wise and negligible), random weights, the
layout applied by the code ``scripts/sample.py`` uses (``one4d.parallel.start`` + ``parallelize``). One warm-up,
then the best of ``--repeats`` (every rank starts each repeat together, after a barrier).

CPU (gloo): each shape runs 1 process with 1 thread (the reference), 1 process with 2 threads (the same two
cores used by threads instead of processes), and 2 processes of 1 thread with ``parallel.cfg=2`` and with
``parallel.ulysses=2``; the ratios are reference seconds / case seconds. Also the CPU seconds of the busiest
rank (``time.process_time``, gloo's threads included): on a machine other jobs share, two processes seldom get two
whole cores, and this ratio is the speed-up they would have with a core each (the work split, communication in).
  tiny   the tiny preset (4 blocks, dim 32), 5 x 16 x 24 latents: 480 tokens per branch
  1.3b   the 1.3B width (dim 1536, 12 x 128 heads, ffn 8960) cut to ``--blocks-1.3b`` blocks (default 1, one link),
         3 x 20 x 26 latents: 390 tokens per branch; UMT5 512 x 4096 and CLIP 257 x 1280 context

GPU (NCCL, ``torchrun --nproc_per_node N`` per row): the 14B width (dim 5120, 40 x 128 heads) with ``--blocks``
blocks (default 40, the whole model in bf16: 33 GB a GPU) at the paper's shape, 81 x 352 x 624 -> 21 x 44 x 78
latents, 18,018 tokens per branch, on 1 GPU, 2 (CFG 2), 4 (CFG 2 x Ulysses 2) and 8 (CFG 2 x Ulysses 4: 18,018
tokens padded to 18,020, padded keys masked). Reported: seconds per step, the speed-up over 1 GPU, and 50 steps
(a paper sample's transformer time; text/image encoding, VAE and post-optimisation are not included). Goal: 6x
on 8 GPUs (Wan2.1 I2V-14B reaches 6.25x with Ulysses 8). The machines lent to this project have one GPU, so only
the 1-GPU row can run there; the other rows need a multi-GPU node.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # preset, latent (f, h, w), blocks (None: the preset's)
    "tiny": ("tiny", (5, 16, 24), None),
    "1.3b": ("wan2.1-fun-1.3b-inp", (3, 20, 26), 1),
    "14b": ("wan2.1-fun-14b-inp", (21, 44, 78), 40),
}
CPU_CASES = (  # name, processes, threads, cfg, ulysses
    ("1 process, 1 thread", 1, 1, 1, 1),
    ("1 process, 2 threads", 1, 2, 1, 1),
    ("2 processes, parallel.cfg=2", 2, 1, 2, 1),
    ("2 processes, parallel.ulysses=2", 2, 1, 1, 2),
)
GPU_LAYOUTS = {1: (1, 1), 2: (2, 1), 4: (2, 2), 8: (2, 4)}  # GPUs -> (cfg, ulysses)
STEPS = 50


def worker(args) -> None:
    """One case, in every process torchrun started (or alone): build, parallelise, time; rank 0 writes the JSON."""
    import torch

    from one4d.models import build_model
    from one4d.models.presets import TEXT_TOKENS
    from one4d.parallel import layout_from_config, parallelize, start, stop

    torch.set_num_threads(args.threads)
    layout = layout_from_config({"cfg": args.cfg, "ulysses": args.ulysses})
    device = torch.device("cuda", layout.local_rank) if args.gpu else torch.device("cpu")
    dtype = torch.bfloat16 if args.gpu else torch.float32
    preset, (f, h, w), blocks = SHAPES[args.shape]
    blocks = args.blocks or blocks
    torch.manual_seed(0)
    model = build_model("dlc", preset, device=device, dtype=dtype, lora_rank=64 if args.gpu else 8,
                        base_overrides={"num_layers": blocks} if blocks else None,
                        attention_backend=args.attention_backend).eval()
    config = model.base.config
    if layout.distributed:
        parallelize(model, layout, start(layout, device))
    generator = torch.Generator(device).manual_seed(1)
    rgb = torch.randn(2, config.in_channels, f, h, w, generator=generator, device=device, dtype=dtype)
    xyz = torch.randn(2, 16, f, h, w, generator=generator, device=device, dtype=dtype)
    timestep = torch.full((2,), 500.0, device=device)
    text = torch.randn(2, TEXT_TOKENS, config.text_dim, generator=generator, device=device)
    image = torch.randn(2, 257, config.image_dim, generator=generator, device=device) if config.image_dim else None

    def step() -> tuple[float, float]:
        """Wall-clock and this process's CPU seconds of one step."""
        if layout.distributed:
            torch.distributed.barrier()
        if args.gpu:
            torch.cuda.synchronize(device)
        began, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            model(rgb, xyz, timestep, text, image)
        if args.gpu:
            torch.cuda.synchronize(device)
        return time.perf_counter() - began, time.process_time() - cpu

    step()  # warm-up
    steps = [step() for _ in range(args.repeats)]
    seconds, cpu_seconds = min(wall for wall, _ in steps), min(cpu for _, cpu in steps)
    if layout.distributed:  # the slowest rank decides when the step is done everywhere
        times = [None] * layout.world_size
        torch.distributed.all_gather_object(times, (seconds, cpu_seconds))
        seconds, cpu_seconds = (max(t[i] for t in times) for i in (0, 1))
    if layout.rank == 0:
        Path(args.result).write_text(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "tokens": f * h * w // 4,
                                                 "blocks": len(model.base.blocks)}))
    stop()


def run_case(shape: str, processes: int, threads: int, cfg: int, ulysses: int, args) -> dict:
    """Start one case (under torchrun when it has several processes) and read what rank 0 measured."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        case = [str(Path(__file__).resolve()), "--worker", "--shape", shape, "--threads", str(threads), "--cfg", str(cfg),
                "--ulysses", str(ulysses), "--repeats", str(args.repeats), "--result", str(result)]
        case += (["--gpu"] if args.gpu else []) + (["--blocks", str(args.blocks)] if args.blocks else [])
        case += ["--attention-backend", args.attention_backend] if args.attention_backend else []
        launcher = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                          "--nproc_per_node", str(processes)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        done = subprocess.run(launcher + case, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            tail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            return {"error": tail}
        return json.loads(result.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench_parallel.json")
    parser.add_argument("--shapes", default="tiny,1.3b", help="CPU shapes: tiny, 1.3b")
    parser.add_argument("--gpu", action="store_true", help="the 14B width on 1, 2, 4, 8 GPUs (NCCL)")
    parser.add_argument("--gpus", default="1,2,4,8", help="GPU counts to run with --gpu")
    parser.add_argument("--blocks", type=int, default=None, help="blocks of the base (default: 40 for --gpu, 1 for 1.3b)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention-backend", default=None, help="diffusers backend (padding at 8 GPUs needs native or _native_cudnn)")
    # one case (started by main)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cfg", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--ulysses", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    import torch

    rows = []
    if args.gpu:
        if not torch.cuda.is_available():
            print("error: --gpu needs CUDA; without it run the CPU benchmark (no --gpu)", file=sys.stderr)
            return 2
        counts = [int(n) for n in args.gpus.split(",")]
        if max(counts) > torch.cuda.device_count():
            print(f"error: --gpus {args.gpus} but this machine has {torch.cuda.device_count()} GPU(s); "
                  f"pass --gpus {','.join(str(n) for n in counts if n <= torch.cuda.device_count())}", file=sys.stderr)
            return 2
        for count in counts:
            cfg, ulysses = GPU_LAYOUTS[count]
            rows.append({"shape": "14b", "case": f"{count} GPU(s), cfg {cfg} x ulysses {ulysses}",
                         **run_case("14b", count, 1, cfg, ulysses, args)})
            print(rows[-1], flush=True)
    else:
        for shape in args.shapes.split(","):
            for name, processes, threads, cfg, ulysses in CPU_CASES:
                rows.append({"shape": shape, "case": name, **run_case(shape, processes, threads, cfg, ulysses, args)})
                print(rows[-1], flush=True)
    for row in rows:
        reference = next(r for r in rows if r["shape"] == row["shape"] and "seconds" in r)
        if "seconds" in row:
            row["speedup"] = reference["seconds"] / row["seconds"]
            row["cpu_speedup"] = reference["cpu_seconds"] / row["cpu_seconds"]
            row["sample_50_steps_s"] = STEPS * row["seconds"]
    print(f"\n| shape | case | tokens/branch | blocks | s/step | speed-up | CPU s/step (busiest rank) | speed-up in CPU time | "
          f"{STEPS} steps |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if "seconds" in row:
            print(f"| {row['shape']} | {row['case']} | {row['tokens']} | {row['blocks']} | {row['seconds']:.3f} | "
                  f"{row['speedup']:.2f}x | {row['cpu_seconds']:.3f} | {row['cpu_speedup']:.2f}x | {row['sample_50_steps_s']:.0f} s |")
        else:
            print(f"| {row['shape']} | {row['case']} | | | failed: {row['error']} | | | | |")
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
                         + (f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if args.gpu else ""),
              "torch": torch.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
