"""OmniWorld-Game (InternRobotics/OmniWorld on Hugging Face; game footage captured via ReShade), read as extracted.

The authors ship per-scene ``.tar.gz`` parts together with ``scripts/extract_one_game_scene.sh``, which extracts
all parts of scene ``<uid>`` into one folder ``<uid>/`` (yangzhou24/OmniWorld@4ad4cc6:scripts/extract_one_game_scene.sh).
The root is the folder holding those extracted scenes (FORMATS.md section 1; README "Data Structure")::

    <uid>/color/000000.png           RGB, 6-digit global frame index
    <uid>/depth/000000.png           16-bit PNG of ReShade's non-linear depth buffer
    <uid>/camera/split_<i>.json      focals (per frame), cx, cy, quats (w, x, y, z), trans
    <uid>/split_info.json            {"split": [[global frame indices of split 0], ...]}
    <uid>/fps.txt, gdino_mask/, text/, ...

A sequence is one split of one scene (``<uid>/split_<i>``): poses exist per split (each its own camera file), so a
clip never crosses splits; frame ``index`` of the sequence is global frame ``split[index]``.

Conventions (yangzhou24/OmniWorld@33bcc14:scripts/utils.py):
- Depth (``load_depth``, lines 80-98): ``d = png / 65535``; ``d < 0.0015`` (too near) and ``d > 65500/65535`` (sky)
  are invalid -> 0 (the official reader writes -1); ``z = d / (1000 - 999 d) / 0.004``. Not guaranteed metric
  (the 0.004 is "a numerical scaling factor", yangzhou24/OmniWorld#3), but depth and poses share one unit.
  ``far_percentile``: the maintainer's recommended extra cut of each frame's depth above its 95th percentile
  (same thread; commented line 91) - applied per frame, so it only invalidates pixels.
- Intrinsics (``load_camera_poses``, lines 57-62): fx = fy = ``focals[i]``, ``cx``, ``cy``; the official
  unprojection uses pixel centres at ``u + 0.5`` (``get_pixel``, lines 100-111), so ``principal_point_shift`` 0.5
  is subtracted from cx, cy to reach integer pixel centres.
- Poses (lines 64-77): ``[R(q) | t]`` with ``q = quats[i]`` in **w, x, y, z** order is OpenCV world-to-camera
  (the docstring said camera-to-world until commit 33bcc14). ``quaternion_order`` is an option only so that the
  self-check test can show the wrong order (``xyzw``) is flagged.
- Dynamic masks (``gdino_mask/``, per frame): the file format is unverified; read as ``gdino_mask/<frame>.png``
  (the colour frame's name), any non-zero pixel = moving; a frame without that file gets no mask
  (``dynamic_mask_dir: null`` turns them off).
- Captions (``text/``, "structured captions (81-frame segments)"): the file layout is unverified; read as
  ``caption_pattern`` (default ``text/split_{split}_{segment}.txt``, segment = first frame // 81 within the
  split) when that file exists, else None (captions then come from ``captions=FILE`` or the captioner).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from one4d.data.sources._files import check_index, marked_folders, pinhole, quaternion_pose, read_png_uint16, read_rgb
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError

NEAR_CODE = 0.0015  # d below this is too near (scripts/utils.py:89)
SKY_CODE = 65500.0 / 65535.0  # d above this is sky (scripts/utils.py:90)
SEGMENT_FRAMES = 81  # the text captions cover 81-frame segments (README "Data Structure")


def decode_depth(codes: np.ndarray) -> np.ndarray:
    """(H, W) uint16 ReShade depth codes -> z (H, W) float32, 0 where too near or sky (scripts/utils.py:80-98)."""
    d = codes.astype(np.float64) / 65535.0
    near, far = 1.0, 1000.0
    z = d / (far - d * (far - near)) / 0.004
    z[(d < NEAR_CODE) | (d > SKY_CODE)] = 0.0
    return z.astype(np.float32)


@lru_cache(maxsize=4)
def _load_split(scene: str, split: int) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """(global frame indices, K (S, 3, 3), quats (S, 4) as stored, trans (S, 3)) of one split; read once per split."""
    scene_dir = Path(scene)
    path = scene_dir / "camera" / f"split_{split}.json"
    try:
        indices = json.loads((scene_dir / "split_info.json").read_text())["split"][split]
        camera = json.loads(path.read_text())
        focals = np.asarray(camera["focals"], dtype=np.float64).reshape(-1)  # (S,)
        quats = np.asarray(camera["quats"], dtype=np.float64).reshape(-1, 4)  # (S, 4)
        trans = np.asarray(camera["trans"], dtype=np.float64).reshape(-1, 3)  # (S, 3)
        cx, cy = float(camera["cx"]), float(camera["cy"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise FrameReadError(f"cannot read the cameras of split {split} from {path}: {error!r}") from None
    if not len(focals) == len(quats) == len(trans) == len(indices):
        raise FrameReadError(f"{path} has {len(focals)} focals, {len(quats)} quats, {len(trans)} trans for {len(indices)} frames")
    intrinsics = np.stack([pinhole(focal, focal, cx, cy) for focal in focals]) if len(focals) else np.zeros((0, 3, 3))
    return [int(i) for i in indices], intrinsics, quats, trans


class OmniWorldGameSource(DatasetSource):
    """OmniWorld-Game: one sequence per split of an extracted scene."""

    name = "omniworld_game"

    def __init__(self, root, quaternion_order: str = "wxyz", principal_point_shift: float = 0.5,
                 far_percentile: float | None = None, dynamic_mask_dir: str | None = "gdino_mask",
                 caption_pattern: str | None = "text/split_{split}_{segment}.txt", fps: float = 24.0):
        super().__init__(root)
        if quaternion_order not in ("wxyz", "xyzw"):
            raise ValueError(f"omniworld_game: quaternion_order must be wxyz or xyzw, got {quaternion_order!r}")
        self.quaternion_order, self.principal_point_shift = quaternion_order, float(principal_point_shift)
        self.far_percentile = None if far_percentile is None else float(far_percentile)
        self.dynamic_mask_dir, self.caption_pattern, self.fps = dynamic_mask_dir, caption_pattern, float(fps)

    def sequences(self) -> list[SequenceInfo]:
        scenes = marked_folders(self.root, "split_info.json")  # the root itself when it is one scene
        if not scenes:
            raise SourceLayoutError(self.name, self.root, "<uid>/split_info.json (scenes extracted by scripts/extract_one_game_scene.sh)")
        found = []
        for scene in scenes:
            prefix = "" if scene == self.root else f"{scene.name}/"
            try:
                splits = json.loads((scene / "split_info.json").read_text())["split"]
                fps_file = scene / "fps.txt"
                fps = float(fps_file.read_text().split()[0]) if fps_file.is_file() else self.fps
            except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
                # listed with its problem, so the report names the broken file as a skipped sequence and the run goes on
                found.append(SequenceInfo(f"{prefix}split_info.json", 0, problem=f"cannot read {scene}/split_info.json or fps.txt: {error!r}"))
                continue
            found += [SequenceInfo(f"{prefix}split_{i}", len(indices), fps, split=None) for i, indices in enumerate(splits)]
        return found

    def _locate(self, sequence: SequenceInfo) -> tuple[Path, int]:
        scene, _, split = sequence.name.rpartition("/")
        return (self.root / scene if scene else self.root), int(split.removeprefix("split_"))

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        scene, split = self._locate(sequence)
        indices, intrinsics, quats, trans = _load_split(str(scene), split)
        check_index(index, len(indices), scene / "camera" / f"split_{split}.json")
        frame = indices[index]
        rgb = read_rgb(scene / "color" / f"{frame:06d}.png")
        depth = decode_depth(read_png_uint16(scene / "depth" / f"{frame:06d}.png"))  # (H, W)
        if self.far_percentile is not None and (depth > 0).any():
            depth[depth > np.percentile(depth[depth > 0], self.far_percentile)] = 0.0

        k = intrinsics[index].copy()
        k[0, 2] -= self.principal_point_shift
        k[1, 2] -= self.principal_point_shift
        quat = quats[index] if self.quaternion_order == "xyzw" else np.roll(quats[index], -1)  # -> (x, y, z, w)
        world_to_camera = quaternion_pose(trans[index], quat)

        mask = None
        if self.dynamic_mask_dir:
            mask_path = scene / self.dynamic_mask_dir / f"{frame:06d}.png"
            if mask_path.is_file():
                mask = read_rgb(mask_path).any(axis=-1)
        return SourceFrame(rgb=rgb, depth=depth, intrinsics=k, world_to_camera=world_to_camera, dynamic_mask=mask)

    def caption(self, sequence: SequenceInfo, first: int, count: int) -> str | None:
        if not self.caption_pattern:
            return None
        scene, split = self._locate(sequence)
        path = scene / self.caption_pattern.format(split=split, segment=first // SEGMENT_FRAMES)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):  # absent or unreadable: no dataset caption (captions= or the captioner fill it)
            return None
        return text or None


SOURCE = OmniWorldGameSource
