"""End to end for the PointOdyssey, TartanAir, Dynamic Replica and Spring sources: a fixture in the dataset's own
format (tests/source_fixtures_a.py) converted by scripts/prepare_data.py as a user runs it, read back with read_clip.

The fixture is rendered at exactly 3x the clip size, so the cutter's nearest-neighbour resize takes source pixel
(3v + 1, 3u + 1) for clip pixel (v, u) (pixel centres aligned) and the expected clip is the known scene sampled there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from source_fixtures_a import (check_clip_geometry, convert_download, known_scene, tartanair_options, write_dynamic_replica,
                               write_pointodyssey, write_spring, write_tartanair)

from one4d.data.clip import read_clip

FRAMES, HEIGHT, WIDTH, SCALE = 5, 32, 48, 3
# Depth tolerance per source, relative to depth (the clip stores float16: 2^-11 relative), plus the format's own step:
# PointOdyssey one PNG code (1000 / 65535 m), Dynamic Replica a second float16 rounding, the others exact or float32.
DEPTH_TOLERANCE = {"pointodyssey": (2.0**-11, 1000 / 65535), "tartanair": (2.0**-11, 0.0),
                   "dynamic_replica": (2.0**-10, 0.0), "spring": (2.0**-11, 1e-5)}
WRITERS = {"pointodyssey": write_pointodyssey, "tartanair": write_tartanair, "dynamic_replica": write_dynamic_replica,
           "spring": write_spring}


@pytest.mark.parametrize("source", ["pointodyssey", "tartanair", "dynamic_replica", "spring"])
def test_command_converts_the_download(source, tmp_path):
    if source == "spring":
        pytest.importorskip("h5py")
    scene = known_scene(num_frames=6, height=HEIGHT * SCALE, width=WIDTH * SCALE)
    WRITERS[source](tmp_path / "download", scene)
    overrides = [f"source.options.{key}={value}" for key, value in tartanair_options(scene).items()] if source == "tartanair" else []
    result = convert_download(source, tmp_path / "download", tmp_path / "clips", FRAMES, HEIGHT, WIDTH, *overrides)
    assert result.returncode == 0, result.stderr[-2000:]

    entries = [json.loads(line) for line in (tmp_path / "clips" / "index.jsonl").read_text().splitlines()]
    assert len(entries) == 1 and entries[0]["source"] == source and entries[0]["first"] == 0  # 6 frames: one clip of 5
    clip = read_clip(tmp_path / "clips" / entries[0]["clip"])
    sample = (slice(0, FRAMES), slice(1, None, SCALE), slice(1, None, SCALE))  # clip pixel (v, u) <- source (3v+1, 3u+1)
    expected_depth = scene.depth[sample]  # (F, 32, 48)
    relative, absolute = DEPTH_TOLERANCE[source]
    valid = expected_depth > 0
    np.testing.assert_allclose(clip.depth.numpy()[valid], expected_depth[valid], rtol=relative, atol=absolute + 1e-6)
    check_clip_geometry(clip, scene, expected_depth, valid, SCALE, points_atol=absolute * 2)  # cameras, float16 pointmaps
    assert clip.meta["selfcheck_error"] < 0.01  # quantisation-level; a wrong convention gives 5-15 % (tests/test_source_*.py)
    masked = source == "dynamic_replica"  # the only one of these four datasets that ships a dynamic mask
    assert clip.meta["selfcheck_masked"] is masked
    assert ("have no dynamic mask" in (tmp_path / "clips" / "report.md").read_text()) is not masked
    assert entries[0]["selfcheck_error"] == pytest.approx(clip.meta["selfcheck_error"])
