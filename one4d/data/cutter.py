"""The clip cutter shared by every dataset converter: a source's frames -> one training clip folder.

A segment is ``num_frames`` frames ``stride`` apart (segments follow each other without overlap). Each frame
is centre-cropped to the training aspect ratio and resized to height x width:
- RGB with ``cv2.INTER_AREA`` when shrinking: an antialiased area average (the paper's sizes shrink 720p-1080p
  sources 2-3x; LANCZOS, CUT3R's choice in ``CUT3R/CUT3R:src/dust3r/datasets/utils/cropping.py``, rings at
  edges and is several times slower in PIL), ``cv2.INTER_LINEAR`` when enlarging (INTER_AREA does not
  antialias upwards);
- depth and the dynamic mask by nearest neighbour (never blending across a depth edge; FORMATS.md section 0.4),
  computed here with pixel centres aligned exactly as ``one4d.geometry.resize_intrinsics`` assumes
  (``cv2.INTER_NEAREST`` rounds from the pixel corner instead);
- intrinsics by ``one4d.geometry.crop_intrinsics`` then ``resize_intrinsics``.
NaN, infinite or negative depth becomes 0 (invalid) and is counted, as is depth beyond the source's
``far_depth``. Poses are kept as the source gives them (any world frame; the loader re-expresses them),
pointmaps are in frame 0's camera. The clip is written into ``.<name>.partial`` beside its final folder and
renamed when complete, so a killed conversion never leaves a clip that looks complete (the loader skips
dot-folders; the next run removes them).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from one4d.data.clip import read_meta, write_clip
from one4d.data.selfcheck import check_clip
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame
from one4d.geometry import crop_intrinsics, resize_intrinsics

PARTIAL_PREFIX, PARTIAL_SUFFIX = ".", ".partial"


class SegmentError(ValueError):
    """A segment that cannot become a clip (unreadable frame, no valid depth, sizes that differ): skipped and counted."""


@dataclass
class CutSettings:
    """What every clip of a run shares."""

    num_frames: int = 81
    height: int = 352
    width: int = 624
    far_depth: float | None = None  # metres; depth beyond becomes 0
    rgb_format: str = "mp4"
    crf: int = 0
    layout: str = "full"  # full | depth (one4d.data.clip: depth stores no pointmaps.npz, the reader computes them)


@dataclass
class CutClip:
    """One segment cropped and resized, ready to write."""

    rgb: np.ndarray  # (F, h, w, 3) uint8
    depth: np.ndarray  # (F, h, w) float32, 0 = invalid
    intrinsics: np.ndarray  # (F, 3, 3) float64
    world_to_camera: np.ndarray  # (F, 4, 4) float64
    dynamic_mask: np.ndarray | None  # (F, h, w) bool
    depth_nonfinite: int = 0  # output pixels whose depth was NaN, inf or negative
    depth_far: int = 0  # output pixels beyond far_depth
    seconds: dict = field(default_factory=dict)  # decode, resize


def plan_segments(available: int, num_frames: int, stride: int) -> list[int]:
    """First frames of the non-overlapping segments of ``num_frames`` frames ``stride`` apart in a sequence of
    ``available`` frames (empty when it is too short)."""
    span = (num_frames - 1) * stride + 1
    return list(range(0, available - span + 1, num_frames * stride))


def segment_frames(first: int, num_frames: int, stride: int) -> list[int]:
    """The source frame indices of one segment."""
    return [first + index * stride for index in range(num_frames)]


def crop_box(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width): the largest centred crop of the output's aspect ratio."""
    if width * out_height > out_width * height:  # wider than the output: crop the sides
        crop_height, crop_width = height, min(width, round(height * out_width / out_height))
    else:
        crop_height, crop_width = min(height, round(width * out_height / out_width)), width
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def nearest_indices(size: int, out_size: int) -> np.ndarray:
    """Source index of each output pixel for a nearest-neighbour resize size -> out_size with pixel centres
    aligned as in ``one4d.geometry.resize_intrinsics``: output centre x sits at (x + 0.5) * size / out_size - 0.5."""
    return np.minimum(np.floor((np.arange(out_size) + 0.5) * size / out_size).astype(np.int64), size - 1)


