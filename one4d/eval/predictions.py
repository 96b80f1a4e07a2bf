"""Predictors that are not the model: saved predictions of any method, and a GT-derived oracle.

Saved predictions use MonST3R's output layout (``dust3r/cloud_opt/base_opt.py``), which CUT3R and
Geo4D's evaluation also read: ``DIR/<sequence>/frame_0000.npy`` ... one (H, W) depth per frame,
and ``DIR/<sequence>/pred_traj.txt``, one line per frame ``t x y z qw qx qy qz`` of the
camera-to-world pose. MonST3R writes the quaternion scalar FIRST (``c2w_to_tumpose``), unlike the
TUM benchmark's files (``qx qy qz qw``): ``quaternion_order`` says which a folder uses. Lines are
matched to frames by order (as MonST3R's eval_metrics does when the counts agree); the
timestamps in the file are ignored.

:class:`SavedPredictions` writes a predictor's output in this layout as it goes, so that a killed
evaluation resumes where it stopped (see data/benchmarks.md, "Resuming an evaluation").
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from one4d.eval.datasets import EvalSequence
from one4d.eval.runner import Prediction
from one4d.geometry import make_pose, quaternion_to_rotation, rotation_to_quaternion

QUATERNION_ORDERS = ("wxyz", "xyzw")


def read_prediction_trajectory(path: str | Path, quaternion_order: str = "wxyz") -> np.ndarray:
    """``pred_traj.txt`` -> camera_to_world (N, 4, 4) float64."""
    if quaternion_order not in QUATERNION_ORDERS:
        raise ValueError(f"quaternion_order must be one of {QUATERNION_ORDERS}, got {quaternion_order!r}")
    try:
        rows = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: not a trajectory of 't x y z q q q q' lines ({error})") from error
    if rows.shape[0] == 0 or rows.shape[1] != 8:
        raise ValueError(f"{path}: a trajectory line has 8 values (t x y z and a quaternion), got shape {rows.shape}")
    quaternion = rows[:, 4:8] if quaternion_order == "xyzw" else rows[:, [5, 6, 7, 4]]  # to (qx, qy, qz, qw)
    poses = make_pose(quaternion_to_rotation(torch.from_numpy(quaternion)), torch.from_numpy(rows[:, 1:4]))
    return poses.numpy()


def save_prediction(folder: str | Path, prediction: Prediction, quaternion_order: str = "wxyz") -> None:
    """Write one sequence's prediction in the layout ``PredictionFolder`` reads (MonST3R's)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if prediction.depth is not None:
        for index, depth in enumerate(np.asarray(prediction.depth, dtype=np.float32)):
            np.save(folder / f"frame_{index:04d}.npy", depth)
    if prediction.camera_to_world is not None:
        poses = torch.as_tensor(np.asarray(prediction.camera_to_world), dtype=torch.float64)
        quaternion = rotation_to_quaternion(poses[:, :3, :3])  # (N, 4) qx qy qz qw
        if quaternion_order == "wxyz":
            quaternion = quaternion[:, [3, 0, 1, 2]]
        lines = [" ".join(f"{v:.10g}" for v in [float(i), *pose[:3, 3].tolist(), *q.tolist()])
                 for i, (pose, q) in enumerate(zip(poses, quaternion))]
        (folder / "pred_traj.txt").write_text("\n".join(lines) + "\n")


class PredictionFolder:
    """Predictor reading ``root/<sequence>/frame_XXXX.npy`` and ``pred_traj.txt`` (see module doc)."""

    def __init__(self, root: str | Path, quaternion_order: str = "wxyz"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"predictions folder {self.root} is not a directory")
        if quaternion_order not in QUATERNION_ORDERS:
            raise ValueError(f"quaternion_order must be one of {QUATERNION_ORDERS}, got {quaternion_order!r}")
        self.quaternion_order = quaternion_order

    def __call__(self, sequence: EvalSequence, observed_frame_indices: np.ndarray) -> Prediction:
        folder = self.root / sequence.name
        if not folder.is_dir():
            raise ValueError(f"sequence {sequence.name}: no prediction folder {folder}")
        depth = camera_to_world = None
        if sequence.evaluate_depth and sequence.depth is not None:
            files = sorted(folder.glob("frame_*.npy"))
            if len(files) != sequence.num_frames:
                raise ValueError(f"sequence {sequence.name}: {len(files)} frame_XXXX.npy files in {folder}, the sequence has {sequence.num_frames} frames")
            maps = [_load_depth(sequence.name, f) for f in files]
            for path, depth_map in zip(files, maps):
                if depth_map.ndim != 2 or depth_map.shape != maps[0].shape:
                    raise ValueError(f"sequence {sequence.name}: {path} holds shape {depth_map.shape}, expected (H, W) like {files[0].name}")
            depth = np.stack(maps)  # (F, H, W)
        if sequence.evaluate_pose and sequence.camera_to_world is not None:
            path = folder / "pred_traj.txt"
            if not path.is_file():
                raise ValueError(f"sequence {sequence.name}: missing {path}")
            camera_to_world = read_prediction_trajectory(path, self.quaternion_order)
            if len(camera_to_world) != sequence.num_frames:
                raise ValueError(f"sequence {sequence.name}: {path} has {len(camera_to_world)} poses, the sequence has {sequence.num_frames} frames")
        return Prediction(depth, camera_to_world)


