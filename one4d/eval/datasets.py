"""Benchmark readers in the datasets' own published layouts (data/benchmarks.md).

Each ``*_sequences(root, ...)`` checks the root at once and returns one ``SequenceSource`` per
expected sequence; ``source.load()`` reads that sequence and raises a ValueError naming the
sequence and the file when something is missing or unreadable, so the runner can stop
(strict) or skip and report it. With ``strict=True`` (``scripts/eval.py``'s default) a root that
lacks any of the benchmark's sequences is refused at once, before a model is loaded; with
``strict=False`` the sequences present are evaluated and the tables mark the run partial, with
each number's count of the benchmark's sequences (``BENCHMARK_SEQUENCES``).
Protocols follow MonST3R / Geo4D / CUT3R:
- Sintel (training, final pass): depth on the 23 sequences of ``SINTEL_SEQUENCES``, pose on the 14
  of ``SINTEL_POSE_SEQUENCES``.
- Bonn: 5 sequences, images and depth each sorted by name and cut to [30:140] by index
  (MonST3R's prepare_bonn.py); depth PNG / 5000. The paper does not evaluate Bonn poses.
- TUM-dynamics: 8 freiburg3 sequences; rgb.txt associated to groundtruth.txt by timestamp
  (0.02 s), then frames [::3][:90] (MonST3R's prepare_tum.py). The One4D paper says 30 frames;
  ``num_frames`` sets it. Depth is not evaluated on TUM; ``with_depth`` reads it anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import imageio.v3 as iio
import numpy as np
import torch

from one4d.geometry import associate_timestamps, invert_pose, read_tum_trajectory

SINTEL_TAG = 202021.25
SINTEL_SEQUENCES = (  # the MPI Sintel training set
    "alley_1", "alley_2", "ambush_2", "ambush_4", "ambush_5", "ambush_6", "ambush_7", "bamboo_1", "bamboo_2",
    "bandage_1", "bandage_2", "cave_2", "cave_4", "market_2", "market_5", "market_6", "mountain_1", "shaman_2",
    "shaman_3", "sleeping_1", "sleeping_2", "temple_2", "temple_3",
)
SINTEL_POSE_SEQUENCES = (
    "alley_2", "ambush_4", "ambush_5", "ambush_6", "cave_2", "cave_4", "market_2",
    "market_5", "market_6", "shaman_3", "sleeping_1", "sleeping_2", "temple_2", "temple_3",
)
BONN_SEQUENCES = ("balloon2", "crowd2", "crowd3", "person_tracking2", "synchronous")
BONN_INTRINSICS = (542.822841, 542.576870, 315.593520, 237.756098)
TUM_SEQUENCES = tuple(
    f"rgbd_dataset_freiburg3_{pose}_{motion}"
    for pose in ("sitting", "walking") for motion in ("static", "xyz", "halfsphere", "rpy")
)
TUM_FR3_INTRINSICS = (535.4, 539.2, 320.1, 247.6)
PNG_DEPTH_SCALE = 5000.0
# What each benchmark's depth and pose numbers average over when complete (the tables count against these).
BENCHMARK_SEQUENCES = {
    "sintel": {"depth": SINTEL_SEQUENCES, "pose": SINTEL_POSE_SEQUENCES},
    "bonn": {"depth": BONN_SEQUENCES},
    "tum": {"pose": TUM_SEQUENCES},
}


@dataclass
class EvalSequence:
    """One benchmark sequence: frames (F, H, W, 3) uint8 and its ground truth."""

    name: str
    frames: np.ndarray  # (F, H, W, 3) uint8
    depth: np.ndarray | None = None  # (F, H, W) float32 metres, 0 = invalid
    camera_to_world: np.ndarray | None = None  # (F, 4, 4) float64
    intrinsics: np.ndarray | None = None  # (F, 3, 3) float64
    frame_paths: list[str] = field(default_factory=list)
    evaluate_depth: bool = True
    evaluate_pose: bool = True

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class SequenceSource:
    """A named sequence that is read only when ``load()`` is called (one at a time in memory)."""

    name: str
    load: Callable[[], EvalSequence]


# ----------------------------------------------------------------------------- file formats


def _read_tagged(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) < 4 or np.frombuffer(data[:4], np.float32)[0] != np.float32(SINTEL_TAG):
        raise ValueError(f"{path}: not a Sintel file (the first float32 must be the tag {SINTEL_TAG})")
    return data


def read_sintel_depth(path: str | Path) -> np.ndarray:
    """Sintel .dpt: float32 tag, int32 width, int32 height, float32 depth (H, W)."""
    path = Path(path)
    data = _read_tagged(path)
    width, height = np.frombuffer(data[4:12], np.int32)
    expected = 12 + 4 * int(width) * int(height)
    if width <= 0 or height <= 0 or len(data) != expected:
        raise ValueError(f"{path}: header says {width}x{height} depth ({expected} bytes), file has {len(data)} bytes")
    return np.frombuffer(data[12:], np.float32).reshape(height, width).copy()


def write_sintel_depth(path: str | Path, depth: np.ndarray) -> None:
    """Write (H, W) depth in Sintel's .dpt format."""
    height, width = depth.shape
    header = np.array([SINTEL_TAG], np.float32).tobytes() + np.array([width, height], np.int32).tobytes()
    Path(path).write_bytes(header + np.asarray(depth, np.float32).tobytes())