def resize_frame(frame: SourceFrame, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Centre-crop and resize one frame: RGB (h, w, 3) uint8, depth (h, w) float32, K (3, 3), mask (h, w) or None."""
    native_height, native_width = frame.rgb.shape[:2]
    if frame.depth.shape != (native_height, native_width):
        raise SegmentError(f"depth is {frame.depth.shape[0]}x{frame.depth.shape[1]} but RGB is {native_height}x{native_width}")
    if frame.dynamic_mask is not None and frame.dynamic_mask.shape != (native_height, native_width):
        # a mask of another size would be sampled at the wrong pixels (larger) or fail with an IndexError (smaller)
        raise SegmentError(f"dynamic mask is {frame.dynamic_mask.shape[0]}x{frame.dynamic_mask.shape[1]} but RGB is {native_height}x{native_width}")
    top, left, crop_height, crop_width = crop_box(native_height, native_width, height, width)
    rgb = frame.rgb[top:top + crop_height, left:left + crop_width]
    shrinking = crop_height * crop_width >= height * width
    rgb = cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    rows = top + nearest_indices(crop_height, height)
    cols = left + nearest_indices(crop_width, width)
    depth = frame.depth[rows[:, None], cols[None, :]].astype(np.float32)  # (h, w)
    mask = None if frame.dynamic_mask is None else frame.dynamic_mask[rows[:, None], cols[None, :]].astype(bool)
    intrinsics = crop_intrinsics(torch.as_tensor(frame.intrinsics, dtype=torch.float64), top, left)
    intrinsics = resize_intrinsics(intrinsics, width / crop_width, height / crop_height).numpy()
    return rgb, depth, intrinsics, mask


def clean_depth(depth: np.ndarray, far_depth: float | None) -> tuple[np.ndarray, int, int]:
    """Depth with NaN/inf/negative values and values beyond ``far_depth`` set to 0, and the two counts."""
    bad = ~np.isfinite(depth) | (depth < 0)
    depth = np.where(bad, 0.0, depth).astype(np.float32)
    far = depth > far_depth if far_depth is not None else np.zeros(depth.shape, bool)
    return np.where(far, 0.0, depth).astype(np.float32), int(bad.sum()), int(far.sum())


def cut_segment(source: DatasetSource, sequence: SequenceInfo, frames: list[int], settings: CutSettings) -> CutClip:
    """Read and resize the frames of one segment; SegmentError names the problem."""
    decode = resize = 0.0
    rgbs, depths, intrinsics, poses, masks = [], [], [], [], []
    for index in frames:
        start = time.perf_counter()
        try:
            frame = source.read_frame(sequence, index)
        except (FrameReadError, OSError) as error:  # OSError: a file the source did not check first
            raise SegmentError(f"frame {index}: {error}") from None
        except Exception as error:  # a decoder's own exception on a corrupt file: skip and name it, or every resume stops there
            raise SegmentError(f"frame {index}: {type(error).__name__}: {error}") from None
        middle = time.perf_counter()
        rgb, depth, K, mask = resize_frame(frame, settings.height, settings.width)
        rgbs.append(rgb)
        depths.append(depth)
        intrinsics.append(K)
        poses.append(np.asarray(frame.world_to_camera, dtype=np.float64))
        masks.append(mask)
        decode += middle - start
        resize += time.perf_counter() - middle
    start = time.perf_counter()
    depth, nonfinite, far = clean_depth(np.stack(depths), settings.far_depth)  # (F, h, w)
    cameras = np.stack(intrinsics), np.stack(poses)
    if not (np.isfinite(cameras[0]).all() and np.isfinite(cameras[1]).all()):
        raise SegmentError("a camera has NaN or infinite values")
    if any(mask is None for mask in masks) and any(mask is not None for mask in masks):
        raise SegmentError("only some frames have a dynamic mask")
    dynamic = None if masks[0] is None else np.stack(masks)
    resize += time.perf_counter() - start
    return CutClip(np.stack(rgbs), depth, cameras[0], cameras[1], dynamic, nonfinite, far,
                   {"decode": decode, "resize": resize})


def partial_folder(folder: Path) -> Path:
    """The temporary sibling a clip is written into before it is renamed to ``folder``."""
    return folder.parent / f"{PARTIAL_PREFIX}{folder.name}{PARTIAL_SUFFIX}"


def write_cut_clip(folder: str | Path, clip: CutClip, meta: dict, settings: CutSettings) -> dict:
    """Self-check, compute pointmaps and write the clip atomically (partial folder, then rename).

    Returns the meta written (with ``selfcheck_error``, ``selfcheck_outliers``, the depth counts) and the
    seconds spent in ``selfcheck`` and ``write``. SegmentError when the clip has no valid depth.
    """
    folder = Path(folder)
    if folder.exists():  # not a finished clip (prepare keeps those): a folder someone else put there, left alone
        raise SegmentError(f"{folder} exists but is not a complete clip (no valid meta.json); remove it to convert this segment")
    if not (clip.depth > 0).any():
        raise SegmentError("no valid depth (all 0, non-finite or beyond far_depth)")
    start = time.perf_counter()
    check = check_clip(clip.depth, clip.intrinsics, clip.world_to_camera, clip.dynamic_mask)
    checked = time.perf_counter()
    meta = dict(meta)
    meta.update(
        selfcheck_error=None if math.isnan(check.error) else check.error,
        selfcheck_outliers=None if math.isnan(check.outliers) else check.outliers,
        selfcheck_masked=clip.dynamic_mask is not None,  # False: moving things were compared too and count as outliers
        depth_nonfinite=clip.depth_nonfinite,
        depth_far=clip.depth_far,
    )
    partial = partial_folder(folder)
    if partial.exists():
        shutil.rmtree(partial)
    try:
        # pointmaps=None: write_clip computes them from the float16 depth it stores, exactly as the depth-only
        # layout's reader does, so both layouts give bitwise-identical samples.
        written = write_clip(partial, clip.rgb, None, clip.depth, clip.intrinsics, clip.world_to_camera, meta,
                             rgb_format=settings.rgb_format, crf=settings.crf, layout=settings.layout)
    except ValueError as error:  # ClipError: float16 range, or no valid point for the normalisation
        shutil.rmtree(partial, ignore_errors=True)
        raise SegmentError(str(error).split(": ", 1)[-1]) from None
    os.replace(written, folder)  # atomic on one file system: the clip appears complete or not at all
    return {"meta": read_meta(folder), "seconds": {"selfcheck": checked - start, "write": time.perf_counter() - checked}}
