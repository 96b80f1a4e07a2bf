"""Training throughput of the tiny preset on CPU: steps per second from the latent cache vs from raw clips.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py --steps 30

``--stage tiny_one4d`` (or ``tiny_base``) times a stage of ``make tiny-model`` on its own latent cache
(``outputs/tiny_model/cache``, written by the build) with the cache reader as it is and as it was before it kept
its shards open (a shard opened, its header parsed, for every tensor read), alternating the two:

    .venv/bin/python benchmarks/bench_train.py --stage tiny_one4d --steps 30 --rounds 3 --threads 2

With ``--compile`` it times the stage eager against ``train.compile=true`` (inductor, regional: each base block)
instead, and reports how long the compiling first steps took:

    .venv/bin/python benchmarks/bench_train.py --stage tiny_one4d --compile --steps 30 --rounds 3 --threads 2

With ``--processes`` it runs the stage as ``make tiny-model`` does, ``scripts/train.py`` as one process on all the
threads against torchrun with one process of one thread per thread (the same global batch and draws), alternating,
and reads the seconds of each step after the compiling first ones from the trainer's log; trailing Hydra overrides
point it at another build's files:

    .venv/bin/python benchmarks/bench_train.py --stage tiny_one4d --processes --steps 40 --rounds 2 --threads 2 \
        model.transformer=O/base model.components=O/base data.cache=W/cache 'data.roots=[W/clips]'

The GPU measurement of the 14B step (81 x 352 x 624, bf16, checkpointing) needs an H100-class GPU; run
with --preset wan2.1-fun-14b-inp on one (not done on the 2-core CPU machine).
"""

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import one4d.training.cache as cache_module
from one4d.training.cache import LatentCacheDataset, cache_from_config
from one4d.training.testing import compose_train_config, write_synthetic_clips
from one4d.training.trainer import check_config, trainer_class


class ReopeningCache(LatentCacheDataset):
    """The reader before 2026-12-05: every tensor read opened its shard (and parsed its header) again."""

    def read(self, index: int, name: str):
        try:
            return super().read(index, name)
        finally:
            self._handles.clear()


def batch_of(overrides: list[str]) -> int:
    """The stage's batch on one process (``train.global_batch_size`` when set, as the tiny experiments do)."""
    return check_config(compose_train_config(overrides), world_size=1)


def steps_per_second(overrides: list[str], steps: int, timings: dict | None = None) -> float:
    """Steps per second after two warm-up steps (whose seconds go to ``timings["warm_up_s"]``: the compile, if any)."""
    cfg = compose_train_config(overrides + ["train.steps=2"])
    trainer = trainer_class(cfg)(cfg).setup()
    started = time.perf_counter()
    trainer.train()  # warm-up
    if timings is not None:
        timings["warm_up_s"] = time.perf_counter() - started
    trainer.cfg.train.steps = 2 + steps
    started = time.perf_counter()
    trainer.train()
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--stage", choices=["tiny_base", "tiny_one4d"], default=None,
                        help="time this stage of make tiny-model on its cache, new reader against the old")
    parser.add_argument("--rounds", type=int, default=2, help="with --stage: alternating rounds of each reader")
    parser.add_argument("--compile", action="store_true", help="with --stage: eager against train.compile=true")
    parser.add_argument("--processes", action="store_true",
                        help="with --stage: one process on --threads threads against that many processes of one thread")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="with --stage --processes: Hydra overrides for both runs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage and args.processes:
        return compare_processes(args)
    if args.stage:
        return compare_compiled(args) if args.compile else compare_cache_readers(args)
    folder = Path(tempfile.mkdtemp())
    clips = write_synthetic_clips(folder / "clips", count=4, num_frames=args.frames, size=args.size)
    common = ["experiment=tiny_cpu", "train.report_to=null", "train.progress_bar=false", "train.checkpoint_every=0",
              "train.log_every=0", f"data.num_frames={args.frames}", f"data.height={args.size}", f"data.width={args.size}"]
    cache = cache_from_config(compose_train_config(common + [f"data.roots=[{clips}]", f"run_dir={folder}/c", f"+cache_dir={folder}/cache"]))
    raw = steps_per_second(common + [f"data.roots=[{clips}]", f"run_dir={folder}/raw"], args.steps)
    cached = steps_per_second(common + [f"data.cache={cache}", f"run_dir={folder}/cached"], args.steps)
    print(f"tiny preset, {args.frames} frames at {args.size}x{args.size}, batch 1, {torch.get_num_threads()} thread(s)")
    print(f"raw clips : {raw:.2f} steps/s")
    print(f"cache     : {cached:.2f} steps/s  ({cached / raw:.1f}x)")


