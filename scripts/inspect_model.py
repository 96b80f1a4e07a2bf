"""Print the trainable-parameter table of every base preset, or the estimated memory of a recipe (meta device, no memory).

    python scripts/inspect_model.py [--architecture dlc] [--lora-rank 64] [--num-links 5]
    python scripts/inspect_model.py --memory experiment=one4d_14b [launcher=deepspeed_zero3] --world-size 8 [--fp8]
    python scripts/inspect_model.py --memory --mode sample experiment=one4d_14b [--fp8] [--group-offload]
    python scripts/inspect_model.py --memory --table experiment=one4d_14b --world-size 8

``--memory`` composes the train config from the Hydra overrides (model, data size, batch, checkpointing, launcher)
and prints one4d.memory's per-GPU estimate by category; ``--table`` the ZeRO-2/3 x bf16/fp8 training and
resident/offloaded sampling comparison against 80 / 48 / 24 GB cards. Estimated, not measured.
"""

import torch

from one4d.models import PRESETS, build_model
from one4d.models.factory import ARCHITECTURES
from one4d.runtime import ArgumentParser, run_script


def count(model) -> dict[str, int]:
    trainable = model.trainable_state_dict()
    lora = sum(p.numel() for name, p in trainable.items() if "lora_" in name)
    total = sum(p.numel() for p in trainable.values())
    return {"base": sum(p.numel() for p in model.base.parameters() if not p.requires_grad), "lora": lora,
            "other": total - lora, "trainable": total}


def print_parameter_table(args) -> None:
    extra = {"num_links": args.num_links} if args.architecture == "dlc" else {}
    print(f"architecture={args.architecture} lora_rank={args.lora_rank} " + " ".join(f"{k}={v}" for k, v in extra.items()))
    print("| preset | frozen base | LoRA | links + XYZ in/out | trainable | trainable (M = 2^20) |")
    print("|---|---:|---:|---:|---:|---:|")
    for preset in PRESETS:
        model = build_model(args.architecture, preset, device="meta", dtype=torch.bfloat16, lora_rank=args.lora_rank, **extra)
        n = count(model)
        print(f"| {preset} | {n['base']:,} | {n['lora']:,} | {n['other']:,} | {n['trainable']:,} | {n['trainable'] / 2**20:.1f}M |")


def print_memory(args) -> None:
    from one4d.memory import estimate_sampling_memory, estimate_training_memory, recipe_table
    from one4d.training.testing import compose_train_config

    if args.table:
        print(recipe_table(args.overrides, args.world_size))
        return
    cfg = compose_train_config(args.overrides)
    if args.mode == "train":
        estimate = estimate_training_memory(cfg, args.world_size, fp8=args.fp8)
    else:
        estimate = estimate_sampling_memory(cfg, fp8=args.fp8, group_offload=args.group_offload)
    print(estimate.format())


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="dlc", choices=sorted(ARCHITECTURES))
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--num-links", type=int, default=5, help="DLC only")
    parser.add_argument("--memory", action="store_true", help="estimate per-GPU memory of the recipe the overrides compose")
    parser.add_argument("--mode", choices=("train", "sample"), default="train")
    parser.add_argument("--world-size", type=int, default=1, help="processes (GPUs) of the launcher")
    parser.add_argument("--fp8", action="store_true", default=None, help="frozen base stored in float8_e4m3fn")
    parser.add_argument("--group-offload", action="store_true", help="sampling: block-level group offload")
    parser.add_argument("--table", action="store_true", help="the ZeRO-2/3, fp8 and offload comparison")
    parser.add_argument("overrides", nargs="*", help="train config overrides (--memory), e.g. experiment=one4d_14b")
    args = parser.parse_args()
    if args.overrides and not args.memory:
        parser.error("config overrides are for --memory")
    if args.memory:
        print_memory(args)
    else:
        print_parameter_table(args)


if __name__ == "__main__":
    run_script(main)
