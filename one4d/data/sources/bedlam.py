"""BEDLAM (MPI; synthetic humans rendered in Unreal Engine 5), read as downloaded and extracted.

Layout per scene folder (FORMATS.md section 2; pixelite1201/BEDLAM@9ad6adf1:data_processing/ReadMe.md;
PerceivingSystems/bedlam_render@a9e0ee1:tools/post_render_pipeline/exr_save_depth_masks.py)::

    <scene>/be_seq.csv                                   rows with Comment "sequence_name=seq_XXXXXX;..."
    <scene>/png/seq_000000/seq_000000_0000.png           RGB, 30 fps
    <scene>/depth/seq_000000/seq_000000_0000_depth.exr   float32 EXR, channel "Depth", centimetres
    <scene>/masks/seq_000000/seq_000000_0000_env.png     environment mask (255 = environment)
    <scene>/ground_truth/camera/seq_000000_camera.csv    per frame: x, y, z (cm), yaw, pitch, roll (deg), focal_length (mm)

A sequence is one ``sequence_name`` of ``be_seq.csv`` (``<scene>/seq_000000``); every named sequence is listed (CUT3R's
public script stops after the first one per scene, ``preprocess_bedlam.py:386-388``, a bug). Frame ``i`` is row ``i``
of the camera csv and file ``seq_XXXXXX_{i:04d}``.

Conventions:
- Depth: Unreal SceneDepth in cm ("[cm]", PerceivingSystems/bedlam_render#14) -> ``depth_unit_m`` 0.01. It is planar
  z-depth (a flat wall reads constant depth; CUT3R uses it as z). Sky is ~1e8 cm: the config's far cut (200 m, CUT3R
  ``bedlam.py:262-263``) zeroes it.
- Intrinsics (``bedlam_render unreal/render/unreal_coordinate_system.md:13-18``): sensor 36 x 20.25 mm, so
  ``fx = f_mm / 36 * W`` and ``fy = f_mm / 20.25 * H`` per row (``zoom`` scenes change the focal length every
  frame); the principal point is the image centre, ((W-1)/2, (H-1)/2) with integer pixel centres (peers use W/2).
- Poses: Unreal world (X forward, Y right, Z up, left-handed, cm); camera yaw about Z, then pitch, then roll.
  CUT3R's transform (``datasets_preprocess/preprocess_bedlam.py``: ``rotation_matrix_unreal``,
  ``convert_rotation_to_opencv``, ``convert_translation_to_opencv``, ``get_params``)::

      R = C @ Rx(roll) @ Ry(pitch) @ Rz(-yaw) @ C.T,  C = [[0,1,0],[0,0,-1],[1,0,0]]   (Unreal -> OpenCV axes)
      c = [y, -z, x] * 0.01;   world_to_camera = [[R, -R c], [0, 0, 0, 1]]

  checked against Unreal's FRotator axes in tests/source_fixtures_b.py (written independently).
- ``closeup`` scenes are stored rotated by 90 degrees (portrait; the official code rotates the image and adds 90 to
  roll, ``data_processing/df_full_body.py:434-445``); that path is not verified here, so they are skipped by
  default (``skip_scenes_containing``, as CUT3R does) and a portrait frame elsewhere is a FrameReadError. The four
  HDRI scenes (no 3D background, CUT3R's list) are skipped by default (``skip_scenes``).
- Dynamic mask: the humans, i.e. every pixel outside the ``_env.png`` environment mask (written from the
  cryptomatte "default" object, ``exr_save_depth_masks.py:process_masks``); no mask when the file is absent.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

from one4d.data.sources._files import check_index, marked_folders, read_exr_channel, read_rgb
from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError

HDRI_SCENES = ("20221010_3_1000_batch01hand", "20221017_3_1000_batch01hand", "20221018_3-8_250_batch01hand",
               "20221019_3_250_highbmihand")  # CUT3R preprocess_bedlam.py main(): no 3D background
UNREAL_TO_OPENCV = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # rows: OpenCV x, y, z in Unreal axes


def unreal_camera_to_opencv(x, y, z, yaw, pitch, roll, unit_m: float = 0.01) -> np.ndarray:
    """One BEDLAM camera row (location in Unreal units, rotation in degrees) -> OpenCV world-to-camera (4, 4)."""
    yaw, pitch, roll = np.deg2rad([yaw, pitch, roll])
    cos, sin = np.cos(-yaw), np.sin(-yaw)
    r_yaw = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    cos, sin = np.cos(pitch), np.sin(pitch)
    r_pitch = np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])
    cos, sin = np.cos(roll), np.sin(roll)
    r_roll = np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    rotation = UNREAL_TO_OPENCV @ (r_roll @ r_pitch @ r_yaw) @ UNREAL_TO_OPENCV.T
    centre = np.array([y, -z, x], dtype=np.float64) * unit_m
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, -rotation @ centre
    return pose


@lru_cache(maxsize=4)
def _camera_rows(path: str) -> list[dict]:
    """The rows of a ``seq_XXXXXX_camera.csv`` as floats; read once per sequence."""
    try:
        with open(path, newline="") as file:
            rows = [{key: float(row[key]) for key in ("x", "y", "z", "yaw", "pitch", "roll", "focal_length")}
                    for row in csv.DictReader(file)]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FrameReadError(f"cannot read camera file {path}: {error!r}") from None
    return rows


def _sequence_names(be_seq: Path) -> list[str]:
    """The ``sequence_name=...`` values of a scene's be_seq.csv, in file order."""
    with open(be_seq, newline="") as file:
        comments = [row.get("Comment") or "" for row in csv.DictReader(file)]
    names = []
    for comment in comments:
        for field in comment.split(";"):
            key, _, value = field.partition("=")
            if key.strip() == "sequence_name" and value.strip() not in names:
                names.append(value.strip())
    return names