def _load_depth(name: str, path: Path) -> np.ndarray:
    try:
        return np.load(path).astype(np.float32).squeeze()
    except (ValueError, EOFError, OSError) as error:  # truncated, empty or not a .npy file
        raise ValueError(f"sequence {name}: cannot read {path} ({error})") from error


class SavedPredictions:
    """The predictor ``build()`` returns, its predictions saved as they are made and read back when there.

    Each sequence goes to ``folder/<sequence>/`` in the layout above (so ``predictions=folder`` reads
    it as any saved method), written under a temporary name and renamed when complete: a killed run
    never leaves a half-written folder that looks finished. A sequence whose saved folder reads back
    is not predicted again; one that does not (truncated or unreadable file, wrong frame count) is
    predicted again, with a warning naming it. The metrics are always computed from what was read
    back, so a resumed run and an uninterrupted one score the very same numbers.

    ``settings`` (what the predictions depend on) are kept in ``folder/settings.json``; resuming
    with other settings is refused, so one run's tables never mix two configurations.
    ``resume=False`` deletes what ``folder`` holds and predicts everything. The predictor is built
    only when a sequence needs it: re-scoring a finished run (say, under another depth protocol)
    loads no model.
    """

    SETTINGS = "settings.json"

    def __init__(self, build: Callable[[], Callable], folder: str | Path, settings: dict, resume: bool = True, log=print):
        self.build, self.predictor, self.folder = build, None, Path(folder)
        if not resume and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for partial in self.folder.glob(".*.partial"):  # left by a killed run
            shutil.rmtree(partial)
        settings = json.loads(json.dumps(settings))  # as stored: lists, not tuples
        saved_path = self.folder / self.SETTINGS
        if saved_path.is_file():
            changed = _differences(json.loads(saved_path.read_text()), settings)
            if changed:
                raise ValueError(f"the saved predictions in {self.folder} were made with other settings ({'; '.join(changed)}); "
                                 "pass resume=false to predict again, or another label or output_dir")
        else:
            saved_path.write_text(json.dumps(settings, indent=2) + "\n")
        self.reader = PredictionFolder(self.folder)
        done = sorted(p.name for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if done:
            log(f"resuming: {len(done)} saved predictions in {self.folder} are read back, not predicted again (resume=false recomputes)")

    def missing(self, names) -> list[str]:
        """The sequences among ``names`` that have no saved prediction."""
        return [name for name in names if not (self.folder / name).is_dir()]

    def load(self):
        """The wrapped predictor, built at the first call."""
        if self.predictor is None:
            self.predictor = self.build()
        return self.predictor

    def __call__(self, sequence: EvalSequence, observed_frame_indices: np.ndarray) -> Prediction:
        target = self.folder / sequence.name
        if target.is_dir():
            try:
                return self.reader(sequence, observed_frame_indices)
            except ValueError as error:
                warnings.warn(f"saved prediction of {sequence.name} in {target} is corrupt, predicting it again: {error}", stacklevel=2)
        self._write(target, self.load()(sequence, observed_frame_indices))
        return self.reader(sequence, observed_frame_indices)

    def _write(self, target: Path, prediction: Prediction) -> None:
        """Write to ``.<name>.partial``, flush to disk, then rename to ``<name>`` (atomic on one file system)."""
        partial = target.with_name(f".{target.name}.partial")
        if partial.exists():
            shutil.rmtree(partial)
        save_prediction(partial, prediction)
        for path in partial.iterdir():
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
        if target.exists():  # a corrupt one: killed between these two lines, the sequence is simply predicted again
            shutil.rmtree(target)
        os.replace(partial, target)


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``key: saved -> current`` for each setting that differs, nested keys dotted."""
    changed = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if isinstance(old, dict) and isinstance(new, dict):
            changed += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key}: {old} -> {new}")
    return changed


class OraclePredictor:
    """Ground truth, distorted: affine depth plus relative noise, similar-transformed noisy cameras.

    Only for testing the driver end to end without a model; its metrics show the noise level.
    """

    def __init__(self, depth_noise: float = 0.05, pose_noise: float = 0.01, seed: int = 0):
        self.depth_noise, self.pose_noise, self.seed = depth_noise, pose_noise, seed

    def __call__(self, sequence: EvalSequence, observed_frame_indices: np.ndarray) -> Prediction:
        generator = np.random.default_rng(self.seed)
        depth = camera_to_world = None
        if sequence.depth is not None:
            noise = 1 + self.depth_noise * generator.standard_normal(sequence.depth.shape)
            depth = (2.0 * sequence.depth * noise + 0.3).astype(np.float32)
        if sequence.camera_to_world is not None:
            camera_to_world = np.array(sequence.camera_to_world, dtype=np.float64)
            camera_to_world[:, :3, 3] = 0.5 * camera_to_world[:, :3, 3] + 1.0
            camera_to_world[:, :3, 3] += self.pose_noise * generator.standard_normal((len(camera_to_world), 3))
        return Prediction(depth, camera_to_world)
