"""End to end for the PointOdyssey, TartanAir, Dynamic Replica and Spring sources: a fixture in the dataset's own
format (tests/source_fixtures_a.py) converted by scripts/prepare_data.py as a user runs it, read back with read_clip.

The fixture is rendered at exactly 3x the clip size, so the cutter's nearest-neighbour resize takes source pixel
(3v + 1, 3u + 1) for clip pixel (v, u) (pixel centres aligned) and the expected clip is the known scene sampled there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from source_fixtures_a import (known_scene, tartanair_options, write_dynamic_replica, write_pointodyssey, write_spring,
                               write_tartanair)

from one4d.data.clip import read_clip
from one4d.geometry import depth_to_pointmap, resize_intrinsics

ROOT = Path(__file__).resolve().parents[1]
FRAMES, HEIGHT, WIDTH, SCALE = 5, 32, 48, 3
# Depth tolerance per source, relative to depth (the clip stores float16: 2^-11 relative), plus the format's own step:
# PointOdyssey one PNG code (1000 / 65535 m), Dynamic Replica a second float16 rounding, the others exact or float32.
DEPTH_TOLERANCE = {"pointodyssey": (2.0**-11, 1000 / 65535), "tartanair": (2.0**-11, 0.0),
                   "dynamic_replica": (2.0**-10, 0.0), "spring": (2.0**-11, 1e-5)}
WRITERS = {"pointodyssey": write_pointodyssey, "tartanair": write_tartanair, "dynamic_replica": write_dynamic_replica,
           "spring": write_spring}


def convert(source: str, root: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "prepare_data.py"), f"source={source}", f"root={root}", f"out={out}",
               f"num_frames={FRAMES}", f"height={HEIGHT}", f"width={WIDTH}", "workers=1", "stride=1", "progress=false", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("source", ["pointodyssey", "tartanair", "dynamic_replica", "spring"])
def test_command_converts_the_download(source, tmp_path):
    if source == "spring":
        pytest.importorskip("h5py")
    scene = known_scene(num_frames=6, height=HEIGHT * SCALE, width=WIDTH * SCALE)
    WRITERS[source](tmp_path / "download", scene)
    overrides = [f"source.options.{key}={value}" for key, value in tartanair_options(scene).items()] if source == "tartanair" else []
    result = convert(source, tmp_path / "download", tmp_path / "clips", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]

    entries = [json.loads(line) for line in (tmp_path / "clips" / "index.jsonl").read_text().splitlines()]
    assert len(entries) == 1 and entries[0]["source"] == source and entries[0]["first"] == 0  # 6 frames: one clip of 5
    clip = read_clip(tmp_path / "clips" / entries[0]["clip"])
    sample = (slice(0, FRAMES), slice(1, None, SCALE), slice(1, None, SCALE))  # clip pixel (v, u) <- source (3v+1, 3u+1)
    expected_depth = scene.depth[sample]  # (F, 32, 48)
    relative, absolute = DEPTH_TOLERANCE[source]
    valid = expected_depth > 0
    np.testing.assert_allclose(clip.depth.numpy()[valid], expected_depth[valid], rtol=relative, atol=absolute + 1e-6)
    expected_intrinsics = resize_intrinsics(torch.from_numpy(scene.intrinsics[:FRAMES]), 1 / SCALE, 1 / SCALE)
    np.testing.assert_allclose(clip.intrinsics.numpy(), expected_intrinsics.numpy(), atol=1e-4)
    expected_poses = scene.world_to_camera[:FRAMES] @ np.linalg.inv(scene.world_to_camera[0])  # relative to frame 0
    stored = clip.world_to_camera.numpy()
    np.testing.assert_allclose(stored @ np.linalg.inv(stored[0]), expected_poses, atol=1e-5)
    # Pointmaps: every valid pixel's point in frame 0's camera, float16 in the clip.
    expected_points = depth_to_pointmap(torch.from_numpy(expected_depth), expected_intrinsics, torch.from_numpy(expected_poses)).numpy()
    scale = np.abs(expected_points[valid]).max()
    np.testing.assert_allclose(clip.pointmaps.numpy()[valid], expected_points[valid], atol=scale * 2.0**-10 + absolute * 2)
    assert clip.meta["selfcheck_error"] < 0.01  # quantisation-level; a wrong convention gives 5-15 % (tests/test_source_*.py)
    assert entries[0]["selfcheck_error"] == pytest.approx(clip.meta["selfcheck_error"])
