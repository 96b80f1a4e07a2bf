"""One4D at the 14B width on one CUDA GPU: a DLC training step and a CFG + DLC sampling step, in seconds,
peak memory and TFLOP/s, extrapolated to the 40 blocks of the full model.

    python benchmarks/bench_gpu.py [--out outputs/bench_gpu.json] [--blocks 4] [--attention-backend flash] [--tiny]

Model: preset ``wan2.1-fun-14b-inp`` (dim 5120, 40 x 128 heads, ffn 13824) cut to ``--blocks`` blocks, random
bf16 weights built on the GPU, DLC with rank-64 LoRAs and one control link after the last block (so a link
is among the few blocks). Input: an 81 x 352 x 624 clip -> latents 21 x 44 x 78 -> 18,018 tokens per
branch; UMT5 text 512 x 4096 and CLIP 257 x 1280 context, fp32 as the trainer passes them.

Cases, each on a freshly built model (an OOM is recorded and the next case runs; a case is skipped with a
message when less of ``--budget-s``, 400 s from the start, is left than the longest case so far took, so the
whole run stays within 8 minutes; repeats shrink to fit each case's share):
  train_bf16      forward + backward (MSE on both outputs) + AdamW on the fp32 trainables; batch 1,
                  per-block gradient checkpointing, base in bf16
  train_fp8       the same, the base's block Linears stored in fp8 (``enable_fp8_base_storage``)
  sample_bf16     one CFG + DLC step as the pipeline runs it: conditional + unconditional batched
                  (batch 2, bf16 inputs), no grad, the base resident in bf16
  sample_fp8      the same, fp8 base storage
  sample_offload  the same, the base built on the CPU with block-level group offload to the GPU
                  (``enable_base_group_offload``)
Links stay fp32 and run without TF32 (torch's default; the trainer sets nothing else).

Measured: seconds per step (warm-up, then the median of repeats, torch.cuda.synchronize around each);
memory after building (weights), after a step (resident: + gradients and AdamW states when training) and
the peak (torch.cuda.max_memory_allocated, reset per case after gc + empty_cache).

FLOPs, counted from the shapes (a multiply-add is 2; per sample and block, L video tokens per branch,
C = 512 + 257 context tokens, D = 5120, F = 13824, r = 64):
  block linears      2L(6D^2 + 2DF) per branch    attn1 q k v o, attn2 q o, ffn up and down
  context K/V        4CD^2 once for both branches attn2 k v and add_k add_v (shared: one4d/models/sharing.py)
  LoRA               2r(12LD + 2L(D + F) + 4CD) per branch, on the 12 block linears
  self-attention     4L^2 D per branch            QK^T and PV
  cross-attention    4LCD per branch
  link               4LD^2 per link               both directions
  outside the blocks 2L·4·(36 + 16)·D patch embeddings, 2·2L·D·64 heads, the text and image embedders
  forward(B, N) = B [N (2 (linears + LoRA + self + cross) + context K/V) + links + outside]
  sampling step = forward(2, N): 4 base forwards (2 branches x CFG 2).
  training step = 4 forward(1, N): forward, its recomputation under checkpointing, and a backward of 2
  forwards (the usual convention). The frozen base computes no weight gradients, so ``flops_executed``
  in the JSON counts its block linears 3x and the context K/V 2x.
TFLOP/s = FLOPs / seconds; the fraction of the device's dense bf16 peak comes from PEAK_BF16_TFLOPS.

Extrapolation to 40 blocks (an estimate, not a measurement; 40 blocks have 5 links, default_link_layers):
  seconds      (t - n·t_link) · 40 / N + 5 t_link: blocks scale linearly, links are timed alone (fp32;
               training: forward + backward + the recomputed forward) since N blocks here carry n = 1 link;
               the small parts outside the blocks (embeddings, heads, their optimiser step) are scaled too.
  resident     (measured resident - N·block - n·link) + 40·block + 5·link, where block and link are the
               bytes of one block's / link's parameters on the GPU (+ gradients and 2 AdamW states of the
               trainable ones when training; a block is 0 with offload, whose blocks live on the CPU): the
               measured non-block part is kept as it is.
  peak         resident at 40 + (peak - resident) measured here + for training (40 - N) more checkpointed
               block inputs (2 branches x L x D in bf16 each).
  weights      as resident, from the memory after building, parameters only.

--tiny: the same code on the CPU at the tiny preset and a 2 x 4 x 6 latent grid (12 tokens per branch), to
test this script; its times mean nothing (the JSON says so) and there are no memory numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# one4d (diffusers + peft, ~5 s to import) is imported inside the functions that use it, so a machine
# without CUDA is told so at once.

START = time.perf_counter()
GiB = 2**30
LORA_RANK = 64
LINKS_AT_40 = 5  # len(default_link_layers(40))
FULL_BLOCKS = 40

# Dense bf16 tensor-core peaks in TFLOP/s: NVIDIA's H100, H200 and A100 datasheets (nvidia.com), whose bf16
# figures for Hopper are quoted with 2:4 sparsity and are halved here. Matched in order against
# torch.cuda.get_device_name ("NVIDIA H100 80GB HBM3" is the SXM part).
PEAK_SOURCE = "NVIDIA datasheets: H100 (SXM 1979 / NVL 1671 / PCIe 1513 sparse), H200 (SXM 1979 / NVL 1671 sparse), A100 (312 dense)"
PEAK_BF16_TFLOPS = (
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "train" or "sample"
    storage: str  # "bf16", "fp8" or "offload" (bf16 weights on the CPU, moved per block)
    what: str


CASES = (
    Case("train_bf16", "train", "bf16", "fwd + bwd + AdamW, batch 1, checkpointing, bf16 base"),
    Case("train_fp8", "train", "fp8", "fwd + bwd + AdamW, batch 1, checkpointing, fp8 base storage"),
    Case("sample_bf16", "sample", "bf16", "CFG + DLC forward, batch 2, no grad, bf16 base resident"),
    Case("sample_fp8", "sample", "fp8", "CFG + DLC forward, batch 2, no grad, fp8 base storage"),
    Case("sample_offload", "sample", "offload", "CFG + DLC forward, batch 2, no grad, block-level group offload"),
)


@dataclass(frozen=True)
class Workload:
    """The model width and the token grid of the benchmark."""

    preset: str
    blocks: int
    video: tuple[int, int, int]  # frames, height, width in pixels (for the record)
    latent: tuple[int, int, int]  # f, h, w
    text_tokens: int
    image_tokens: int
    dim: int
    heads: int
    head_dim: int
    ffn: int
    text_dim: int
    image_dim: int
    in_channels: int
    out_channels: int
    patch: int  # elements of one patch (1 x 2 x 2)
    lora_rank: int = LORA_RANK

    @property
    def tokens(self) -> int:
        """Video tokens per branch and sample."""
        return math.prod(self.latent) // self.patch

    @property
    def link_layers(self) -> list[int]:
        return [self.blocks - 1]


def workload(tiny: bool, blocks: int) -> Workload:
    from one4d.models.presets import TEXT_TOKENS, preset_config

    preset = "tiny" if tiny else "wan2.1-fun-14b-inp"
    config = preset_config(preset, num_layers=blocks)
    video, latent = ((5, 32, 48), (2, 4, 6)) if tiny else ((81, 352, 624), (21, 44, 78))
    return Workload(
        preset=preset, blocks=blocks, video=video, latent=latent, text_tokens=TEXT_TOKENS, image_tokens=257,
        dim=config["num_attention_heads"] * config["attention_head_dim"], heads=config["num_attention_heads"],
        head_dim=config["attention_head_dim"], ffn=config["ffn_dim"], text_dim=config["text_dim"],
        image_dim=config["image_dim"], in_channels=config["in_channels"], out_channels=config["out_channels"],
        patch=math.prod(config["patch_size"]),
    )


# ---------------------------------------------------------------------------------------------- FLOPs


def forward_flops(w: Workload, batch: int, blocks: int, links: int) -> dict[str, float]:
    """FLOPs of one DLC forward by part (the formulas of the module docstring)."""
    L, C, D, F, r = w.tokens, w.text_tokens + w.image_tokens, w.dim, w.ffn, w.lora_rank
    per_branch = {
        "block_linears": 2 * L * (6 * D**2 + 2 * D * F),
        "lora": 2 * r * (12 * L * D + 2 * L * (D + F) + 4 * C * D),
        "self_attention": 4 * L**2 * D,
        "cross_attention": 4 * L * C * D,
    }
    parts = {name: batch * blocks * 2 * value for name, value in per_branch.items()}
    parts["context_kv"] = batch * blocks * 4 * C * D**2
    parts["links"] = batch * links * 4 * L * D**2
    parts["outside_blocks"] = batch * (
        2 * L * w.patch * (w.in_channels + 16) * D  # RGB and XYZ patch embeddings
        + 2 * 2 * L * D * w.out_channels * w.patch  # RGB and XYZ heads
        + 2 * w.text_tokens * (w.text_dim * D + D**2)  # text embedder
        + 2 * w.image_tokens * (w.image_dim**2 + w.image_dim * D)  # image embedder
    )
    return {name: float(value) for name, value in parts.items()}


def step_flops(w: Workload, kind: str, blocks: int, links: int) -> tuple[float, float]:
    """(FLOPs by the usual convention, FLOPs executed) of one step with ``blocks`` blocks and ``links`` links."""
    if kind == "sample":
        total = sum(forward_flops(w, 2, blocks, links).values())
        return total, total
    parts = forward_flops(w, 1, blocks, links)
    total = 4 * sum(parts.values())
    return total, total - parts["block_linears"] - 2 * parts["context_kv"]


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value
    return None


# ---------------------------------------------------------------------------------------------- the cases


def build(case: Case, w: Workload, device: str, attention_backend: str | None):
    """A fresh DLC model of the case: bf16 weights on ``device``, fp8 storage, or blocks offloaded to the CPU."""
    from one4d.models import build_model
    from one4d.storage import check_precision, enable_base_group_offload, enable_fp8_base_storage

    storage = torch.float8_e4m3fn if case.storage == "fp8" else None
    check_precision(torch.bfloat16, device, storage)
    torch.manual_seed(0)
    model = build_model(
        "dlc", w.preset, device="cpu" if case.storage == "offload" else device, dtype=torch.bfloat16,
        base_overrides={"num_layers": w.blocks}, attention_backend=attention_backend,
        lora_rank=w.lora_rank, link_layers=w.link_layers,
    )
    if storage is not None:
        enable_fp8_base_storage(model, storage)
    if case.storage == "offload":
        enable_base_group_offload(model, device)
    return model


def inputs(case: Case, w: Workload, device: str) -> dict:
    """The model's inputs: fp32 latents and embeddings for training (as the trainer passes them), bf16 for
    sampling (as the pipeline casts them), with the unconditional text batched after the conditional."""
    generator = torch.Generator(device).manual_seed(0)
    batch, dtype = (1, torch.float32) if case.kind == "train" else (2, torch.bfloat16)

    def randn(*shape):
        return torch.randn(shape, generator=generator, device=device).to(dtype)

    return dict(
        rgb_input=randn(batch, w.in_channels, *w.latent),  # (B, 36, f, h, w): noisy 16 + mask 4 + condition 16
        xyz_input=randn(batch, 16, *w.latent),  # (B, 16, f, h, w)
        timestep=torch.full((batch,), 500.0, device=device),  # (B,)
        encoder_hidden_states=randn(batch, w.text_tokens, w.text_dim),  # (B, 512, 4096): conditional, unconditional
        encoder_hidden_states_image=randn(1, w.image_tokens, w.image_dim).expand(batch, -1, -1),  # (B, 257, 1280)
    )


def parameter_bytes(module, training: bool) -> tuple[int, int]:
    """(weights, state) bytes of a module's parameters as stored (fp8, bf16 or fp32); state adds, for the
    trainable ones when training, a gradient and AdamW's two moments of the same size."""
    weights = state = 0
    for p in module.parameters():
        size = p.numel() * p.element_size()
        weights += size
        state += size * (4 if training and p.requires_grad else 1)
    return weights, state


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def seconds_each(function, repeats: int, device: str) -> list[float]:
    """Wall seconds of ``repeats`` calls, the device synchronised before and after each."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def link_seconds(model, kind: str, w: Workload, device: str, repeats: int) -> float:
    """One control link alone on bf16 (B, L, D) features: forward at batch 2 when sampling; when training,
    forward + backward at batch 1 plus one more forward (its recomputation under checkpointing)."""
    link = next(iter(model.links.values()))
    batch = 2 if kind == "sample" else 1
    z_rgb, z_xyz = torch.randn(2, batch, w.tokens, w.dim, device=device, dtype=torch.bfloat16)  # (B, L, D) each
    with torch.no_grad():
        forward = statistics.median(seconds_each(lambda: link(z_rgb, z_xyz), repeats, device))
    if kind == "sample":
        return forward
    z_rgb.requires_grad_(True)
    z_xyz.requires_grad_(True)
    grads = torch.ones_like(z_rgb), torch.ones_like(z_xyz)

    def forward_backward():
        torch.autograd.backward(link(z_rgb, z_xyz), grads)

    total = statistics.median(seconds_each(forward_backward, repeats, device)) + forward
    model.zero_grad(set_to_none=True)
    return total


def trainable_norms(model) -> torch.Tensor:
    return torch.stack([p.detach().float().norm() for p in model.trainable_parameters()])


def run_case(case: Case, w: Workload, device: str, args, allowance_s: float, peak_device: float | None) -> dict:
    """Build, warm up, time and measure one case; ``allowance_s`` caps its repeats, ``peak_device`` is in TFLOP/s."""
    from one4d.training.objective import FlowMatchingObjective

    case_start = time.perf_counter()
    cuda = device == "cuda"
    model = build(case, w, device, args.attention_backend)
    build_s = time.perf_counter() - case_start
    weights = torch.cuda.memory_allocated() if cuda else None
    batch = inputs(case, w, device)
    result = {"build_seconds": build_s}

    if case.kind == "train":
        model.train()
        model.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
        targets = {key: torch.randn(1, 16, *w.latent, device=device) for key in ("rgb", "xyz")}  # (1, 16, f, h, w)
        before = trainable_norms(model)
        losses = []

        def step():
            optimizer.zero_grad(set_to_none=True)
            rgb, xyz = model(**batch)  # (1, 16, f, h, w) each
            loss, _ = FlowMatchingObjective.loss({"rgb": rgb, "xyz": xyz}, targets, {"rgb": 1.0, "xyz": 1.0})
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    else:
        model.eval()

        @torch.no_grad()
        def step():
            model(**batch)  # (2, 16, f, h, w) x 2, dropped

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    warm = seconds_each(step, args.warmup, device)
    resident = torch.cuda.memory_allocated() if cuda else None
    remaining = allowance_s - (time.perf_counter() - case_start)
    repeats = max(1, min(args.repeats, int(remaining / (2 * max(warm)))))  # half for the steps, half for the rest
    times = seconds_each(step, repeats, device)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    seconds = statistics.median(times)
    t_link = link_seconds(model, case.kind, w, device, repeats)

    n_links = len(w.link_layers)
    flops, executed = step_flops(w, case.kind, w.blocks, n_links)
    flops_40, _ = step_flops(w, case.kind, FULL_BLOCKS, LINKS_AT_40)
    result.update(
        seconds=seconds, seconds_each=times, warmup_seconds=warm, repeats=repeats, link_seconds=t_link,
        flops=flops, flops_executed=executed, tflops=flops / seconds / 1e12,
        fraction_of_peak=None if peak_device is None else flops / seconds / 1e12 / peak_device,
    )
    if case.kind == "train":
        after = trainable_norms(model)
        result.update(loss=float(losses[-1]), loss_first=float(losses[0]),
                      trainables_changed=int((after != before).sum()), trainables=int(after.numel()))

    at_40 = {"seconds": (seconds - n_links * t_link) * FULL_BLOCKS / w.blocks + LINKS_AT_40 * t_link,
             "flops": flops_40}
    if cuda:
        training = case.kind == "train"
        # Offloaded blocks live on the CPU: the one or two on the GPU at a time are in the measured memory.
        block_w, block_s = (0, 0) if case.storage == "offload" else parameter_bytes(model.base.blocks[0], training)
        link_w, link_s = parameter_bytes(next(iter(model.links.values())), training)
        grow = FULL_BLOCKS - w.blocks
        resident_40 = resident + grow * block_s + (LINKS_AT_40 - n_links) * link_s
        checkpoints = grow * 2 * w.tokens * w.dim * 2 if training else 0  # bf16 block inputs, both branches
        result.update(weights_gib=weights / GiB, resident_gib=resident / GiB, peak_gib=peak / GiB,
                      block_weights_gib=block_w / GiB)
        at_40.update(weights_gib=(weights + grow * block_w + (LINKS_AT_40 - n_links) * link_w) / GiB,
                     resident_gib=resident_40 / GiB, peak_gib=(resident_40 + peak - resident + checkpoints) / GiB)
    else:
        result.update(weights_gib=None, resident_gib=None, peak_gib=None)
        at_40.update(weights_gib=None, resident_gib=None, peak_gib=None)
    at_40["tflops"] = flops_40 / at_40["seconds"] / 1e12
    result["at_40_blocks"] = at_40
    return result


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------------------------- report


def environment(device: str, device_name: str, w: Workload, args) -> dict:
    import diffusers
    import peft

    info = {
        "device": device_name, "peak_bf16_tflops": peak_tflops(device_name), "peak_source": PEAK_SOURCE,
        "torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__,
        "cuda": torch.version.cuda, "attention_backend": args.attention_backend or "native (SDPA)",
        "shapes": dict(asdict(w), tokens_per_branch=w.tokens, link_layers=w.link_layers, train_batch=1,
                       sample_batch=2, full_blocks=FULL_BLOCKS, links_at_40=LINKS_AT_40),
    }
    if device == "cuda":
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / GiB
    if args.tiny:
        info["note"] = "--tiny: tiny preset on the CPU to test the script; the times and TFLOP/s mean nothing"
    return info


def table(cases: list[dict]) -> str:
    def number(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| case | s / step | TFLOP/s | % of peak | peak GiB | 40 blocks: s / step | weights GiB | peak GiB (est.) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case in cases:
        if case["status"] != "ok":
            lines.append(f"| {case['case']} | {case['status']}: {case['message']} | | | | | | |")
            continue
        at_40, fraction = case["at_40_blocks"], case["fraction_of_peak"]
        lines.append(
            f"| {case['case']} | {case['seconds']:.3f} | {case['tflops']:.1f} | "
            f"{number(None if fraction is None else 100 * fraction, 1)} | {number(case['peak_gib'], 1)} | "
            f"{at_40['seconds']:.2f} | {number(at_40['weights_gib'], 1)} | {number(at_40['peak_gib'], 1)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench_gpu.json", help="the JSON to write")
    parser.add_argument("--blocks", type=int, default=4, help="blocks of the 14B base to build (a link after the last)")
    parser.add_argument("--tiny", action="store_true", help="tiny preset on the CPU: tests this script, times mean nothing")
    parser.add_argument("--attention-backend", default=None, help="diffusers attention backend, e.g. flash, _native_cudnn")
    parser.add_argument("--cases", default=",".join(case.name for case in CASES), help="comma-separated subset")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case (fewer if the budget is short)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=400.0,
                        help="seconds for all cases, counted from the start; a case is skipped when less is left than the longest one took")
    args = parser.parse_args()

    if args.tiny:
        device, device_name = "cpu", platform.processor() or platform.machine() or "cpu"
    elif torch.cuda.is_available():
        device, device_name = "cuda", torch.cuda.get_device_name(0)
    else:
        print("bench_gpu.py needs a CUDA GPU (none found); run it where one is lent, e.g. "
              "`python benchmarks/bench_gpu.py --out results.json` on one H100/H200 (--tiny tests it on the CPU)",
              file=sys.stderr)
        return 2
    names = {case.name: case for case in CASES}
    unknown = [name for name in args.cases.split(",") if name not in names]
    if unknown or args.blocks < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error(f"--cases must name some of {list(names)} (unknown: {unknown}); --blocks, --warmup and --repeats >= 1")
    selected = [names[name] for name in args.cases.split(",")]

    w = workload(args.tiny, args.blocks)
    report = environment(device, device_name, w, args)
    print(f"{report['device']}: {w.preset} x {w.blocks} blocks, latent {w.latent} -> {w.tokens} tokens per branch, "
          f"torch {report['torch']}, diffusers {report['diffusers']}")
    results, failed, longest = [], False, 0.0
    for index, case in enumerate(selected):
        entry = {"case": case.name, "what": case.what}
        case_start = time.perf_counter()
        remaining = args.budget_s - (case_start - START)
        if remaining < longest:  # the longest case so far would overrun the budget
            entry.update(status="skipped", message=f"{max(remaining, 0):.0f} s of the {args.budget_s:.0f} s budget left, "
                                                   f"the longest case so far took {longest:.0f} s")
        else:
            try:
                allowance = remaining / (len(selected) - index)
                entry.update(status="ok", **run_case(case, w, device, args, allowance, report["peak_bf16_tflops"]))
            except torch.OutOfMemoryError as error:
                entry.update(status="oom", message=str(error).splitlines()[0])
            except Exception as error:  # recorded, the next case runs; the exit code says it failed
                failed = True
                entry.update(status="error", message=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        free(device)  # after the except block, so the traceback no longer holds the model
        longest = max(longest, time.perf_counter() - case_start)
        results.append(entry)
        if entry["status"] != "ok":
            print(f"{case.name}: {entry['status']}: {entry['message']}", file=sys.stderr)

    report["cases"] = results
    report["total_seconds"] = time.perf_counter() - START
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(table(results))
    if args.tiny:
        print(report["note"])
    print(f"{report['total_seconds']:.0f} s in all; written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
