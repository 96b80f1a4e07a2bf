"""TartanAir (Wang et al. 2020, v1) as its authors ship it.

Layout (``castacks/tartanair_tools@841584a8:README.md:21-50``); the official download unzips each
environment's archives into ``<env>/<env>/<Easy|Hard>/P000`` (the doubled folder DROID-SLAM's split lists
use), and a hand-moved ``<env>/<Easy|Hard>/P000`` is accepted too::

    <root>/<env>[/<env>]/{Easy,Hard}/P000/image_left/000000_left.png          RGB PNG 640x480, 0-based, 6 digits
    <root>/<env>[/<env>]/{Easy,Hard}/P000/depth_left/000000_left_depth.npy    float32 metres
    <root>/<env>[/<env>]/{Easy,Hard}/P000/pose_left.txt                       tx ty tz qx qy qz qw per frame

Conventions handled:
- Poses are camera-to-world in NED axes (x forward, y right, z down) for both the world and the camera
  body (``data_type.md:73-92``). OpenCV world-to-camera is ``P @ inv(c2w_ned)`` with P taking NED camera
  axes to OpenCV ones (rows [1, 2, 0]; CUT3R ``preprocess_tartanair.py:88-96``). ``axes: opencv`` skips P
  (wrong for TartanAir; it exists to show the self-check catching it).
- Quaternions are stored x, y, z, w, the order of ``one4d.geometry.quaternion_to_rotation``.
- Intrinsics are one fixed pinhole, fx = fy = 320, cx = 320, cy = 240 (``data_type.md:20-31``): AirSim's
  cx = W/2 counts from the image corner, so ``half_pixel_shift: true`` subtracts 0.5 to put pixel centres
  at integer coordinates (319.5, 239.5); peers keep 320/240 (0.5 px).
- Depth is float32 metres (``data_type.md`` says "16-bit", but the files are float32 and every peer reads
  them as metres). The sky is a large finite value (~1e4 m); depth >= ``sky_depth`` (1000 m, CUT3R's
  threshold, ``src/dust3r/datasets/tartanair.py:124-125``) becomes 0.
- Static scenes: no dynamic mask, no captions. The frame rate is not documented (unverified): ``fps`` is null
  unless set. TartanAir v1 ships no train/test split for these trajectories; ``difficulties`` chooses folders.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from one4d.data.sources._files import check_index, pinhole, quaternion_pose, read_rgb, read_text_rows
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError

NED_TO_OPENCV = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)  # x_cv = P x_ned


@lru_cache(maxsize=8)
def _load_poses(path: str) -> np.ndarray:
    """pose_<camera>.txt -> (N, 7) tx ty tz qx qy qz qw, read once per process."""
    return read_text_rows(Path(path), 7)


class TartanAirSource(DatasetSource):
    """TartanAir trajectories; sequence names are ``<path of the trajectory folder>/<camera>``."""

    name = "tartanair"

    def __init__(self, root, difficulties=("Easy", "Hard"), cameras=("left",), fx: float = 320.0, fy: float = 320.0,
                 cx: float = 320.0, cy: float = 240.0, half_pixel_shift: bool = True, sky_depth: float = 1000.0,
                 axes: str = "ned", fps: float | None = None):
        super().__init__(root)
        if axes not in ("ned", "opencv"):
            raise ValueError(f"tartanair: axes must be 'ned' or 'opencv', got {axes!r}")
        self.difficulties, self.cameras = list(difficulties), list(cameras)
        self.intrinsics = pinhole(fx, fy, cx, cy, 0.5 if half_pixel_shift else 0.0)
        self.sky_depth, self.axes, self.fps = float(sky_depth), axes, fps

    def sequences(self) -> list[SequenceInfo]:
        trajectories = set()
        for difficulty in self.difficulties:
            for pattern in (f"{difficulty}/P*", f"*/{difficulty}/P*", f"*/*/{difficulty}/P*"):
                trajectories.update(path for path in self.root.glob(pattern) if path.is_dir())
        found = []
        for folder in sorted(trajectories):
            for camera in self.cameras:
                name = f"{folder.relative_to(self.root).as_posix()}/{camera}"
                if (folder / f"pose_{camera}.txt").is_file():
                    count = len(list((folder / f"image_{camera}").glob(f"*_{camera}.png")))
                    found.append(SequenceInfo(name, count, self.fps))
                elif (folder / f"image_{camera}").is_dir():  # frames without their pose file: reported, not dropped
                    found.append(SequenceInfo(name, 0, problem=f"missing pose file {folder / f'pose_{camera}.txt'}"))
        if all(sequence.problem for sequence in found):
            raise SourceLayoutError(self.name, self.root, f"<env>/<env>/{'|'.join(self.difficulties)}/P000/pose_{self.cameras[0]}.txt")
        return found

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        trajectory, camera = sequence.name.rsplit("/", 1)
        folder = self.root / trajectory
        rgb = read_rgb(folder / f"image_{camera}" / f"{index:06d}_{camera}.png")
        depth_path = folder / f"depth_{camera}" / f"{index:06d}_{camera}_depth.npy"
        try:
            depth = np.load(depth_path).astype(np.float32)  # (H, W) metres
        except (OSError, ValueError) as error:
            raise FrameReadError(f"cannot read depth {depth_path}: {error}") from None
        depth[depth >= self.sky_depth] = 0.0
        pose_path = folder / f"pose_{camera}.txt"
        poses = _load_poses(str(pose_path))
        check_index(index, len(poses), pose_path)
        camera_to_world = quaternion_pose(poses[index, :3], poses[index, 3:7])  # (4, 4), file axes
        world_to_camera = np.linalg.inv(camera_to_world)
        if self.axes == "ned":
            world_to_camera = NED_TO_OPENCV @ world_to_camera
        return SourceFrame(rgb=rgb, depth=depth, intrinsics=self.intrinsics.copy(), world_to_camera=world_to_camera)


SOURCE = TartanAirSource