def stage_overrides(stage: str) -> list[str]:
    return [f"experiment={stage}", f"run_dir={tempfile.mkdtemp()}/run", "train.log_every=0",
            "train.checkpoint_every=0", "train.report_to=null", "train.progress_bar=false"]


def compare_compiled(args) -> None:
    overrides = stage_overrides(args.stage)
    rates, warm_up = {"eager": [], "compiled": []}, {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name, extra in (("eager", []), ("compiled", ["train.compile=true"])):
            torch._dynamo.reset()  # every compiled round compiles afresh
            timings = {}
            rates[name].append(steps_per_second(overrides + extra, args.steps, timings))
            warm_up[name].append(timings["warm_up_s"])
    print(f"{args.stage} on its cache, batch {batch_of(overrides)}, {torch.get_num_threads()} thread(s), "
          f"{args.steps} steps x {args.rounds} rounds")
    for name, values in rates.items():
        print(f"{name:9s}: {1 / max(values):.3f} s/step (rounds: {', '.join(f'{1 / v:.3f}' for v in values)}; "
              f"{max(values) / max(rates['eager']):.2f}x eager's steps/s); first two steps {min(warm_up[name]):.0f} s")


def compare_cache_readers(args) -> None:
    overrides = stage_overrides(args.stage)
    rates = {"kept open": [], "reopened per read": []}
    for _ in range(args.rounds):
        for name, reader in (("reopened per read", ReopeningCache), ("kept open", LatentCacheDataset)):
            cache_module.LatentCacheDataset = reader
            try:
                rates[name].append(steps_per_second(overrides, args.steps))
            finally:
                cache_module.LatentCacheDataset = LatentCacheDataset
    print(f"{args.stage} on its cache, batch {batch_of(overrides)}, {torch.get_num_threads()} thread(s), "
          f"{args.steps} steps x {args.rounds} rounds")
    old = max(rates["reopened per read"])  # each reader's best round: the least disturbed by the machine
    for name, values in rates.items():
        print(f"{name:18s}: {1 / max(values):.3f} s/step (rounds: {', '.join(f'{1 / v:.3f}' for v in values)}; "
              f"{max(values) / old:.2f}x the old reader's steps/s)")


def compare_processes(args, warm_up: int = 5) -> None:
    from one4d.training.tiny_model import training_command

    threads = torch.get_num_threads()
    seconds = {1: [], threads: []}
    for _ in range(args.rounds):
        for processes in seconds:
            overrides = [f"run_dir={tempfile.mkdtemp()}/run", f"train.steps={warm_up + args.steps}", "train.log_every=1",
                         "train.checkpoint_every=0", *args.overrides]
            result = subprocess.run(training_command(args.stage, overrides, processes), capture_output=True, text=True)
            if result.returncode:
                raise SystemExit(result.stderr[-2000:])
            steps = [float(value) for value in re.findall(r"step_seconds=([0-9.]+)", result.stdout)][warm_up:]
            seconds[processes].append(sum(steps) / len(steps))
    print(f"{args.stage}, global batch {batch_of([f'experiment={args.stage}', *args.overrides])}, {args.steps} steps after "
          f"{warm_up} x {args.rounds} rounds, mean seconds a step per round")
    one, many = seconds[1], seconds[threads]
    print(f"1 process x {threads} threads : {', '.join(f'{value:.3f}' for value in one)}")
    print(f"{threads} processes x 1 thread: {', '.join(f'{value:.3f}' for value in many)}  "
          f"({min(one) / min(many):.2f}x best against best, {sum(one) / sum(many):.2f}x mean against mean)")


if __name__ == "__main__":
    main()
