"""Dataset conversion throughput (issue 14 performance): 720p source frames -> 81 x 352 x 624 clips.

The fixture is one 81-frame synthetic sequence (``one4d.data.synthetic``) rendered at 180x320 and enlarged 4x to
720x1280 (RGB bicubic, depth nearest, intrinsics scaled), stored in the tests' fixture format
(``tests/fixture_source.py``: RGB PNG, float32 .npy depth, .npy dynamic mask) under --root and kept for later
runs; ``--clips`` sequences link to it, so each run converts that many clips. It measures:
(a) one clip in this process, split into decode (reading the source's files), resize (crop, resize, depth
    cleaning), self-check, and write (pointmaps, normalisation, H.264 encode, npz, json; the encode is also
    timed alone);
(b) the whole run (``one4d.data.prepare.prepare``) with one worker and with --workers workers, in frames/s;
and projects the paper's ~2M frames onto a node of --cores cores at the one-worker rate per core.

    python benchmarks/bench_convert.py --clips 2 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ["ONE4D_SOURCE_MODULES"] = "fixture_source"  # the spawn workers inherit it (and sys.path)

from fixture_source import FixtureSource, write_sequence  # noqa: E402

from one4d.data.clip import write_video  # noqa: E402
from one4d.data.cutter import CutSettings, cut_segment, write_cut_clip  # noqa: E402
from one4d.data.prepare import RunSettings, prepare  # noqa: E402
from one4d.data.synthetic import render_scene  # noqa: E402
from one4d.geometry import resize_intrinsics  # noqa: E402

PAPER_FRAMES = 2_000_000  # about 34k clips of ~81 frames (the paper, section 4.1)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (pool workers, their ffmpeg encoders): on a shared,
    loaded machine the wall clock measures the other jobs too, CPU time much less so."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def make_fixture(folder: Path, frames: int, factor: int = 4) -> None:
    """Render at 180x320 and enlarge ``factor`` times: a geometrically consistent 720p sequence, quickly."""
    scene = render_scene(10, num_frames=frames, height=720 // factor, width=1280 // factor)
    rgb = (scene.rgb.numpy() * 255).round().astype(np.uint8)
    rgb = np.stack([cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_CUBIC) for frame in rgb])  # (F, 720, 1280, 3)
    depth = scene.depth.numpy().repeat(factor, axis=1).repeat(factor, axis=2)  # nearest: (F, 720, 1280)
    dynamic = scene.dynamic_mask.numpy().repeat(factor, axis=1).repeat(factor, axis=2)
    intrinsics = resize_intrinsics(scene.intrinsics.double(), factor, factor).numpy()
    write_sequence(folder.parent, folder.name, rgb, depth, intrinsics, scene.world_to_camera.double().numpy(), dynamic, fps=30.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/one4d_bench_convert")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=624)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=32, help="cores of the node the projection is for")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    root = Path(args.root)
    data = root / "fixture" / "data"
    results = {"frames": args.frames, "size": f"{args.height}x{args.width}", "source_size": "720x1280",
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
               "load_average_at_start": os.getloadavg()[0]}
    if not (data / f"rgb_{args.frames - 1:06d}.png").exists():
        start = time.perf_counter()
        make_fixture(data, args.frames)
        results["fixture_s"] = round(time.perf_counter() - start, 1)
    download = root / "download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    for index in range(args.clips):
        os.symlink(data, download / f"seq_{index}")

    # (a) one clip, stage by stage, in this process (one thread)
    cut = CutSettings(num_frames=args.frames, height=args.height, width=args.width, far_depth=80.0)
    source = FixtureSource(download)
    sequence = source.sequences()[0]
    for path in sorted(data.iterdir())[: 2 * args.frames]:  # warm the page cache: decode time, not disk time
        path.read_bytes()
    out = root / "stages"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cpu = cpu_seconds()
    clip = cut_segment(source, sequence, list(range(args.frames)), cut)
    written = write_cut_clip(out / "clip", clip, {"source": "fixture_source"}, cut)
    stages = {**clip.seconds, **written["seconds"]}
    results["one_clip_cpu_s_per_frame"] = round((cpu_seconds() - cpu) / args.frames, 3)
    start = time.perf_counter()  # the H.264 encode alone, out of "write" (pointmaps, normalisation, npz, json are the rest)
    write_video(out / "encode_only.mp4", clip.rgb, fps=30.0, crf=cut.crf)
    stages["write_of_which_h264"] = time.perf_counter() - start
    total = sum(value for key, value in stages.items() if not key.startswith("write_of"))
    results["stages_s"] = {key: round(value, 2) for key, value in stages.items()}
    results["stages_share"] = {key: f"{value / total:.0%}" for key, value in stages.items()}
    results["one_clip_frames_per_s"] = round(args.frames / total, 2)
    results["clip_mb"] = round(sum(p.stat().st_size for p in (out / "clip").iterdir()) / 2**20, 1)
    results["selfcheck_error"] = written["meta"]["selfcheck_error"]

    # (b) whole runs through prepare(): one worker, then --workers
    for workers in sorted({1, args.workers}):
        out = root / f"out_{workers}"
        shutil.rmtree(out, ignore_errors=True)
        settings = RunSettings(source="fixture_source", root=download, out=out, options={}, cut=cut, stride=1,
                               workers=workers, progress=False)
        start, cpu = time.perf_counter(), cpu_seconds()
        summary = prepare(settings)
        seconds = time.perf_counter() - start
        assert summary["clips"] == args.clips, summary
        results[f"run_{workers}_workers_frames_per_s"] = round(summary["frames"] / seconds, 2)
        results[f"run_{workers}_workers_cpu_s_per_frame"] = round((cpu_seconds() - cpu) / summary["frames"], 3)
    wall_per_core = results["run_1_workers_frames_per_s"]
    cpu_per_frame = results["run_1_workers_cpu_s_per_frame"]
    results["projection_hours_from_wall"] = round(PAPER_FRAMES / (wall_per_core * args.cores) / 3600, 1)
    results["projection_hours_from_cpu"] = round(PAPER_FRAMES * cpu_per_frame / args.cores / 3600, 1)
    results["projection_assumes"] = f"{args.cores} cores each converting at the measured one-worker rate, disk keeping up"
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
