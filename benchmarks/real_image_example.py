"""What the shipped tiny One4D makes of a real photograph (issue 12 item 4): the README's figure and numbers.

Samples ``data/examples/real_room.jpg`` with the README's single-image command (``scripts/sample.py``, the
checkpoint's own sampler settings), then draws ``data/examples/real_room_single.png`` (input, generated RGB, depth
and XYZ of every frame, with ``one4d.demo.sheet_block``) and prints frame 0's PSNR against the very image it was
given next to that image's flat mean colour, and the share of points post-optimisation put behind their camera.

    python benchmarks/real_image_example.py [--out outputs/real_room]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "data/examples/real_room.jpg"
FIGURE = ROOT / "data/examples/real_room_single.png"
PROMPT = "a red box slides across a wooden floor in a room with plaster walls"


def main() -> None:
    import torch
    from PIL import Image

    from one4d.demo import depth_colours, sheet_block, write_png
    from one4d.demo_controls import flat_colour, psnr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/real_room")
    args = parser.parse_args()
    command = [sys.executable, "scripts/sample.py", "task=single", "checkpoint=data/checkpoints/tiny", f"input={IMAGE.relative_to(ROOT)}",
               f"prompt={PROMPT}", f"out={args.out}"]
    subprocess.run(command, cwd=ROOT, check=True)
    folder = ROOT / args.out
    with np.load(folder / "pointmaps.npz") as arrays:
        rgb, normalized = arrays["rgb"], arrays["normalized_pointmaps"].astype(np.float32)  # (F, H, W, 3)
    with np.load(folder / "depth.npz") as arrays:
        depth = arrays["depth"].astype(np.float64)  # (F, H, W)
    frames, height, width = rgb.shape[:3]
    given = np.asarray(Image.open(IMAGE).convert("RGB").resize((width, height), Image.BICUBIC))  # as the sampler resizes
    truth = torch.from_numpy(given / 255.0).float()[None]
    generated = torch.from_numpy(rgb[:1] / 255.0).float()
    valid = depth[depth > 0]
    near, far = (float(np.quantile(valid, 0.02)), float(np.quantile(valid, 0.98))) if valid.size else (1.0, 2.0)
    xyz = ((np.clip(normalized, -1, 1) + 1) * 127.5).astype(np.uint8)
    rows = [("input (resized)", np.repeat(given[None], frames, 0), None), ("generated RGB", rgb, None),
            ("depth (post-opt)", depth_colours(depth, near, far), (near, far)), ("XYZ", xyz, None)]
    write_png(FIGURE, sheet_block(rows, height))
    summary = json.loads((folder / "summary.json").read_text())
    print(json.dumps({
        "frame0_psnr_vs_input_db": round(psnr(generated, truth), 2),
        "flat_mean_colour_psnr_db": round(psnr(flat_colour(truth), truth), 2),
        "points_behind_fraction": (summary.get("cameras") or {}).get("points_behind_fraction"),
        "postopt_warnings": (summary.get("cameras") or {}).get("warnings"),
        "figure": str(FIGURE.relative_to(ROOT)),
    }, indent=1))


if __name__ == "__main__":
    main()
