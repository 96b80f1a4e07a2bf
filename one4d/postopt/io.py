"""Reading pointmaps for post-optimisation and writing what it recovered.

Output files follow the clip format of :mod:`one4d.data.clip`: ``cameras.json`` with
"intrinsics" (F, 3, 3) and "world_to_camera" (F, 4, 4) (OpenCV), ``depth.npz`` with "depth"
(F, H, W), 0 = invalid (no point, or a point behind its camera); plus a TUM trajectory of
camera-to-world poses for evo and the eval code.

Timestamps, one rule for every ``trajectory.txt`` the project writes (sampler, demo,
``scripts/postopt.py``): frame j is at j / frame_rate seconds after frame 0
(:func:`frame_timestamps`). A sampler output's frame rate is its input's fps x (F - 1) / (N - 1)
(F frames evenly resampled from N input frames, :func:`sampler_frame_rate`), so a stamp is the
input time the frame shows; a single image's generated frames are at the input fps (16 by
default). The sampler records it as ``frame_rate`` in pointmaps.npz and summary.json, and
``scripts/postopt.py`` reads it back (or takes ``fps=``). With no rate known the stamps are frame
indices (1 frame per second), and the trajectory's header says which applies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from one4d.geometry import write_tum_trajectory
from one4d.postopt.recover import CameraRecovery, recover_cameras

POINTMAPS_NAME = "pointmaps.npz"


def load_pointmaps(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Pointmaps (F, H, W, 3) and optional confidence (F, H, W) from a ``.npz`` or a folder holding ``pointmaps.npz``.

    The archive's "pointmaps" array is used (or its only array); "confidence" is optional.
    """
    path = Path(path)
    if path.is_dir():
        path = path / POINTMAPS_NAME
    if not path.is_file():
        raise ValueError(f"{path}: no such file; pass a pointmaps .npz or a folder holding {POINTMAPS_NAME}")
    with np.load(path) as archive:
        names = list(archive.files)
        if "pointmaps" in names:
            pointmaps = archive["pointmaps"]
        elif len(names) == 1:
            pointmaps = archive[names[0]]
        else:
            raise ValueError(f"{path}: expected an array named 'pointmaps', found {names}")
        confidence = archive["confidence"] if "confidence" in names else None
    return pointmaps, confidence


def sampler_frame_rate(fps: float, num_frames: int, input_frames: int) -> float:
    """Frames per second of a sampler output: F frames evenly resampled from an N-frame input at ``fps``
    span its (N - 1) / fps seconds, so fps (F - 1) / (N - 1); a single image's frames are at ``fps``."""
    if input_frames < 2 or num_frames < 2:
        return float(fps)
    return float(fps) * (num_frames - 1) / (input_frames - 1)


def frame_timestamps(num_frames: int, frame_rate: float | None = None) -> np.ndarray:
    """The timestamp rule of every trajectory.txt: frame j at j / frame_rate seconds; None: frame indices (rate 1)."""
    if frame_rate is not None and not (np.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"a frame rate must be a positive number of frames per second, got {frame_rate}")
    return np.arange(num_frames, dtype=np.float64) / (1.0 if frame_rate is None else float(frame_rate))


def recorded_frame_rate(path: str | Path) -> float | None:
    """The frame rate a sampler output recorded: pointmaps.npz "frame_rate", else one derived from its
    summary.json (outputs written before frame_rate was recorded); None for pointmaps from elsewhere."""
    path = Path(path)
    archive = path / POINTMAPS_NAME if path.is_dir() else path
    if archive.is_file():
        with np.load(archive) as data:
            if "frame_rate" in data.files:
                return float(data["frame_rate"])
    summary = archive.parent / "summary.json"
    if summary.is_file():
        try:
            record = json.loads(summary.read_text())
            return float(record.get("frame_rate") or sampler_frame_rate(record["fps"], record["num_frames"], record["input_frames"]))
        except (ValueError, KeyError, TypeError):
            return None
    return None


def save_cameras(
    result: CameraRecovery,
    folder: str | Path,
    timestamps=None,
    depth_dtype=np.float16,
    trajectory_name: str = "trajectory.txt",
    frame_rate: float | None = None,
) -> dict[str, Path]:
    """Write ``cameras.json``, a TUM trajectory and ``depth.npz`` into ``folder``; returns the paths.

    The TUM stamps follow the module's rule, :func:`frame_timestamps` at ``frame_rate`` (None: frame
    indices); ``timestamps`` (F,) replaces them. ``depth_dtype``: float16 (the clip format) or float32.
    ``cameras.json`` also records the points behind their camera and the unreliable frames.
    """
    if np.dtype(depth_dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"depth_dtype must be float16 or float32, got {np.dtype(depth_dtype)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = result.world_to_camera.shape[0]
    if timestamps is None:
        timestamps = frame_timestamps(frames, frame_rate)
        stamps = "frame indices (no frame rate known)" if frame_rate is None else f"seconds: frame j at j / {frame_rate:g} frames per second"
    else:
        timestamps, stamps = np.asarray(timestamps, dtype=np.float64), "seconds, given by the caller"
    if timestamps.shape != (frames,):
        raise ValueError(f"timestamps must have shape ({frames},), got {timestamps.shape}")
    paths = {"cameras": folder / "cameras.json", "trajectory": folder / trajectory_name, "depth": folder / "depth.npz"}
    cameras = {
        "intrinsics": result.intrinsics.detach().cpu().double().tolist(),
        "world_to_camera": result.world_to_camera.detach().cpu().double().tolist(),
        "losses": result.losses,
        "num_invalid": result.num_invalid,
        "num_behind": result.num_behind,
        "unreliable_frames": result.unreliable,
        "warnings": result.warnings,
    }
    paths["cameras"].write_text(json.dumps(cameras, indent=1))
    write_tum_trajectory(paths["trajectory"], timestamps, result.camera_to_world.detach().cpu().double())
    text = paths["trajectory"].read_text()
    paths["trajectory"].write_text(f"# timestamps: {stamps} (one4d.postopt.io)\n" + text)
    depth = result.depth.detach().cpu().float().numpy()
    np.savez(paths["depth"], depth=depth.astype(depth_dtype))
    return paths


def load_cameras(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Intrinsics (F, 3, 3) and world-to-camera (F, 4, 4), float64, from a folder's ``cameras.json``."""
    data = json.loads((Path(folder) / "cameras.json").read_text())
    return torch.tensor(data["intrinsics"], dtype=torch.float64), torch.tensor(data["world_to_camera"], dtype=torch.float64)


def recover_folder(input_path: str | Path, output_dir: str | Path | None = None, depth_dtype: str = "float16",
                   frame_rate: float | None = None, **options):
    """Recover cameras for a sampler output folder or a pointmaps ``.npz`` and save them next to it
    (or into ``output_dir``). ``frame_rate``: of the trajectory's stamps (module docstring; None: frame
    indices). ``options`` go to :func:`recover_cameras`. Returns (result, paths)."""
    pointmaps, confidence = load_pointmaps(input_path)
    result = recover_cameras(pointmaps, confidence=confidence, **options)
    input_path = Path(input_path)
    folder = Path(output_dir) if output_dir is not None else (input_path if input_path.is_dir() else input_path.parent)
    paths = save_cameras(result, folder, depth_dtype=np.dtype(depth_dtype), frame_rate=frame_rate)
    return result, paths
