"""Cost of Decoupled LoRA Control against its floor (issue 2 performance).

Floor: the frozen base forward + backward (gradients w.r.t. its inputs only) on both token streams
stacked as a batch of 2 — the work LoRA training cannot avoid. DLC: one One4DTransformer forward +
backward (LoRA rank 64 on both branches, a link after one of the layers). Two-pass: the unofficial
reimplementation's approach, two full passes of the whole model (one per modality, its adapter
switched between them) with a link only at the output. Same gradient checkpointing for all three.
Timings are interleaved rounds in one process (so machine noise hits all variants alike); peak memory
is measured per variant in a fresh subprocess (peak RSS growth during one step, after a warm-up step).

    python benchmarks/bench_dlc.py [--layers 2] [--frames 4] [--height 16] [--width 16] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

import psutil
import torch

from one4d.models import One4DTransformer, build_base_transformer
from one4d.models.lora import activate_adapter, lora_layers


def inputs(args, batch=1):
    generator = torch.Generator().manual_seed(0)
    f, h, w = args.frames, args.height, args.width
    return dict(
        rgb_input=torch.randn(batch, 36, f, h, w, generator=generator),
        xyz_input=torch.randn(batch, 16, f, h, w, generator=generator),
        timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=torch.randn(batch, 512, 4096, generator=generator),
        encoder_hidden_states_image=torch.randn(batch, 257, 1280, generator=generator),
    )


def build(args, variants=("floor", "dlc", "two_pass")):
    """The frozen floor base and the DLC model on the same random base weights (only those asked for)."""
    torch.manual_seed(0)
    base = build_base_transformer("wan2.1-fun-1.3b-inp", num_layers=args.layers)
    floor_base = model = None
    if "floor" in variants:
        floor_base = build_base_transformer("wan2.1-fun-1.3b-inp", num_layers=args.layers)
        floor_base.load_state_dict(base.state_dict())
        floor_base.requires_grad_(False)
        floor_base.enable_gradient_checkpointing()
    if {"dlc", "two_pass"} & set(variants):
        model = One4DTransformer(base, lora_rank=64, link_layers=[0])
        model.enable_gradient_checkpointing()
        base.enable_gradient_checkpointing()  # used only by the two-pass variant (DLC runs its own blocks)
    return floor_base, model


def floor_step(floor_base, batch):
    """Frozen base on [rgb; xyz padded] stacked as a batch of 2, gradients w.r.t. the inputs only."""
    xyz36 = torch.cat([batch["xyz_input"], torch.zeros_like(batch["rgb_input"][:, :20])], dim=1)
    stacked = torch.cat([batch["rgb_input"], xyz36]).requires_grad_(True)  # (2, 36, f, h, w)
    out = floor_base(
        stacked, batch["timestep"].repeat(2), batch["encoder_hidden_states"].repeat(2, 1, 1),
        batch["encoder_hidden_states_image"].repeat(2, 1, 1),
    ).sample
    out.square().mean().backward()


def dlc_step(model, batch):
    rgb, xyz = model(**batch)
    (rgb.square().mean() + xyz.square().mean()).backward()


def two_pass_step(model, batch):
    """Two full passes of the whole base (adapter switched in between), a link at the output only."""
    base = model.base
    layers = lora_layers(base)
    context = (batch["timestep"], batch["encoder_hidden_states"], batch["encoder_hidden_states_image"])
    xyz36 = torch.cat([batch["xyz_input"], torch.zeros_like(batch["rgb_input"][:, :20])], dim=1)
    activate_adapter(layers, "rgb")
    rgb = base(batch["rgb_input"], *context).sample
    activate_adapter(layers, "xyz")
    xyz = base(xyz36, *context).sample
    rgb = rgb + OUTPUT_LINK(xyz.movedim(1, -1)).movedim(-1, 1)  # (B, 16, f, h, w)
    # NB: with checkpointing inside base.forward, the recomputation of the RGB pass runs with the
    # xyz adapter active (the silent-wrong-gradient trap); the timing is what this measures.
    (rgb.square().mean() + xyz.square().mean()).backward()


OUTPUT_LINK = torch.nn.Linear(16, 16)  # the reimplementation's link on the output latents

VARIANTS = {"floor": floor_step, "dlc": dlc_step, "two_pass": two_pass_step}


def run_variant(name, floor_base, model, batch):
    if model is not None:
        model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    VARIANTS[name](floor_base if name == "floor" else model, batch)
    return time.perf_counter() - start


def peak_rss_growth(step) -> float:
    """Peak resident-memory growth (MiB) while ``step`` runs, sampled every millisecond by a thread."""
    process, peak, done = psutil.Process(), [0], threading.Event()
    before = process.memory_info().rss

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        step()
    finally:
        done.set()
        sampler.join()
    return (peak[0] - before) / 2**20


def memory_of(name, args) -> float:
    """Peak RSS growth (MiB) of one step of a variant, in a fresh process."""
    command = [sys.executable, __file__, "--memory-of", name, *sys.argv[1:]]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4, help="latent frames")
    parser.add_argument("--height", type=int, default=16, help="latent height")
    parser.add_argument("--width", type=int, default=16, help="latent width")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads; 1 by default because rank-64 GEMMs collapse under OpenMP "
                             "oversubscription when the machine is shared")
    parser.add_argument("--memory-of", default=None)
    args, _ = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    floor_base, model = build(args, [args.memory_of] if args.memory_of else VARIANTS)
    batch = inputs(args)

    if args.memory_of:  # a fresh process holding only this variant's model: first step, gradients included
        print(json.dumps({"peak_mib": peak_rss_growth(lambda: run_variant(args.memory_of, floor_base, model, batch))}))
        return

    tokens = args.frames * (args.height // 2) * (args.width // 2)
    print(f"1.3B width (dim 1536, ffn 8960), {args.layers} layers, link after layer 0, LoRA rank 64, "
          f"{tokens} tokens per stream, text 512 + image 257, fp32 CPU, {torch.get_num_threads()} threads")
    for name in VARIANTS:  # warm-up
        run_variant(name, floor_base, model, batch)
    times = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            times[name].append(run_variant(name, floor_base, model, batch))
    median = {name: statistics.median(values) for name, values in times.items()}
    memory = {name: memory_of(name, args) for name in VARIANTS}
    print("| variant | median s / fwd+bwd | ratio to floor | peak RSS growth (MiB) |")
    print("|---|---:|---:|---:|")
    for name in VARIANTS:
        print(f"| {name} | {median[name]:.3f} | {median[name] / median['floor']:.3f} | {memory[name]:.0f} |")


if __name__ == "__main__":
    main()
