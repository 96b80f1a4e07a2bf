"""Spring (Mehl et al. 2023, the scene-flow benchmark rendered from the Blender Studio film) as its authors ship it.

Layout (CUT3R ``datasets_preprocess/preprocess_spring.py:98-104, 163-176``; MonST3R
``dust3r/datasets/spring_dataset.py:92-103``)::

    <root>/train/<seq>/frame_left/frame_left_0001.png        RGB 1920x1080, 1-based, 4 digits
    <root>/train/<seq>/disp1_left/disp1_left_0001.dsp5       HDF5, dataset "disparity", 3840x2160
    <root>/train/<seq>/cam_data/intrinsics.txt               one line per frame: fx fy cx cy
    <root>/train/<seq>/cam_data/extrinsics.txt               one line per frame: 4x4 world-to-camera, row-major

Only ``train`` ships ground truth (``test`` has images only), so ``splits`` defaults to ``[train]``.

Conventions handled:
- Depth from disparity: the disparity is stored at twice the image resolution; ``[::2, ::2]`` brings it to
  the image grid and ``z = fx * baseline / disparity`` with the stereo baseline 0.065 m (CUT3R
  ``preprocess_spring.py:60-75, 195-201``; MonST3R ``spring_dataset.py:14-22, 173-176``). NaN disparity (no
  ground truth) and 0 (infinitely far, the sky) give NaN / inf depth, which the cutter zeroes and counts.
  The HDF5 file needs h5py (``pip install -e '.[data]'``).
- ``extrinsics.txt`` rows are world-to-camera (both peers invert them for camera-to-world); OpenCV axes are
  inferred from both peers using them without a flip (unverified): ``axes: opencv``. ``axes: opengl`` flips
  y and z (Blender's camera axes) for a download that turns out to differ.
- ``intrinsics.txt`` fx fy cx cy: Blender puts a centred camera's principal point at W/2, counted from the
  image corner (unverified for these files), so ``half_pixel_shift: true`` subtracts 0.5 for integer pixel
  centres.
- Only the left camera is read by default: the right camera's poses are not in ``extrinsics.txt``.
  No dynamic mask, no captions; frame rate unverified (``fps`` null unless set).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from one4d.data.sources._files import check_index, pinhole, read_rgb, read_text_rows
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError, require

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # camera y up, z backwards -> y down, z forward


@lru_cache(maxsize=8)
def _load_cameras(sequence_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """cam_data/intrinsics.txt (N, 4) and extrinsics.txt (N, 16) of one sequence, read once per process."""
    cameras = Path(sequence_dir) / "cam_data"
    return read_text_rows(cameras / "intrinsics.txt", 4), read_text_rows(cameras / "extrinsics.txt", 16)


def read_disparity(path: Path) -> np.ndarray:
    """A .dsp5 file -> its "disparity" dataset, float32 at the stored (2x) resolution."""
    h5py = require("h5py")
    try:
        with h5py.File(path, "r") as file:
            return np.asarray(file["disparity"], dtype=np.float32)
    except (OSError, KeyError) as error:
        raise FrameReadError(f"cannot read disparity {path}: {error}") from None


class SpringSource(DatasetSource):
    """Spring sequences; names are ``<split>/<seq>/<camera>``."""

    name = "spring"

    def __init__(self, root, splits=("train",), cameras=("left",), baseline: float = 0.065, half_pixel_shift: bool = True,
                 axes: str = "opencv", fps: float | None = None):
        super().__init__(root)
        if axes not in ("opencv", "opengl"):
            raise ValueError(f"spring: axes must be 'opencv' or 'opengl', got {axes!r}")
        if list(cameras) != ["left"]:
            raise ValueError("spring: only cameras=[left] is supported (extrinsics.txt holds the left camera's poses)")
        self.splits, self.camera = list(splits), "left"
        self.baseline, self.half_pixel_shift, self.axes, self.fps = float(baseline), half_pixel_shift, axes, fps

    def sequences(self) -> list[SequenceInfo]:
        found = []
        for split in self.splits:
            for folder in sorted(path for path in (self.root / split).glob(f"*/frame_{self.camera}") if path.is_dir()):
                count = len(list(folder.glob(f"frame_{self.camera}_*.png")))
                found.append(SequenceInfo(f"{split}/{folder.parent.name}/{self.camera}", count, self.fps, split))
        if not found:
            raise SourceLayoutError(self.name, self.root, f"{(self.splits or ['train'])[0]}/<sequence>/frame_left/frame_left_0001.png")
        return found

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        split, name, camera = sequence.name.split("/")
        folder = self.root / split / name
        number = index + 1  # files count from 1
        rgb = read_rgb(folder / f"frame_{camera}" / f"frame_{camera}_{number:04d}.png")
        disparity_path = folder / f"disp1_{camera}" / f"disp1_{camera}_{number:04d}.dsp5"
        disparity = read_disparity(disparity_path)[::2, ::2]  # (2H, 2W) -> (H, W)
        if disparity.shape != rgb.shape[:2]:
            raise FrameReadError(f"{disparity_path}: disparity {disparity.shape} after [::2, ::2] differs from the image {rgb.shape[:2]}")
        intrinsics_rows, extrinsics_rows = _load_cameras(str(folder))
        check_index(index, len(intrinsics_rows), folder / "cam_data" / "intrinsics.txt")
        check_index(index, len(extrinsics_rows), folder / "cam_data" / "extrinsics.txt")
        fx, fy, cx, cy = intrinsics_rows[index]
        intrinsics = pinhole(fx, fy, cx, cy, 0.5 if self.half_pixel_shift else 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = (np.float32(fx * self.baseline) / disparity).astype(np.float32)  # NaN / inf where no disparity
        world_to_camera = extrinsics_rows[index].reshape(4, 4)
        if self.axes == "opengl":
            world_to_camera = OPENGL_TO_OPENCV @ world_to_camera
        return SourceFrame(rgb=rgb, depth=depth, intrinsics=intrinsics, world_to_camera=world_to_camera)


SOURCE = SpringSource
