"""SpatialVID / SpatialVID-HQ (NJU-3DV; real videos with MegaSaM depth and cameras), read as downloaded.

Layout (FORMATS.md section 5; HF ``SpatialVID/SpatialVID-HQ`` card; NJU-3DV/SpatialVID@5228326b:utils/pack_clip_assets.py)::

    videos/group_0001/<clip>.mp4
    depths/group_0001/<clip>.zip                 00000.exr, 00001.exr ... one HALF EXR per ANNOTATED frame, channel "Z"
    annotations/group_0001/<clip>/{poses.npy, intrinsics.npy, indexes.txt, dyn_masks.npz, caption.json, ...}

The per-clip depth zip is read as it is (never unpacked to disk). A sequence is one clip (``group_0001/<clip>``);
its frames are the ANNOTATED frames only: annotation ``i`` is video frame ``indexes.txt[i]`` (every int(0.2 fps)
frames, ``utils/extract_frames.py``; the last one may be missing, NJU-3DV/SpatialVID#20), so the sequence's fps is
the video's fps over that interval (~5 fps), which the clip's meta.json then carries.

Conventions:
- Depth: channel ``Z`` holds DISPARITY (``camera_pose_annotation/cvd_opt/cvd_opt.py``; reader ``utils/read_depth.py``
  takes 1/Z) -> z = 1/Z; Z = 0 (no depth) and Z = inf give 0, NaN or negative Z gives NaN or negative depth, which
  the cutter zeroes and counts as bad depth. The official reader clips 1/Z to [1e-3, 1e2];
  here nothing is clipped (a clipped value is a wrong depth) and the config's far cut (100, the same bound) zeroes
  the far end. Units are MegaSaM's (not metric, NJU-3DV/SpatialVID#25), shared with the poses.
- Resolution: the depth maps are 328x584 for every clip (NJU-3DV/SpatialVID#19); the video frame is resized to the
  depth map's size with an antialiasing filter (the official packer resizes the whole frame the same way,
  ``pack_clip_assets.py:43``), so every frame keeps the full depth resolution.
- Intrinsics: ``intrinsics.npy`` (N, 4) normalised ``[fx/W, fy/H, cx/W, cy/H]`` (``utils/normalize_intrinsics.py``)
  -> pixels at the depth map's size; ``cx = 0.5 W`` is the corner convention, so ``principal_point_shift`` 0.5 is
  subtracted to reach integer pixel centres. (MegaSaM's top-left crop to a multiple of 8 may bias cx by ~3 px,
  FORMATS.md section 5 (inferred); the self-check of each clip measures what remains.)
- Poses: ``poses.npy`` (N, 7) ``[tx, ty, tz, qx, qy, qz, qw]`` (lietorch order) = OpenCV world-to-camera (DROID /
  MegaSaM ``video.poses``; ``utils/quat_to_mat.py`` "Input is w2c"; NJU-3DV/SpatialVID#11). One downstream project
  reads them as camera-to-world (EternalEvan/Astra#8), so it is the option ``pose`` and the self-check decides.
- Dynamic masks: ``dyn_masks.npz`` per-frame CSR matrices ``f_{i}_data``, ``f_{i}_indices``, ``f_{i}_indptr`` and
  ``shape`` (``utils/expand_npz.py``), non-zero = moving; resized to the depth size with nearest neighbour.
- Caption: ``caption.json``; its field names are unverified here, so the first non-empty string among
  ``caption_keys`` is the clip's caption (the same text for every segment of the clip).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from one4d.data.sources._files import check_index, pinhole, quaternion_pose, read_exr_channel
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError


class _Video:
    """Frames of one mp4 by index, decoding forward only (reopened when asked for an earlier frame)."""

    def __init__(self, path: Path):
        self.path, self.capture, self.position = path, None, 0

    def _open(self):
        import cv2

        if not self.path.is_file():
            raise FrameReadError(f"missing video {self.path}")
        self.close()
        self.capture, self.position = cv2.VideoCapture(str(self.path)), 0
        if not self.capture.isOpened():
            raise FrameReadError(f"cannot open video {self.path}")

    def fps(self) -> float:
        import cv2

        if self.capture is None:
            self._open()
        return float(self.capture.get(cv2.CAP_PROP_FPS))

    def frame(self, index: int) -> np.ndarray:
        """Video frame ``index`` as (H, W, 3) uint8 RGB."""
        import cv2

        if self.capture is None or index < self.position:
            self._open()
        while self.position < index:  # grab() decodes without converting: the cheap way to skip frames
            if not self.capture.grab():
                raise FrameReadError(f"{self.path} ends before frame {index}")
            self.position += 1
        ok, bgr = self.capture.read()
        if not ok:
            raise FrameReadError(f"{self.path} ends before frame {index}")
        self.position += 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self):
        if self.capture is not None:
            self.capture.release()
            self.capture = None


def read_indexes(path: Path) -> list[int]:
    """``indexes.txt``: one line per annotated frame, its video frame index in the last column."""
    try:
        return [int(line.split()[-1]) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as error:
        raise FrameReadError(f"cannot read {path}: {error}") from None


def csr_mask(archive, index: int) -> np.ndarray | None:
    """Frame ``index`` of a dyn_masks.npz (CSR parts ``f_{i}_data/indices/indptr`` + ``shape``) as (H, W) bool."""
    key = f"f_{index}"
    if f"{key}_indptr" not in archive.files:
        return None
    shape = archive[f"{key}_shape"] if f"{key}_shape" in archive.files else archive["shape"]
    height, width = (int(v) for v in np.asarray(shape).reshape(-1)[-2:])
    indptr, indices, data = archive[f"{key}_indptr"], archive[f"{key}_indices"], archive[f"{key}_data"]
    rows = np.repeat(np.arange(height), np.diff(indptr))  # (nnz,) row of each stored value
    mask = np.zeros((height, width), dtype=bool)
    mask[rows, indices] = data != 0
    return mask


class SpatialVIDSource(DatasetSource):
    """SpatialVID: one sequence per clip, its annotated frames only."""

    name = "spatialvid"

    def __init__(self, root, pose: str = "world_to_camera", principal_point_shift: float = 0.5,
                 caption_keys: tuple = ("SceneDescription", "SceneSummary", "caption", "Caption"),
                 annotated_fps: float | None = None):
        super().__init__(root)
        if pose not in ("world_to_camera", "camera_to_world"):
            raise ValueError(f"spatialvid: pose must be world_to_camera or camera_to_world, got {pose!r}")
        self.pose, self.principal_point_shift = pose, float(principal_point_shift)
        self.caption_keys = tuple(caption_keys or ())
        self.annotated_fps = None if annotated_fps is None else float(annotated_fps)
        self._open: dict | None = None  # the files of the sequence being read, kept open between frames

    def sequences(self) -> list[SequenceInfo]:
        poses = sorted((self.root / "annotations").glob("*/*/poses.npy"))
        if not poses:
            raise SourceLayoutError(self.name, self.root, "annotations/group_XXXX/<clip>/poses.npy (with depths/ and videos/ beside annotations/)")
        found = []
        for path in poses:
            clip = path.parent
            name = f"{clip.parent.name}/{clip.name}"
            try:  # an unreadable poses.npy lists the clip with its problem: the report names it as skipped, the run goes on
                count = int(np.load(path, mmap_mode="r").shape[0])
            except (OSError, ValueError) as error:
                found.append(SequenceInfo(name, 0, problem=f"cannot read {path}: {error}"))
                continue
            found.append(SequenceInfo(name, count, self._fps(clip, name) if count else None, split=None))
        return found

    def _fps(self, clip: Path, name: str) -> float | None:
        """Annotated frames per second: the option, else the video's rate over the indexes.txt interval."""
        if self.annotated_fps is not None:
            return self.annotated_fps
        indexes_path = clip / "indexes.txt"
        video_path = self.root / "videos" / f"{name}.mp4"
        if not indexes_path.is_file() or not video_path.is_file():
            return None
        video = _Video(video_path)
        try:
            indexes, fps = read_indexes(indexes_path), video.fps()
        except FrameReadError:  # read_frame reports the broken file for each segment
            return None
        finally:
            video.close()
        if len(indexes) < 2:
            return None
        interval = float(np.median(np.diff(indexes)))
        return fps / interval if fps > 0 and interval > 0 else None

    def _files(self, sequence: SequenceInfo) -> dict:
        """Open (once per sequence) its annotations, depth zip and video; the previous sequence's are closed."""
        if self._open is not None and self._open["name"] == sequence.name:
            return self._open
        self.close()
        clip = self.root / "annotations" / sequence.name
        files = {"name": sequence.name, "clip": clip}
        try:
            files["poses"] = np.load(clip / "poses.npy").astype(np.float64).reshape(-1, 7)  # (N, 7)
            files["intrinsics"] = np.load(clip / "intrinsics.npy").astype(np.float64).reshape(-1, 4)  # (N, 4)
        except (OSError, ValueError) as error:
            raise FrameReadError(f"cannot read the cameras in {clip}: {error}") from None
        files["indexes"] = read_indexes(clip / "indexes.txt")
        zip_path = self.root / "depths" / f"{sequence.name}.zip"
        try:
            archive = zipfile.ZipFile(zip_path)
        except (OSError, zipfile.BadZipFile) as error:
            raise FrameReadError(f"cannot open depth archive {zip_path}: {error}") from None
        files["zip"], files["zip_path"] = archive, zip_path
        files["members"] = {Path(member).stem: member for member in archive.namelist() if member.endswith(".exr")}
        masks = clip / "dyn_masks.npz"
        try:
            files["masks"] = np.load(masks) if masks.is_file() else None
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            archive.close()
            raise FrameReadError(f"cannot read {masks}: {error}") from None
        files["video"] = _Video(self.root / "videos" / f"{sequence.name}.mp4")
        self._open = files
        return files

    def close(self) -> None:
        """Close the files kept open for the last sequence read."""
        if self._open is not None:
            self._open["zip"].close()
            self._open["video"].close()
            if self._open["masks"] is not None:
                self._open["masks"].close()
            self._open = None

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        import cv2

        files = self._files(sequence)
        clip = files["clip"]
        for key, name in (("poses", "poses.npy"), ("intrinsics", "intrinsics.npy"), ("indexes", "indexes.txt")):
            check_index(index, len(files[key]), clip / name)
        member = files["members"].get(f"{index:05d}")
        if member is None:
            raise FrameReadError(f"{files['zip_path']} has no {index:05d}.exr")
        with files["zip"].open(member) as file:
            disparity = read_exr_channel(file, "Z", f"{files['zip_path']}:{member}")  # (h, w)
        with np.errstate(divide="ignore", invalid="ignore"):  # NaN / negative disparity stays NaN / negative depth,
            depth = np.where(disparity == 0, 0.0, 1.0 / disparity).astype(np.float32)  # which the cutter zeroes and counts
        height, width = depth.shape

        frame = files["video"].frame(files["indexes"][index])  # (H, W, 3) at the video's size
        if frame.shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)

        fx, fy, cx, cy = files["intrinsics"][index]
        intrinsics = pinhole(fx * width, fy * height, cx * width, cy * height, self.principal_point_shift)
        pose = quaternion_pose(files["poses"][index, :3], files["poses"][index, 3:])  # lietorch: t, then x y z w
        world_to_camera = pose if self.pose == "world_to_camera" else np.linalg.inv(pose)

        mask = csr_mask(files["masks"], index) if files["masks"] is not None else None
        if mask is not None and mask.shape != (height, width):
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
        return SourceFrame(rgb=frame, depth=depth, intrinsics=intrinsics, world_to_camera=world_to_camera, dynamic_mask=mask)

    def caption(self, sequence: SequenceInfo, first: int, count: int) -> str | None:
        path = self.root / "annotations" / sequence.name / "caption.json"
        if not path.is_file():
            return None
        try:
            caption = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(caption, str):
            return caption.strip() or None
        for key in self.caption_keys:
            value = caption.get(key) if isinstance(caption, dict) else None
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None


SOURCE = SpatialVIDSource