def read_sintel_camera(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Sintel .cam: float32 tag, 9 float64 intrinsics M, 12 float64 world-to-camera N (3x4).

    Returns (K (3, 3), world_to_camera (4, 4)).
    """
    path = Path(path)
    data = _read_tagged(path)
    if len(data) != 4 + 21 * 8:
        raise ValueError(f"{path}: a Sintel .cam file holds a tag and 21 float64 values ({4 + 21 * 8} bytes), got {len(data)} bytes")
    values = np.frombuffer(data[4:], np.float64)
    world_to_camera = np.eye(4)
    world_to_camera[:3] = values[9:].reshape(3, 4)
    return values[:9].reshape(3, 3).copy(), world_to_camera


def write_sintel_camera(path: str | Path, intrinsics: np.ndarray, world_to_camera: np.ndarray) -> None:
    """Write K (3, 3) and world-to-camera (3 or 4, 4) in Sintel's .cam format."""
    values = np.concatenate([np.asarray(intrinsics, np.float64).reshape(9), np.asarray(world_to_camera, np.float64)[:3].reshape(12)])
    Path(path).write_bytes(np.array([SINTEL_TAG], np.float32).tobytes() + values.tobytes())


def read_rgb(path: str | Path) -> np.ndarray:
    """An 8-bit image as (H, W, 3) uint8; a clear error for unreadable files."""
    try:
        image = iio.imread(path, plugin="pillow")
    except Exception as error:  # imageio raises many types for broken files
        raise ValueError(f"{path}: unreadable image ({error})") from error
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def read_png_depth(path: str | Path, scale: float = PNG_DEPTH_SCALE) -> np.ndarray:
    """16-bit PNG depth (TUM, Bonn): metres = value / 5000 in float64, 0 = invalid.

    float64 as MonST3R's and CUT3R's ``depth_read_bonn`` divide (``astype(np.float64) / 5000.0``): their
    protocols keep the ground truth's dtype, so a float32 copy would move their scale fit (one4d.eval.protocols)."""
    try:
        raw = iio.imread(path, plugin="pillow")
    except Exception as error:
        raise ValueError(f"{path}: unreadable depth PNG ({error})") from error
    if raw.ndim != 2:
        raise ValueError(f"{path}: a depth PNG has one channel, got shape {raw.shape}")
    return raw.astype(np.float64) / scale


def _intrinsics(fx: float, fy: float, cx: float, cy: float, count: int) -> np.ndarray:
    matrix = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return np.repeat(matrix[None], count, axis=0)


def _check_root(root: str | Path, benchmark: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{benchmark} root {root} is not a directory (see data/benchmarks.md for the layout)")
    return root


def _require_some(root: Path, benchmark: str, expected: list[Path]) -> None:
    if not any(path.is_dir() for path in expected):
        names = ", ".join(path.name for path in expected[:4])
        raise ValueError(f"{benchmark} root {root} holds none of the expected sequences ({names}, ...); see data/benchmarks.md")


def _require_all(root: Path, benchmark: str, expected: dict[str, Path]) -> None:
    """Strict: every expected sequence's folder is there, else one line naming how many are missing and which."""
    missing = [name for name, folder in expected.items() if not folder.is_dir()]
    if missing:
        names = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise ValueError(
            f"{benchmark} root {root} lacks {len(missing)} of its {len(expected)} sequences ({names}): complete it "
            f"(data/benchmarks.md), or strict=false to evaluate the {len(expected) - len(missing)} present (the tables mark it partial)"
        )


def _sorted_files(folder: Path, suffix: str, sequence: str) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"sequence {sequence}: missing folder {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix == suffix)
    if not files:
        raise ValueError(f"sequence {sequence}: no {suffix} file in {folder}")
    return files


# ----------------------------------------------------------------------------- Sintel


def sintel_sequences(
    root: str | Path, sequences: list[str] | None = None, pose_sequences=SINTEL_POSE_SEQUENCES,
    pass_name: str = "final", pose_only: bool = False, strict: bool = False,
) -> list[SequenceSource]:
    """Sintel training set: ``training/<pass>/<seq>/frame_XXXX.png``, ``training/depth/<seq>/*.dpt``,
    ``training/camdata_left/<seq>/*.cam``. ``sequences=None`` takes every folder of the pass, and with
    ``strict`` requires the 23 of ``SINTEL_SEQUENCES``. ``pose_only`` keeps only the pose sequences (Table 4 alone).
    """
    root = _check_root(root, "Sintel")
    images = root / "training" / pass_name
    if not images.is_dir():
        raise ValueError(f"Sintel root {root}: missing folder {images} (see data/benchmarks.md)")
    names = sorted(p.name for p in images.iterdir() if p.is_dir()) if sequences is None else list(sequences)
    expected = list(SINTEL_SEQUENCES) if sequences is None else names
    if pose_only:
        names = [n for n in names if n in set(pose_sequences)]
        expected = [n for n in expected if n in set(pose_sequences)]
    _require_some(root, "Sintel", [images / n for n in names])
    if strict:
        _require_all(root, "Sintel", {n: images / n for n in expected})
    return [SequenceSource(n, lambda n=n: load_sintel_sequence(root, n, pass_name, n in set(pose_sequences))) for n in names]


def load_sintel_sequence(root: Path, name: str, pass_name: str = "final", evaluate_pose: bool = True) -> EvalSequence:
    """Read one Sintel sequence; depth and camera files must match the images one to one."""
    image_files = _sorted_files(root / "training" / pass_name / name, ".png", name)
    depth_dir, camera_dir = root / "training" / "depth" / name, root / "training" / "camdata_left" / name
    depth_files = [depth_dir / (p.stem + ".dpt") for p in image_files]
    camera_files = [camera_dir / (p.stem + ".cam") for p in image_files]
    for path in depth_files + (camera_files if evaluate_pose else []):
        if not path.is_file():
            raise ValueError(f"sequence {name}: missing {path} ({len(image_files)} images need one each)")
    frames = np.stack([read_rgb(p) for p in image_files])  # (F, H, W, 3)
    depth = np.stack([read_sintel_depth(p) for p in depth_files])  # (F, H, W)
    if depth.shape[1:] != frames.shape[1:3]:
        raise ValueError(f"sequence {name}: depth {depth.shape[1:]} and images {frames.shape[1:3]} differ in size")
    intrinsics = camera_to_world = None
    if all(p.is_file() for p in camera_files):
        cameras = [read_sintel_camera(p) for p in camera_files]
        intrinsics = np.stack([k for k, _ in cameras])
        world_to_camera = torch.from_numpy(np.stack([w for _, w in cameras]))
        camera_to_world = invert_pose(world_to_camera).numpy()
    return EvalSequence(name, frames, depth, camera_to_world, intrinsics, [str(p) for p in image_files],
                        evaluate_depth=True, evaluate_pose=evaluate_pose)


# ----------------------------------------------------------------------------- Bonn


def bonn_sequences(root: str | Path, sequences=BONN_SEQUENCES, start: int = 30, stop: int = 140,
                  strict: bool = False) -> list[SequenceSource]:
    """Bonn RGB-D Dynamic: ``rgbd_bonn_<seq>/rgb/*.png`` and ``depth/*.png``, frames [start:stop] by index.
    ``strict``: every listed sequence's folder must be there."""
    root = _check_root(root, "Bonn")
    _require_some(root, "Bonn", [root / f"rgbd_bonn_{n}" for n in sequences])
    if strict:
        _require_all(root, "Bonn", {n: root / f"rgbd_bonn_{n}" for n in sequences})
    return [SequenceSource(n, lambda n=n: load_bonn_sequence(root, n, start, stop)) for n in sequences]


def load_bonn_sequence(root: Path, name: str, start: int = 30, stop: int = 140) -> EvalSequence:
    folder = root / f"rgbd_bonn_{name}"
    if not folder.is_dir():
        raise ValueError(f"sequence {name}: missing folder {folder}")
    image_files = _sorted_files(folder / "rgb", ".png", name)[start:stop]
    depth_files = _sorted_files(folder / "depth", ".png", name)[start:stop]
    if len(depth_files) != len(image_files) or not image_files:
        raise ValueError(
            f"sequence {name}: {len(image_files)} images but {len(depth_files)} depth files in {folder / 'depth'} after the [{start}:{stop}] cut"
        )
    frames = np.stack([read_rgb(p) for p in image_files])  # (F, H, W, 3)
    depth = np.stack([read_png_depth(p) for p in depth_files])  # (F, H, W)
    return EvalSequence(name, frames, depth, None, _intrinsics(*BONN_INTRINSICS, len(frames)),
                        [str(p) for p in image_files], evaluate_depth=True, evaluate_pose=False)


# ----------------------------------------------------------------------------- TUM


def read_file_list(path: Path, sequence: str) -> tuple[np.ndarray, list[str]]:
    """TUM ``rgb.txt`` / ``depth.txt``: ``timestamp filename`` lines, '#' comments."""
    if not path.is_file():
        raise ValueError(f"sequence {sequence}: missing {path}")
    stamps, names = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected 'timestamp filename'")
        stamps.append(float(fields[0]))
        names.append(fields[1])
    return np.asarray(stamps), names


def tum_sequences(
    root: str | Path, sequences=TUM_SEQUENCES, stride: int = 3, num_frames: int = 90,
    max_difference: float = 0.02, with_depth: bool = False, strict: bool = False,
) -> list[SequenceSource]:
    """TUM RGB-D: ``<seq>/rgb.txt``, ``rgb/``, ``groundtruth.txt`` (and ``depth.txt``, ``depth/``).
    ``strict``: every listed sequence's folder must be there."""
    root = _check_root(root, "TUM")
    _require_some(root, "TUM", [root / n for n in sequences])
    if strict:
        _require_all(root, "TUM", {n: root / n for n in sequences})
    return [
        SequenceSource(n, lambda n=n: load_tum_sequence(root, n, stride, num_frames, max_difference, with_depth))
        for n in sequences
    ]


def load_tum_sequence(
    root: Path, name: str, stride: int = 3, num_frames: int = 90, max_difference: float = 0.02, with_depth: bool = False
) -> EvalSequence:
    folder = root / name
    if not folder.is_dir():
        raise ValueError(f"sequence {name}: missing folder {folder}")
    rgb_stamps, rgb_names = read_file_list(folder / "rgb.txt", name)
    if not (folder / "groundtruth.txt").is_file():
        raise ValueError(f"sequence {name}: missing {folder / 'groundtruth.txt'}")
    gt_stamps, gt_poses = read_tum_trajectory(folder / "groundtruth.txt")
    rgb_index, gt_index = associate_timestamps(rgb_stamps, gt_stamps, max_difference)
    if len(rgb_index) == 0:
        raise ValueError(
            f"sequence {name}: no timestamp of {folder / 'rgb.txt'} is within {max_difference} s of one in {folder / 'groundtruth.txt'}"
        )
    rgb_index, gt_index = rgb_index[::stride][:num_frames], gt_index[::stride][:num_frames]
    image_files = [folder / rgb_names[i] for i in rgb_index]
    for path in image_files:
        if not path.is_file():
            raise ValueError(f"sequence {name}: missing {path} (listed in rgb.txt)")
    frames = np.stack([read_rgb(p) for p in image_files])  # (F, H, W, 3)
    depth = None
    if with_depth:
        depth_stamps, depth_names = read_file_list(folder / "depth.txt", name)
        chosen, depth_index = associate_timestamps(rgb_stamps[rgb_index], depth_stamps, max_difference)
        if len(chosen) != len(rgb_index):
            raise ValueError(f"sequence {name}: {len(rgb_index) - len(chosen)} chosen frames have no depth within {max_difference} s in depth.txt")
        depth = np.stack([read_png_depth(folder / depth_names[j]) for j in depth_index])  # (F, H, W)
    return EvalSequence(name, frames, depth, gt_poses[gt_index].numpy(), _intrinsics(*TUM_FR3_INTRINSICS, len(frames)),
                        [str(p) for p in image_files], evaluate_depth=False, evaluate_pose=True)


READERS = {"sintel": sintel_sequences, "bonn": bonn_sequences, "tum": tum_sequences}
