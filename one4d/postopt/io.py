"""Reading pointmaps for post-optimisation and writing what it recovered.

Output files follow the clip format of :mod:`one4d.data.clip`: ``cameras.json`` with
"intrinsics" (F, 3, 3) and "world_to_camera" (F, 4, 4) (OpenCV), ``depth.npz`` with "depth"
(F, H, W), 0 = invalid; plus a TUM trajectory of camera-to-world poses for evo and the eval code.
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


def save_cameras(
    result: CameraRecovery,
    folder: str | Path,
    timestamps=None,
    depth_dtype=np.float16,
    trajectory_name: str = "trajectory.txt",
) -> dict[str, Path]:
    """Write ``cameras.json``, a TUM trajectory and ``depth.npz`` into ``folder``; returns the paths.

    ``timestamps`` (F,) for the TUM file default to the frame indices. ``depth_dtype``: float16
    (the clip format) or float32.
    """
    if np.dtype(depth_dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"depth_dtype must be float16 or float32, got {np.dtype(depth_dtype)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = result.world_to_camera.shape[0]
    timestamps = np.arange(frames, dtype=np.float64) if timestamps is None else np.asarray(timestamps, dtype=np.float64)
    if timestamps.shape != (frames,):
        raise ValueError(f"timestamps must have shape ({frames},), got {timestamps.shape}")
    paths = {"cameras": folder / "cameras.json", "trajectory": folder / trajectory_name, "depth": folder / "depth.npz"}
    cameras = {
        "intrinsics": result.intrinsics.detach().cpu().double().tolist(),
        "world_to_camera": result.world_to_camera.detach().cpu().double().tolist(),
        "losses": result.losses,
        "num_invalid": result.num_invalid,
        "warnings": result.warnings,
    }
    paths["cameras"].write_text(json.dumps(cameras, indent=1))
    write_tum_trajectory(paths["trajectory"], timestamps, result.camera_to_world.detach().cpu().double())
    depth = result.depth.detach().cpu().float().numpy()
    np.savez(paths["depth"], depth=depth.astype(depth_dtype))
    return paths


def load_cameras(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Intrinsics (F, 3, 3) and world-to-camera (F, 4, 4), float64, from a folder's ``cameras.json``."""
    data = json.loads((Path(folder) / "cameras.json").read_text())
    return torch.tensor(data["intrinsics"], dtype=torch.float64), torch.tensor(data["world_to_camera"], dtype=torch.float64)


def recover_folder(input_path: str | Path, output_dir: str | Path | None = None, depth_dtype: str = "float16", **options):
    """Recover cameras for a sampler output folder or a pointmaps ``.npz`` and save them next to it
    (or into ``output_dir``). ``options`` go to :func:`recover_cameras`. Returns (result, paths)."""
    pointmaps, confidence = load_pointmaps(input_path)
    result = recover_cameras(pointmaps, confidence=confidence, **options)
    input_path = Path(input_path)
    folder = Path(output_dir) if output_dir is not None else (input_path if input_path.is_dir() else input_path.parent)
    paths = save_cameras(result, folder, depth_dtype=np.dtype(depth_dtype))
    return result, paths
