"""Dynamic Replica (Karaev et al. 2023, DynamicStereo) as its authors ship it.

Layout (``facebookresearch/dynamic_stereo@c5077aa1:datasets/dynamic_stereo_datasets.py:329-363``; paths inside
the annotations are relative to the split folder)::

    <root>/{train,valid,test}/frame_annotations_<split>.jgz     gzip JSON list, one record per frame and camera
    <root>/<split>/<seq>/<camera>/images/..., depths/..., masks/...   (the paths the records name)

Each record: ``sequence_name``, ``camera_name`` (left/right), ``frame_number``, ``image{path, size=(H, W)}``,
``depth{path}``, ``mask{path}``, ``viewpoint{R, T, focal_length, principal_point, intrinsics_format}``. The JSON
is parsed as plain dicts (no pytorch3d).

Conventions handled:
- Depth: a 16-bit PNG whose bits are a float16 value (``_load_16big_png_depth``, lines 65-74); values
  below 1e-5 are invalid (``depth_eps``, line 63) and become 0. Metres (inferred: Replica scenes).
- Intrinsics are NDC: ``half = (W/2, H/2)``, ``s = min(half)`` for ``ndc_isotropic`` and ``s = half`` for
  ``ndc_norm_image_bounds``; ``f_px = f_ndc * s``, ``c_px = half - pp_ndc * s`` (lines 86-102). PyTorch3D's
  NDC puts +-1 on the image borders, so ``c_px`` counts from the pixel corner; ``half_pixel_shift: true``
  subtracts 0.5 (a centred camera, pp = 0, then sits at (W-1)/2 as in ``one4d.geometry``). Unverified
  against the renderer; decided from PyTorch3D's convention.
- Poses are PyTorch3D: ``X_cam = X_world @ R + T`` (row vectors), camera +X left, +Y up. OpenCV
  world-to-camera is ``R_cv = diag(-1,-1,1) R^T``, ``t_cv = diag(-1,-1,1) T`` (pytorch3d
  ``opencv_from_cameras_projection``; CUT3R ``preprocess_dynamic_replica.py:154-161``). ``axes: opencv``
  drops the flip (MonST3R's loader has no flip either, ``dust3r/datasets/dynamic_replica.py:220-222``) - wrong,
  kept to show the self-check catching it.
- ``mask`` is the binary foreground (the moving humans and animals, ``README.md:19-26``): the dynamic mask.
- Left and right views are separate sequences (CUT3R does the same); ``cameras`` defaults to the left one
  only, since the right view is the same motion one stereo baseline aside. The ``real`` split has no depth and is not read.
  Frame rate unverified: ``fps`` null unless set. No captions. ``exclude`` names sequences to leave out; the yaml
  lists the two the authors' loader skips (``8369cb-7_obj``, ``a7b915-7_obj``, ``DynamicReplicaDataset.__init__``).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from one4d.data.sources._files import check_index, read_png_uint16, read_rgb
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError
from one4d.geometry import make_pose

DEPTH_EPS = 1e-5
PYTORCH3D_TO_OPENCV = np.diag([-1.0, -1.0, 1.0])  # camera +X left, +Y up -> +X right, +Y down


NDC_FORMATS = ("ndc_isotropic", "ndc_norm_image_bounds")


@dataclass
class _Frame:
    """What one annotation record says about a frame, kept compact: a split's records stay in memory per worker."""

    number: int
    image: str  # paths relative to the split folder
    depth: str | None
    mask: str | None
    size: tuple[int, int]  # (H, W)
    camera: np.ndarray  # (16,) float64: R (9, row-vector convention), T (3), focal_length (2), principal_point (2)
    ndc_format: int  # index into NDC_FORMATS


def _frame(record: dict) -> _Frame:
    viewpoint = record["viewpoint"]
    layout = viewpoint.get("intrinsics_format", "ndc_isotropic").lower()
    if layout not in NDC_FORMATS:
        raise ValueError(f"unknown intrinsics_format {layout!r} (expected {' or '.join(NDC_FORMATS)})")
    camera = np.concatenate([np.asarray(viewpoint[key], dtype=np.float64).reshape(-1)
                             for key in ("R", "T", "focal_length", "principal_point")])
    if camera.shape != (16,):
        raise ValueError(f"viewpoint of frame {record['frame_number']} has {camera.size} numbers in R, T, focal_length, principal_point, not 16")
    return _Frame(int(record["frame_number"]), record["image"]["path"], (record.get("depth") or {}).get("path"),
                  (record.get("mask") or {}).get("path"), tuple(record["image"]["size"]), camera, NDC_FORMATS.index(layout))


