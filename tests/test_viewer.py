"""The viser viewer: loads an output folder with stride and point subsampling, serves its page on a free localhost port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from one4d.geometry import look_at
from one4d.viewer import load_scene, view

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(port: int, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """An output folder as sample.py writes it: 6 frames of 8 x 8 points, cameras on a small arc."""
    folder = tmp_path_factory.mktemp("out")
    rng = np.random.default_rng(0)
    pointmaps = rng.normal(size=(6, 8, 8, 3)).astype(np.float32) + np.array([0, 0, 4], dtype=np.float32)
    pointmaps[2, 0, 0] = np.nan
    rgb = (rng.random((6, 8, 8, 3)) * 255).astype(np.uint8)
    np.savez(folder / "pointmaps.npz", pointmaps=pointmaps, rgb=rgb)
    eyes = torch.tensor([[0.1 * i, 0.0, 0.0] for i in range(6)], dtype=torch.float64)
    world_to_camera = look_at(eyes, torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64).expand(6, 3))
    intrinsics = torch.tensor([[10.0, 0, 3.5], [0, 10.0, 3.5], [0, 0, 1]], dtype=torch.float64).expand(6, 3, 3)
    (folder / "cameras.json").write_text(json.dumps({"intrinsics": intrinsics.tolist(), "world_to_camera": world_to_camera.tolist()}))
    return folder, world_to_camera


def test_scene_stride_subsampling_and_cameras(output):
    folder, world_to_camera = output
    scene = load_scene(folder, stride=2, max_points=10)
    assert scene.frames == [0, 2, 4]
    assert [len(points) for points in scene.points] == [10, 10, 10]
    assert all(np.isfinite(points).all() for points in scene.points)  # the NaN point is never shown
    centres = scene.camera_to_world[:, :3, 3]
    assert np.allclose(centres[:, 0], [0.0, 0.2, 0.4])
    assert len(load_scene(folder, max_points=1000).points[2]) == 63
    with pytest.raises(ValueError, match="pointmaps.npz"):
        load_scene(folder / "missing")


def test_viewer_serves_its_page_and_moves_in_time(output):
    folder, _ = output
    viewer = view(folder, port=free_port(), stride=1, max_points=20)
    try:
        assert "<html" in fetch(viewer.port).lower()
        viewer.show(3)
        assert [cloud.visible for cloud in viewer._clouds] == [False, False, False, True, False, False]
        viewer.show_all.value = True
        viewer.show(2)
        assert [cloud.visible for cloud in viewer._clouds] == [True, True, True, False, False, False]
    finally:
        viewer.stop()


def test_a_viewer_stopped_while_it_builds_stops_serving(output, monkeypatch):
    """SIGTERM can arrive once the page serves but before the viewer is built: the server must not outlive it."""
    from one4d.runtime import Terminated
    from one4d.viewer import Viewer

    def interrupted(self, scale):
        assert "<html" in fetch(self.port).lower()  # already serving
        raise Terminated

    monkeypatch.setattr(Viewer, "_add_frustums", interrupted)
    port = free_port()
    with pytest.raises(Terminated):
        view(output[0], port=port, stride=1, max_points=20)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)


def test_view_script_starts_headless(output):
    folder, _ = output
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "view.py"), str(folder), "--port", str(port), "--stride", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert "<html" in fetch(port, timeout=120).lower()
    finally:
        process.terminate()
        process.wait(timeout=30)
