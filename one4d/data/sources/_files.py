"""Helpers shared by the dataset sources: file readers (8-bit RGB, 16-bit PNG, single-channel EXR, numeric text),
index checks, folder discovery, and the pinhole / quaternion-pose constructors several formats need.

Each turns a missing or unreadable file into :class:`FrameReadError` with one line naming the file, so a
source's ``read_frame`` reports which file of which sequence broke and the cutter skips that segment.
EXR goes through the ``openexr`` package, not OpenCV, whose EXR codec is absent or wrong for the channels
these datasets use (FORMATS.md section 0, pitfall 6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from one4d.data.sources.base import FrameReadError, require
from one4d.geometry import make_pose, quaternion_to_rotation


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit image file (PNG, JPEG) as (H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise FrameReadError(f"cannot read image {path}: {error}") from None


def read_png_uint16(path: Path) -> np.ndarray:
    """A 16-bit single-channel PNG as (H, W) uint16 (PIL keeps mode "I;16"); an 8-bit file is refused."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, ValueError) as error:
        raise FrameReadError(f"cannot read 16-bit PNG {path}: {error}") from None
    if array.ndim != 2 or array.dtype not in (np.uint16, np.int32):
        raise FrameReadError(f"{path} is not a single-channel 16-bit PNG (got {array.dtype} {array.shape})")
    return array.astype(np.uint16)


def read_exr_channel(file, channel: str, name: str | Path) -> np.ndarray:
    """Channel ``channel`` of an EXR (a path or an open binary file, e.g. a zip member) as (H, W) float32.

    ``name`` is what the error names (the path, or ``archive.zip:member``).
    """
    openexr = require("OpenEXR")
    try:
        channels = openexr.File(file).channels()
    except Exception as error:  # the openexr binding raises bare Exception/RuntimeError on bad files
        raise FrameReadError(f"cannot read EXR {name}: {error}") from None
    if channel not in channels:
        raise FrameReadError(f"EXR {name} has no channel {channel!r} (has {', '.join(sorted(channels))})")
    return np.asarray(channels[channel].pixels, dtype=np.float32)


def check_index(index: int, count: int, path: str | Path) -> None:
    """FrameReadError when frame ``index`` is outside the ``count`` entries of the pose/annotation file ``path``."""
    if not 0 <= index < count:
        raise FrameReadError(f"{path} has {count} frames, frame {index} requested")


def read_text_rows(path: Path, columns: int, header_lines: int = 0) -> np.ndarray:
    """A whitespace-separated numeric text file (pose / camera files) as (N, columns) float64; the first
    ``header_lines`` lines (column names, as VKITTI2's) and blank and '#' lines are skipped, a line of another width
    or with non-numbers is one FrameReadError naming the file and line."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise FrameReadError(f"cannot read {path}: {error}") from None
    rows = []
    for number, line in enumerate(lines[header_lines:], start=header_lines + 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            rows.append([float(field) for field in fields])
        except ValueError:
            raise FrameReadError(f"{path} line {number}: not numbers") from None
        if len(rows[-1]) != columns:
            raise FrameReadError(f"{path} line {number}: expected {columns} numbers, got {len(rows[-1])}")
    return np.asarray(rows, dtype=np.float64).reshape(-1, columns)


def marked_folders(root: Path, marker: str) -> list[Path]:
    """Folders holding the file ``marker`` (a scene's ``be_seq.csv``, ``split_info.json``): the root itself when it
    holds one (a single scene given as root), else its sub-folders that do, sorted."""
    if (root / marker).is_file():
        return [root]
    return sorted(path.parent for path in root.glob(f"*/{marker}"))


def pinhole(fx: float, fy: float, cx: float, cy: float, shift: float = 0.0) -> np.ndarray:
    """(3, 3) float64 K; ``shift`` is subtracted from cx and cy (0.5 turns a corner-convention principal point into
    the project's integer pixel centres)."""
    return np.array([[fx, 0.0, cx - shift], [0.0, fy, cy - shift], [0.0, 0.0, 1.0]], dtype=np.float64)


def quaternion_pose(translation, quaternion_xyzw) -> np.ndarray:
    """(4, 4) float64 [R(q) | t] from a translation (3,) and a quaternion (4,) in x, y, z, w order."""
    rotation = quaternion_to_rotation(torch.as_tensor(np.asarray(quaternion_xyzw, dtype=np.float64)))
    return make_pose(rotation, torch.as_tensor(np.asarray(translation, dtype=np.float64))).numpy()
