"""A test-only dataset format and its source, for the conversion tests and benchmark (not a real dataset).

Layout: ``<root>/<sequence>/cameras.json`` ({"intrinsics": (N, 3, 3), "world_to_camera": (N, 4, 4), "fps"}),
``rgb_000000.png``, ``depth_000000.npy`` (float32 metres) and ``dynamic_000000.npy`` (bool) per frame, and an
optional ``caption.txt`` (the dataset's own text, for every segment). Named to ``scripts/prepare_data.py`` by
``ONE4D_SOURCE_MODULES=fixture_source`` with ``tests/`` on PYTHONPATH and its config under
``hydra.searchpath`` (:func:`write_config`).
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from one4d.data.sources import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError


def write_sequence(root, name: str, rgb, depth, intrinsics, world_to_camera, dynamic=None, fps: float = 30.0,
                   caption: str | None = None) -> Path:
    """Write one sequence: rgb (N, H, W, 3) uint8, depth (N, H, W), intrinsics (N, 3, 3), world_to_camera (N, 4, 4)."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    cameras = {"intrinsics": np.asarray(intrinsics, np.float64).tolist(),
               "world_to_camera": np.asarray(world_to_camera, np.float64).tolist(), "fps": fps}
    (folder / "cameras.json").write_text(json.dumps(cameras))
    for index in range(len(rgb)):
        imageio.imwrite(folder / f"rgb_{index:06d}.png", np.asarray(rgb[index], np.uint8))
        np.save(folder / f"depth_{index:06d}.npy", np.asarray(depth[index], np.float32))
        if dynamic is not None:
            np.save(folder / f"dynamic_{index:06d}.npy", np.asarray(dynamic[index], bool))
    if caption is not None:
        (folder / "caption.txt").write_text(caption)
    return folder


def write_scene(root, name: str, scene, **kwargs) -> Path:
    """Write a ``one4d.data.synthetic.SyntheticScene`` as one sequence."""
    rgb = (scene.rgb.numpy() * 255).round().astype(np.uint8)
    return write_sequence(root, name, rgb, scene.depth.numpy(), scene.intrinsics.numpy(), scene.world_to_camera.numpy(),
                          scene.dynamic_mask.numpy(), **kwargs)


def write_config(folder, far_depth: float | None = None, stride: int = 1) -> Path:
    """``<folder>/source/fixture_source.yaml``: pass ``hydra.searchpath=[file://<folder>]``."""
    path = Path(folder) / "source" / "fixture_source.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: fixture_source\nfar_depth: {'null' if far_depth is None else far_depth}\nstride: {stride}\n"
                    "options:\n  axes: opencv  # opengl: read the poses with the wrong camera axes (for the self-check tests)\n")
    return Path(folder)


class FixtureSource(DatasetSource):
    name = "fixture_source"

    def __init__(self, root, axes: str = "opencv", **options):
        super().__init__(root, **options)
        if axes not in ("opencv", "opengl"):
            raise ValueError(f"source.options.axes must be opencv or opengl, got {axes!r}")
        self.flip = np.diag([1.0, -1.0, -1.0, 1.0]) if axes == "opengl" else np.eye(4)
        self._cameras = {}

    def sequences(self) -> list[SequenceInfo]:
        folders = sorted(path.parent for path in self.root.glob("*/cameras.json"))
        if not folders:
            raise SourceLayoutError(self.name, self.root, "<sequence>/cameras.json")
        return [SequenceInfo(folder.name, len(list(folder.glob("rgb_*.png"))), fps=self._read_cameras(folder.name)["fps"])
                for folder in folders]

    def _read_cameras(self, name: str) -> dict:
        if name not in self._cameras:
            self._cameras[name] = json.loads((self.root / name / "cameras.json").read_text())
        return self._cameras[name]

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        folder = self.root / sequence.name
        try:
            rgb = imageio.imread(folder / f"rgb_{index:06d}.png")
            depth = np.load(folder / f"depth_{index:06d}.npy")
        except (OSError, ValueError) as error:
            raise FrameReadError(f"{sequence.name} frame {index}: {error}") from None
        dynamic_path = folder / f"dynamic_{index:06d}.npy"
        cameras = self._read_cameras(sequence.name)
        return SourceFrame(rgb=rgb, depth=depth, intrinsics=np.array(cameras["intrinsics"][index]),
                           world_to_camera=self.flip @ np.array(cameras["world_to_camera"][index]),
                           dynamic_mask=np.load(dynamic_path) if dynamic_path.exists() else None)

    def caption(self, sequence: SequenceInfo, first: int, count: int) -> str | None:
        path = self.root / sequence.name / "caption.txt"
        return path.read_text() if path.exists() else None


SOURCE = FixtureSource
