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
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from one4d.data.sources._files import check_index, read_png_uint16, read_rgb
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError
from one4d.geometry import make_pose

DEPTH_EPS = 1e-5
PYTORCH3D_TO_OPENCV = np.diag([-1.0, -1.0, 1.0])  # camera +X left, +Y up -> +X right, +Y down


def _slim(record: dict) -> dict:
    """The fields a frame needs, so a split's annotations take little memory once parsed."""
    return {
        "frame": int(record["frame_number"]),
        "image": record["image"]["path"],
        "size": tuple(record["image"]["size"]),  # (H, W)
        "depth": (record.get("depth") or {}).get("path"),
        "mask": (record.get("mask") or {}).get("path"),
        "viewpoint": record["viewpoint"],
    }


@lru_cache(maxsize=2)
def _load_split(path: str) -> dict[tuple[str, str], list[dict]]:
    """frame_annotations_<split>.jgz -> {(sequence, camera): records sorted by frame number}, parsed once per process."""
    try:
        with gzip.open(path, "rt", encoding="utf8") as file:
            records = json.load(file)
        grouped: dict[tuple[str, str], list[dict]] = {}
        for record in records:
            grouped.setdefault((record["sequence_name"], record["camera_name"]), []).append(_slim(record))
    except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
        raise FrameReadError(f"cannot read annotations {path}: {error!r}") from None
    return {key: sorted(frames, key=lambda frame: frame["frame"]) for key, frames in sorted(grouped.items())}


def ndc_to_pixel_intrinsics(viewpoint: dict, height: int, width: int, half_pixel_shift: bool) -> np.ndarray:
    """A record's NDC focal length and principal point -> (3, 3) pixel K (dynamic_stereo lines 86-102)."""
    half = np.array([width / 2.0, height / 2.0])
    layout = viewpoint.get("intrinsics_format", "ndc_isotropic").lower()
    if layout == "ndc_isotropic":
        scale = half.min()
    elif layout == "ndc_norm_image_bounds":
        scale = half
    else:
        raise FrameReadError(f"unknown intrinsics_format {layout!r} (expected ndc_isotropic or ndc_norm_image_bounds)")
    focal = np.asarray(viewpoint["focal_length"], dtype=np.float64) * scale  # (2,) pixels
    centre = half - np.asarray(viewpoint["principal_point"], dtype=np.float64) * scale - (0.5 if half_pixel_shift else 0.0)
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
            for (sequence, camera), frames in _load_split(str(path)).items():
                if camera in self.cameras and sequence not in self.exclude:
                    found.append(SequenceInfo(f"{split}/{sequence}/{camera}", len(frames), self.fps, split))
        if not present:
            first = self.splits[0] if self.splits else "train"
            raise SourceLayoutError(self.name, self.root, f"{first}/frame_annotations_{first}.jgz")
        return found

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        split, name, camera = sequence.name.split("/")
        path = self._annotations(split)
        frames = _load_split(str(path)).get((name, camera), [])
        check_index(index, len(frames), path)
        record, folder = frames[index], self.root / split
        if not record["depth"]:
            raise FrameReadError(f"{path}: frame {record['frame']} of {name}/{camera} has no depth path")
        rgb = read_rgb(folder / record["image"])
        depth = read_png_uint16(folder / record["depth"]).view(np.float16).astype(np.float32)  # (H, W) metres
        depth[depth < DEPTH_EPS] = 0.0
        height, width = record["size"]
        if rgb.shape[:2] != (height, width) or depth.shape != (height, width):
            raise FrameReadError(f"{folder / record['image']}: image {rgb.shape[:2]} / depth {depth.shape} differ from the annotated size {(height, width)}")
        mask = None
        if record["mask"]:
            mask = read_rgb(folder / record["mask"])[..., 0] > 127  # 0 / 255 foreground PNG
        viewpoint = record["viewpoint"]
        rotation = np.asarray(viewpoint["R"], dtype=np.float64).T  # row-vector R -> column form x_cam = R^T x + T
        translation = np.asarray(viewpoint["T"], dtype=np.float64)
        if self.axes == "pytorch3d":
            rotation, translation = PYTORCH3D_TO_OPENCV @ rotation, PYTORCH3D_TO_OPENCV @ translation
        world_to_camera = make_pose(torch.from_numpy(rotation), torch.from_numpy(translation)).numpy()
        intrinsics = ndc_to_pixel_intrinsics(viewpoint, height, width, self.half_pixel_shift)
        return SourceFrame(rgb=rgb, depth=depth, intrinsics=intrinsics, world_to_camera=world_to_camera, dynamic_mask=mask)


SOURCE = DynamicReplicaSource
