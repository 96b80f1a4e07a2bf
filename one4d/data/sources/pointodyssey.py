"""PointOdyssey (Zheng et al. 2023; v1.1/v1.2 release) as its authors ship it.

Layout (``y-zheng18/point_odyssey@a053342a:README.md``; CUT3R
``datasets_preprocess/preprocess_point_odyssey.py:11-16, 43-45``)::

    <root>/{train,val,test}/<seq>/rgbs/rgb_00000.jpg       RGB JPEG, 0-based, 5 digits
    <root>/{train,val,test}/<seq>/depths/depth_00000.png   uint16 PNG
    <root>/{train,val,test}/<seq>/anno.npz                 intrinsics (S,3,3), extrinsics (S,4,4), tracks

Conventions handled:
- Depth: ``z = png / 65535 * 1000`` metres, Blender z-depth (``utils/gen_tracking.py:115-124``,
  ``utils/reprojection.py:88``). The background is clipped to 1000 m, so code 65535 decodes to exactly
  1000.0 and is sky, not geometry: it becomes 0 here (CUT3R's ``depth > 1000`` test misses it,
  FORMATS.md section 3). ``depth_max`` (1000) is the scale.
- ``extrinsics`` are OpenCV world-to-camera (``README.md:12``, inverted for unprojection in
  ``utils/reprojection.py:54``); ``intrinsics`` are pixel K with integer pixel centres (its unprojection
  uses ``np.arange``, ``reprojection.py:35-45``). v1.0 used a flipped convention and is not supported.
- Unverified: whether the released ``anno.npz`` keeps the generator's float16 K and RT
  (``gen_tracking.py:226-236``). Decided: cast to float64 and, with ``orthonormalize: true`` (the default),
  replace each R by its nearest rotation (SVD), because float16 rounding (~1e-3) leaves R visibly non-rigid
  and the clip format inverts poses as rigid transforms.
- Older releases name the file ``annotations.npz`` (``gen_tracking.py:240-245``; pips2): both are read.
- No dynamic mask (``masks/`` are instance ids, not motion) and no captions. Splits stay separate: a
  sequence name starts with its split (``train/ani11_new_``).
"""

from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from one4d.data.sources._files import check_index, read_png_uint16, read_rgb
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError

ANNOTATION_NAMES = ("anno.npz", "annotations.npz")  # v1.1+ name first, then the older one
SKY_CODE = 65535  # background clipped to depth_max


@lru_cache(maxsize=8)
def _load_cameras(sequence_dir: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """(annotation path, intrinsics (S, 3, 3) float64, extrinsics (S, 4, 4) float64) of one sequence,
    read once per process. npz members load lazily, so the large track arrays are never decompressed."""
    folder = Path(sequence_dir)
    path = next((folder / name for name in ANNOTATION_NAMES if (folder / name).is_file()), folder / ANNOTATION_NAMES[0])
    try:
        with np.load(path) as annotations:
            intrinsics = np.asarray(annotations["intrinsics"], dtype=np.float64)
            extrinsics = np.asarray(annotations["extrinsics"], dtype=np.float64)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:  # BadZipFile: a truncated download
        raise FrameReadError(f"cannot read intrinsics/extrinsics from {path}: {error}") from None
    if intrinsics.ndim != 3 or intrinsics.shape[1:] != (3, 3) or extrinsics.shape != (len(intrinsics), 4, 4):
        raise FrameReadError(f"{path}: expected intrinsics (S,3,3) and extrinsics (S,4,4), got {intrinsics.shape} and {extrinsics.shape}")
    return path, intrinsics, extrinsics


def nearest_rotation(rotation: np.ndarray) -> np.ndarray:
    """The rotation closest to a nearly orthonormal 3x3 matrix (SVD, determinant +1)."""
    u, _, vt = np.linalg.svd(rotation)
    u[:, -1] *= np.sign(np.linalg.det(u @ vt))  # a reflection flips its last axis back
    return u @ vt


class PointOdysseySource(DatasetSource):
    """PointOdyssey sequences of the chosen splits; sequence names are ``<split>/<seq>``."""

    name = "pointodyssey"

    def __init__(self, root, splits=("train",), depth_max: float = 1000.0, orthonormalize: bool = True,
                 fps: float | None = 30.0):
        super().__init__(root)
        self.splits = list(splits)
        self.depth_max = float(depth_max)
        self.orthonormalize = orthonormalize
        self.fps = fps

    def sequences(self) -> list[SequenceInfo]:
        found = []
        for split in self.splits:
            for folder in sorted(path for path in (self.root / split).glob("*/rgbs") if path.is_dir()):
                count = len(list(folder.glob("rgb_*.jpg")))
                found.append(SequenceInfo(f"{split}/{folder.parent.name}", count, self.fps, split))
        if not found:
            raise SourceLayoutError(self.name, self.root, f"{'|'.join(self.splits)}/<sequence>/rgbs/rgb_00000.jpg")
        return found

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        folder = self.root / sequence.name
        rgb = read_rgb(folder / "rgbs" / f"rgb_{index:05d}.jpg")
        codes = read_png_uint16(folder / "depths" / f"depth_{index:05d}.png")  # (H, W) uint16
        depth = codes.astype(np.float32) * np.float32(self.depth_max / 65535.0)
        depth[codes == SKY_CODE] = 0.0
        path, intrinsics, extrinsics = _load_cameras(str(folder))
        check_index(index, len(extrinsics), path)
        world_to_camera = extrinsics[index].copy()
        if self.orthonormalize:
            world_to_camera[:3, :3] = nearest_rotation(world_to_camera[:3, :3])
        return SourceFrame(rgb=rgb, depth=depth, intrinsics=intrinsics[index].copy(), world_to_camera=world_to_camera)


SOURCE = PointOdysseySource