@lru_cache(maxsize=3)
def _load_split(path: str, cameras: tuple[str, ...]) -> dict[tuple[str, str], list[_Frame]]:
    """frame_annotations_<split>.jgz -> {(sequence, camera): frames sorted by frame number} for ``cameras``, parsed
    once per process (the JSON is large: only the fields used are kept)."""
    try:
        with gzip.open(path, "rt", encoding="utf8") as file:
            records = json.load(file)
        grouped: dict[tuple[str, str], list[_Frame]] = {}
        for record in records:
            if record["camera_name"] in cameras:
                grouped.setdefault((record["sequence_name"], record["camera_name"]), []).append(_frame(record))
    except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
        raise FrameReadError(f"cannot read annotations {path}: {error}") from None
    return {key: sorted(frames, key=lambda frame: frame.number) for key, frames in sorted(grouped.items())}


def ndc_to_pixel_intrinsics(focal_ndc: np.ndarray, principal_ndc: np.ndarray, ndc_format: str, height: int, width: int,
                            half_pixel_shift: bool) -> np.ndarray:
    """NDC focal length (2,) and principal point (2,) -> (3, 3) pixel K (dynamic_stereo lines 86-102)."""
    half = np.array([width / 2.0, height / 2.0])
    scale = half.min() if ndc_format == "ndc_isotropic" else half  # ndc_norm_image_bounds: per axis
    focal = focal_ndc * scale  # (2,) pixels
    centre = half - principal_ndc * scale - (0.5 if half_pixel_shift else 0.0)
    return np.array([[focal[0], 0.0, centre[0]], [0.0, focal[1], centre[1]], [0.0, 0.0, 1.0]])


class DynamicReplicaSource(DatasetSource):
    """Dynamic Replica sequences; names are ``<split>/<sequence>/<camera>``."""

    name = "dynamic_replica"

    def __init__(self, root, splits=("train",), cameras=("left",), half_pixel_shift: bool = True,
                 axes: str = "pytorch3d", fps: float | None = None, exclude=()):
        super().__init__(root)
        if axes not in ("pytorch3d", "opencv"):
            raise ValueError(f"dynamic_replica: axes must be 'pytorch3d' or 'opencv', got {axes!r}")
        self.splits, self.cameras = list(splits), list(cameras)
        self.half_pixel_shift, self.axes, self.fps, self.exclude = half_pixel_shift, axes, fps, set(exclude)

    def _annotations(self, split: str) -> Path:
        return self.root / split / f"frame_annotations_{split}.jgz"

    def sequences(self) -> list[SequenceInfo]:
        found, present = [], False
        for split in self.splits:
            path = self._annotations(split)
            if not path.is_file():
                continue
            present = True
            for (sequence, camera), frames in _load_split(str(path), tuple(self.cameras)).items():
                if sequence not in self.exclude:
                    found.append(SequenceInfo(f"{split}/{sequence}/{camera}", len(frames), self.fps, split))
        if not present:
            first = self.splits[0] if self.splits else "train"
            raise SourceLayoutError(self.name, self.root, f"{first}/frame_annotations_{first}.jgz")
        return found

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        split, name, camera = sequence.name.split("/")
        path = self._annotations(split)
        frames = _load_split(str(path), tuple(self.cameras)).get((name, camera), [])
        check_index(index, len(frames), path)
        frame, folder = frames[index], self.root / split
        if not frame.depth:
            raise FrameReadError(f"{path}: frame {frame.number} of {name}/{camera} has no depth path")
        rgb = read_rgb(folder / frame.image)
        depth = read_png_uint16(folder / frame.depth).view(np.float16).astype(np.float32)  # (H, W) metres
        depth[(depth >= 0) & (depth < DEPTH_EPS)] = 0.0  # negative / NaN values stay: the cutter zeroes and counts them
        height, width = frame.size
        if rgb.shape[:2] != (height, width) or depth.shape != (height, width):
            raise FrameReadError(f"{folder / frame.image}: image {rgb.shape[:2]} / depth {depth.shape} differ from the annotated size {(height, width)}")
        mask = read_rgb(folder / frame.mask)[..., 0] > 127 if frame.mask else None  # 0 / 255 foreground PNG
        rotation = frame.camera[:9].reshape(3, 3).T  # row-vector R -> column form x_cam = R^T x + T
        translation = frame.camera[9:12]
        if self.axes == "pytorch3d":
            rotation, translation = PYTORCH3D_TO_OPENCV @ rotation, PYTORCH3D_TO_OPENCV @ translation
        world_to_camera = make_pose(torch.from_numpy(rotation), torch.from_numpy(translation)).numpy()
        intrinsics = ndc_to_pixel_intrinsics(frame.camera[12:14], frame.camera[14:16], NDC_FORMATS[frame.ndc_format],
                                             height, width, self.half_pixel_shift)
        return SourceFrame(rgb=rgb, depth=depth, intrinsics=intrinsics, world_to_camera=world_to_camera, dynamic_mask=mask)


SOURCE = DynamicReplicaSource
