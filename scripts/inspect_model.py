"""Print the trainable-parameter table of every base preset (built on the meta device, no memory).

    python scripts/inspect_model.py [--architecture dlc] [--lora-rank 64] [--num-links 5]
"""

import argparse

import torch

from one4d.models import PRESETS, build_model
from one4d.models.factory import ARCHITECTURES


def count(model) -> dict[str, int]:
    trainable = model.trainable_state_dict()
    lora = sum(p.numel() for name, p in trainable.items() if "lora_" in name)
    total = sum(p.numel() for p in trainable.values())
    return {"base": sum(p.numel() for p in model.base.parameters() if not p.requires_grad), "lora": lora,
            "other": total - lora, "trainable": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="dlc", choices=sorted(ARCHITECTURES))
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--num-links", type=int, default=5, help="DLC only")
    args = parser.parse_args()
    extra = {"num_links": args.num_links} if args.architecture == "dlc" else {}
    print(f"architecture={args.architecture} lora_rank={args.lora_rank} " + " ".join(f"{k}={v}" for k, v in extra.items()))
    print("| preset | frozen base | LoRA | links + XYZ in/out | trainable | trainable (M = 2^20) |")
    print("|---|---:|---:|---:|---:|---:|")
    for preset in PRESETS:
        model = build_model(args.architecture, preset, device="meta", dtype=torch.bfloat16, lora_rank=args.lora_rank, **extra)
        n = count(model)
        print(f"| {preset} | {n['base']:,} | {n['lora']:,} | {n['other']:,} | {n['trainable']:,} | {n['trainable'] / 2**20:.1f}M |")


if __name__ == "__main__":
    main()