class BedlamSource(DatasetSource):
    """BEDLAM: one sequence per ``sequence_name`` of each scene's be_seq.csv."""

    name = "bedlam"

    def __init__(self, root, depth_unit_m: float = 0.01, location_unit_m: float = 0.01,
                 sensor_width_mm: float = 36.0, sensor_height_mm: float = 20.25,
                 skip_scenes: tuple = HDRI_SCENES, skip_scenes_containing: tuple = ("closeup",), fps: float = 30.0):
        super().__init__(root)
        self.depth_unit_m, self.location_unit_m = float(depth_unit_m), float(location_unit_m)
        self.sensor = (float(sensor_width_mm), float(sensor_height_mm))
        self.skip_scenes, self.skip_containing = set(skip_scenes or ()), tuple(skip_scenes_containing or ())
        self.fps = float(fps)

    def sequences(self) -> list[SequenceInfo]:
        scenes = marked_folders(self.root, "be_seq.csv")  # the root itself when it is one scene
        if not scenes:
            raise SourceLayoutError(self.name, self.root, "<scene>/be_seq.csv with png/, depth/ and ground_truth/camera/ beside it")
        found = []
        for scene in scenes:
            if scene.name in self.skip_scenes or any(part in scene.name for part in self.skip_containing):
                continue
            prefix = "" if scene == self.root else f"{scene.name}/"
            try:
                names = _sequence_names(scene / "be_seq.csv")
            except (OSError, UnicodeDecodeError, csv.Error) as error:
                # listed with its problem, so the report names the broken file as a skipped sequence and the run goes on
                found.append(SequenceInfo(f"{prefix}be_seq.csv", 0, problem=f"cannot read {scene / 'be_seq.csv'}: {error}"))
                continue
            for sequence in names:
                camera = scene / "ground_truth" / "camera" / f"{sequence}_camera.csv"
                if not camera.is_file():  # a sequence be_seq.csv names without its camera file: reported, not dropped
                    found.append(SequenceInfo(f"{prefix}{sequence}", 0, problem=f"missing camera file {camera}"))
                    continue
                # rows = lines after the header; a broken file fails in read_frame, per segment
                rows = sum(1 for line in camera.read_text(errors="replace").splitlines()[1:] if line.strip())
                found.append(SequenceInfo(f"{prefix}{sequence}", rows, self.fps))
        return found

    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        scene_name, _, seq = sequence.name.rpartition("/")
        scene = self.root / scene_name if scene_name else self.root
        camera_path = scene / "ground_truth" / "camera" / f"{seq}_camera.csv"
        if not camera_path.is_file():
            raise FrameReadError(f"missing camera file {camera_path}")
        rows = _camera_rows(str(camera_path))
        check_index(index, len(rows), camera_path)
        stem = f"{seq}_{index:04d}"
        rgb = read_rgb(scene / "png" / seq / f"{stem}.png")
        height, width = rgb.shape[:2]
        if height > width:
            raise FrameReadError(f"{scene / 'png' / seq / stem}.png is portrait (a rotated closeup render): not supported")
        depth_path = scene / "depth" / seq / f"{stem}_depth.exr"
        if not depth_path.is_file():
            raise FrameReadError(f"missing depth file {depth_path}")
        depth = read_exr_channel(str(depth_path), "Depth", depth_path) * np.float32(self.depth_unit_m)  # (H, W) metres
        if depth.shape != (height, width):
            raise FrameReadError(f"{depth_path} is {depth.shape[1]}x{depth.shape[0]}, its image {width}x{height}")

        row = rows[index]
        focal_mm = row["focal_length"]
        intrinsics = np.array([[focal_mm / self.sensor[0] * width, 0.0, (width - 1) / 2],
                               [0.0, focal_mm / self.sensor[1] * height, (height - 1) / 2], [0.0, 0.0, 1.0]])
        world_to_camera = unreal_camera_to_opencv(row["x"], row["y"], row["z"], row["yaw"], row["pitch"], row["roll"],
                                                  self.location_unit_m)
        mask_path = scene / "masks" / seq / f"{stem}_env.png"
        mask = ~read_rgb(mask_path).any(axis=-1) if mask_path.is_file() else None  # humans = not environment
        return SourceFrame(rgb=rgb, depth=depth, intrinsics=intrinsics, world_to_camera=world_to_camera, dynamic_mask=mask)


SOURCE = BedlamSource
