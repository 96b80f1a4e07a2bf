"""Virtual KITTI 2 (Naver Labs Europe; synthetic driving rendered in Unity), read as downloaded.

Layout (FORMATS.md section 7; TRI-ML/vidar ``vidar/datasets/VKITTI2Dataset.py`` ``make_tree``, ``_get_depth``,
``_get_intrinsics``, ``_get_pose``)::

    vkitti_2.0.3_rgb/SceneXX/<variation>/frames/rgb/Camera_{0,1}/rgb_00000.jpg
    vkitti_2.0.3_depth/SceneXX/<variation>/frames/depth/Camera_{0,1}/depth_00000.png
    vkitti_2.0.3_textgt/SceneXX/<variation>/{intrinsic.txt, extrinsic.txt, ...}

Each archive extracted into the folder of its name. Also accepted: the folders renamed ``rgb``, ``depth``,
``textgt`` (vidar's layout) or all archives extracted into one root (``SceneXX/...`` side by side).

A sequence is one camera of one scene variation (``Scene01/clone/Camera_0``): the two cameras of the stereo rig
are two videos (as CUT3R uses them), so a clip never mixes cameras, variations or scenes.

Conventions decided here:
- Depth: uint16 PNG in centimetres -> ``depth_scale`` 0.01 m per code (CUT3R ``vkitti2.py:124-130``, VGGT, vidar
  ``_get_depth`` all divide by 100); sky is 65535 (655.35 m) -> 0. Unity renders z-depth (distance to the camera
  plane), which is how all three peers use it.
- Intrinsics: ``intrinsic.txt`` rows ``frame cameraID fx fy cx cy``. The released values are cx = 620.5, cy = 187
  for 1242x375 images, i.e. exactly ((W-1)/2, (H-1)/2): the file already uses integer pixel centres, so
  ``principal_point_shift`` defaults to 0 (set 0.5 to treat it as corner convention).
- Poses: ``extrinsic.txt`` rows ``frame cameraID`` + the 4x4 row-major matrix. VGGT uses it directly as OpenCV
  camera-from-world (facebookresearch/vggt#370); some third-party code calls it camera-to-world, so it is the
  option ``extrinsic`` (``world_to_camera`` | ``camera_to_world``), and the self-check of every clip tells which
  is right (the wrong one reprojects badly, tests/test_source_vkitti2.py).
- Dynamic masks: not read (VKITTI2's instance segmentation + per-object ``pose.txt`` ``moving`` flags could give
  one; their formats are unverified), so the self-check uses all co-visible pixels.
- fps: the renders follow KITTI's 10 Hz (unverified; the ``fps`` option).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from one4d.data.sources._files import pinhole, read_png_uint16, read_rgb, read_text_rows
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError

SKY_CODE = 65535
ARCHIVES = {"rgb": "frames/rgb", "depth": "frames/depth", "textgt": "extrinsic.txt"}  # modality -> probe inside a variation


def _modality_root(root: Path, modality: str) -> Path | None:
    """The folder holding ``SceneXX/<variation>/`` for one modality, or None."""
    for candidate in (root / f"vkitti_2.0.3_{modality}", root / modality, root):
        if any(candidate.glob(f"Scene*/*/{ARCHIVES[modality]}")):
            return candidate
    return None


@lru_cache(maxsize=8)
def _read_table(path: str, values: int) -> dict[tuple[int, int], np.ndarray]:
    """A VKITTI2 text table (a header line, then ``frame cameraID`` and ``values`` numbers per row) ->
    {(frame, camera): (values,) float64}; read once per sequence."""
    rows = read_text_rows(Path(path), 2 + values, header_lines=1)  # (N, 2 + values)
    return {(int(row[0]), int(row[1])): row[2:] for row in rows}


class VKITTI2Source(DatasetSource):
    """Virtual KITTI 2: one sequence per scene, variation and camera."""

    name = "vkitti2"

    def __init__(self, root, depth_scale: float = 0.01, principal_point_shift: float = 0.0,
                 extrinsic: str = "world_to_camera", fps: float = 10.0, cameras: tuple = (0, 1)):
        super().__init__(root)
        if extrinsic not in ("world_to_camera", "camera_to_world"):
            raise ValueError(f"vkitti2: extrinsic must be world_to_camera or camera_to_world, got {extrinsic!r}")
        self.depth_scale, self.principal_point_shift = float(depth_scale), float(principal_point_shift)
        self.extrinsic, self.fps, self.cameras = extrinsic, float(fps), tuple(int(c) for c in cameras)
        self._found_roots: dict[str, Path] | None = None

    def _roots(self) -> dict[str, Path]:
        """Where each archive was extracted (found once, then kept)."""
        if self._found_roots is None:
            roots = {modality: _modality_root(self.root, modality) for modality in ARCHIVES}
            for modality, found in roots.items():
                if found is None:
                    raise SourceLayoutError(self.name, self.root,
                                            f"vkitti_2.0.3_{modality}/SceneXX/<variation>/{ARCHIVES[modality]}")
            self._found_roots = roots
        return self._found_roots

    def sequences(self) -> list[SequenceInfo]:
        rgb_root = self._roots()["rgb"]
        found = []
        for camera_dir in sorted(rgb_root.glob("Scene*/*/frames/rgb/Camera_*")):
            camera = int(camera_dir.name.split("_")[-1])
            frames = len(list(camera_dir.glob("rgb_*.jpg")))
            if camera in self.cameras and frames:
                scene, variation = camera_dir.parts[-5], camera_dir.parts[-4]
                found.append(SequenceInfo(f"{scene}/{variation}/{camera_dir.name}", frames, self.fps, split=None))
        return found

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        scene, variation, camera_name = sequence.name.split("/")
        camera = int(camera_name.split("_")[-1])
        roots = self._roots()
        rgb = read_rgb(roots["rgb"] / scene / variation / "frames" / "rgb" / camera_name / f"rgb_{index:05d}.jpg")
        codes = read_png_uint16(roots["depth"] / scene / variation / "frames" / "depth" / camera_name / f"depth_{index:05d}.png")
        depth = codes.astype(np.float32) * np.float32(self.depth_scale)  # (H, W) metres
        depth[codes == SKY_CODE] = 0.0

        text = roots["textgt"] / scene / variation
        fx, fy, cx, cy = self._row(text / "intrinsic.txt", index, camera, 4)
        intrinsics = pinhole(fx, fy, cx, cy, self.principal_point_shift)
        pose = self._row(text / "extrinsic.txt", index, camera, 16).reshape(4, 4)
        world_to_camera = pose if self.extrinsic == "world_to_camera" else np.linalg.inv(pose)
        return SourceFrame(rgb=rgb, depth=depth, intrinsics=intrinsics, world_to_camera=world_to_camera)

    @staticmethod
    def _row(path: Path, frame: int, camera: int, length: int) -> np.ndarray:
        """The values of (frame, camera) in a VKITTI2 table; FrameReadError when the file or row is missing."""
        if not path.is_file():
            raise FrameReadError(f"missing {path}")
        row = _read_table(str(path), length).get((frame, camera))
        if row is None:
            raise FrameReadError(f"{path} has no row for frame {frame} camera {camera}")
        return row


SOURCE = VKITTI2Source
