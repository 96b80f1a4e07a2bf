"""Bytes per frame of the clip layouts at the paper's size, and what the depth-only layout costs the reader (issue 14 item 6).

Renders one synthetic clip (``one4d.data.synthetic.render_scene``: exact depth and poses) at the full
size and all its frames, writes it with ``write_clip`` in both layouts and reports the bytes per frame
of every file, the projection to the paper's ~2M frames, and reading times. Synthetic renders are
kinder to compression than real footage, so two pessimistic variants bound the real numbers:

- ``noisy`` RGB: Gaussian sensor noise (sigma 2/255), which lossless H.264 must keep (real video, SpatialVID);
- ``noisy`` depth: 1 % multiplicative noise on depth (estimated depth with per-pixel jitter), which
  defeats most of the deflate compression of ``depth.npz``.

The format before the depth-only layout ("before": ``np.savez`` depth, pointmaps stored) is
measured from the same arrays.

    python benchmarks/bench_clip_storage.py [--frames 81] [--height 352] [--width 624] [--seed 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from one4d.data.clip import DEPTH_NAME, POINTMAPS_NAME, VIDEO_NAME, pointmaps_from_depth, read_clip, write_clip
from one4d.data.synthetic import render_scene
from timing import best_of

PAPER_FRAMES = 2_000_000  # "about 17k synthetic and 17k real-world clips, with roughly 2M frames" (One4D, Datasets)


def npz_bytes(path: Path, compressed: bool, **arrays) -> int:
    """Size of an .npz holding ``arrays``, plain or deflate-compressed."""
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=624)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames = args.frames

    start = time.perf_counter()
    scene = render_scene(args.seed, frames, args.height, args.width)
    results = {"frames": frames, "height": args.height, "width": args.width, "render_s": round(time.perf_counter() - start, 1)}
    generator = torch.Generator().manual_seed(0)
    noisy_rgb = (scene.rgb + torch.randn(scene.rgb.shape, generator=generator) * (2 / 255)).clamp(0, 1)
    noisy_depth = scene.depth * (1 + 0.01 * torch.randn(scene.depth.shape, generator=generator))
    per_frame = {}  # file -> bytes per frame

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = {}
        for layout in ("full", "depth"):
            start = time.perf_counter()
            folders[layout] = write_clip(tmp / layout, scene.rgb, None, scene.depth, scene.intrinsics, scene.world_to_camera,
                                         {"caption": scene.caption}, layout=layout)
            results[f"write_{layout}_s"] = round(time.perf_counter() - start, 1)
        other = sum(path.stat().st_size for path in folders["depth"].iterdir() if path.suffix == ".json")
        per_frame["cameras.json + meta.json"] = other / frames
        per_frame["rgb.mp4"] = (folders["full"] / VIDEO_NAME).stat().st_size / frames
        noisy = write_clip(tmp / "noisy", noisy_rgb, None, scene.depth, scene.intrinsics, scene.world_to_camera, layout="depth")
        per_frame["rgb.mp4 (noisy RGB)"] = (noisy / VIDEO_NAME).stat().st_size / frames
        per_frame["pointmaps.npz"] = (folders["full"] / POINTMAPS_NAME).stat().st_size / frames
        depth16, noisy16 = scene.depth.numpy().astype(np.float16), noisy_depth.numpy().astype(np.float16)
        pointmaps16 = np.load(folders["full"] / POINTMAPS_NAME)["pointmaps"]
        per_frame["depth.npz (np.savez, before)"] = npz_bytes(tmp / "a.npz", False, depth=depth16) / frames
        per_frame["depth.npz (compressed)"] = (folders["depth"] / DEPTH_NAME).stat().st_size / frames
        per_frame["depth.npz (compressed, noisy depth)"] = npz_bytes(tmp / "b.npz", True, depth=noisy16) / frames
        per_frame["pointmaps.npz (if compressed)"] = npz_bytes(tmp / "c.npz", True, pointmaps=pointmaps16) / frames

        results["load_depth_npz_plain_s"] = round(best_of(lambda: np.load(tmp / "a.npz")["depth"], args.repeats), 3)
        results["load_depth_npz_compressed_s"] = round(best_of(lambda: np.load(folders["depth"] / DEPTH_NAME)["depth"], args.repeats), 3)
        results["load_pointmaps_npz_plain_s"] = round(best_of(lambda: np.load(folders["full"] / POINTMAPS_NAME)["pointmaps"], args.repeats), 3)
        results["load_pointmaps_npz_compressed_s"] = round(best_of(lambda: np.load(tmp / "c.npz")["pointmaps"], args.repeats), 3)
        w2c = torch.tensor(json.loads((folders["depth"] / "cameras.json").read_text())["world_to_camera"], dtype=torch.float64)
        k = torch.tensor(json.loads((folders["depth"] / "cameras.json").read_text())["intrinsics"], dtype=torch.float64)
        results["pointmaps_from_depth_s"] = round(best_of(lambda: pointmaps_from_depth(torch.from_numpy(depth16), k, w2c, w2c[0]), args.repeats), 3)
        for layout in ("full", "depth"):
            results[f"read_clip_{layout}_s"] = round(best_of(lambda: read_clip(folders[layout]), args.repeats), 2)
        full, depth_only = read_clip(folders["full"]), read_clip(folders["depth"])
        results["layouts_read_identical"] = bool(torch.equal(full.pointmaps, depth_only.pointmaps) and torch.equal(full.depth, depth_only.depth))

    rgb, rgb_noisy, other = per_frame["rgb.mp4"], per_frame["rgb.mp4 (noisy RGB)"], per_frame["cameras.json + meta.json"]
    totals = {
        "before (full layout, plain depth)": rgb + per_frame["pointmaps.npz"] + per_frame["depth.npz (np.savez, before)"] + other,
        "full layout": rgb + per_frame["pointmaps.npz"] + per_frame["depth.npz (compressed)"] + other,
        "depth layout": rgb + per_frame["depth.npz (compressed)"] + other,
        "before, noisy RGB": rgb_noisy + per_frame["pointmaps.npz"] + per_frame["depth.npz (np.savez, before)"] + other,
        "depth layout, noisy RGB + noisy depth": rgb_noisy + per_frame["depth.npz (compressed, noisy depth)"] + other,
    }
    results["bytes_per_frame"] = {name: round(value) for name, value in per_frame.items()}
    results["total_bytes_per_frame"] = {name: round(value) for name, value in totals.items()}
    results["paper_2M_frames_TB"] = {name: round(value * PAPER_FRAMES / 1e12, 2) for name, value in totals.items()}
    results["depth_layout_over_before"] = round(totals["depth layout"] / totals["before (full layout, plain depth)"], 3)
    results["depth_layout_over_before_pessimistic"] = round(totals["depth layout, noisy RGB + noisy depth"] / totals["before, noisy RGB"], 3)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
