"""Tiny downloads of PointOdyssey, TartanAir, Dynamic Replica and Spring, written in each dataset's own on-disk format
from a synthetic scene whose geometry is known exactly.

Each writer encodes INTO the dataset's conventions independently of the reader under test (the encode formulas
of shared/datasets/FORMATS.md section 10, scipy for quaternions), so a reader with a wrong convention reads back
something other than the known scene. The file world is the scene's world moved by a fixed rigid transform, as a
real dataset's world is unrelated to its first camera. Each writer also marks a few pixels invalid in the
dataset's own way (sky code, sky distance, NaN disparity, zero depth); the expected depth there is 0.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from one4d.data.synthetic import render_scene
from one4d.geometry import depth_to_pointmap, resize_intrinsics

REPO = Path(__file__).resolve().parents[1]

SEED = 1  # a camera that moves sideways (1.4 m) and turns (21 degrees): every axis convention shows in the cameras
NUM_FRAMES, HEIGHT, WIDTH = 6, 24, 32
INVALID = (slice(None), 0, slice(0, 3))  # every frame's first three pixels of row 0 are written as invalid


@dataclass
class KnownScene:
    """What a correct reader must return, frame by frame, in the file's world."""

    rgb: np.ndarray  # (F, H, W, 3) uint8
    depth: np.ndarray  # (F, H, W) float64 z in metres, 0 where the fixture wrote an invalid value
    intrinsics: np.ndarray  # (F, 3, 3) float64, integer pixel centres
    world_to_camera: np.ndarray  # (F, 4, 4) float64 OpenCV, in the file's world
    dynamic_mask: np.ndarray  # (F, H, W) bool


def known_scene(num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH) -> KnownScene:
    """The synthetic scene, its world moved by a fixed rigid transform G (x_file = G x_scene)."""
    scene = render_scene(SEED, num_frames=num_frames, height=height, width=width)
    world_change = np.eye(4)
    world_change[:3, :3] = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix()
    world_change[:3, 3] = [1.5, -0.7, 3.0]
    depth = scene.depth.double().numpy().copy()
    depth[INVALID] = 0.0
    return KnownScene(
        rgb=(scene.rgb.numpy() * 255).round().astype(np.uint8),
        depth=depth,
        intrinsics=scene.intrinsics.double().numpy(),
        world_to_camera=scene.world_to_camera.double().numpy() @ np.linalg.inv(world_change),
        dynamic_mask=scene.dynamic_mask.numpy(),
    )


def save_image(path: Path, array: np.ndarray, **kwargs) -> None:
    """An image file (its format from the suffix; uint16 arrays become 16-bit PNGs), its folder created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


# ----------------------------------------------------------------------------- PointOdyssey


def write_pointodyssey(root: Path, scene: KnownScene, split: str = "train", sequence: str = "ani_fixture") -> Path:
    """<root>/<split>/<sequence>/{rgbs/rgb_00000.jpg, depths/depth_00000.png, anno.npz}; sky = code 65535."""
    folder = Path(root) / split / sequence
    for index, (rgb, depth) in enumerate(zip(scene.rgb, scene.depth)):
        (folder / "rgbs").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / "rgbs" / f"rgb_{index:05d}.jpg", quality=95)
        codes = (np.clip(depth, 0, 1000) * 65535 / 1000).astype(np.uint16)  # FORMATS.md section 10 encode
        codes[depth == 0] = 65535  # the background, clipped to 1000 m by the generator
        save_image(folder / "depths" / f"depth_{index:05d}.png", codes)
    frames = len(scene.depth)
    np.savez(folder / "anno.npz", intrinsics=scene.intrinsics.astype(np.float32),
             extrinsics=scene.world_to_camera.astype(np.float32), trajs_2d=np.zeros((frames, 4, 2), np.float32),
             trajs_3d=np.zeros((frames, 4, 3), np.float32), visibs=np.ones((frames, 4), bool))
    return folder


# ----------------------------------------------------------------------------- TartanAir

# Columns: the NED camera axes (x forward, y right, z down) written in OpenCV camera axes (x right, y down, z forward).
NED_AXES_IN_OPENCV = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def write_tartanair(root: Path, scene: KnownScene, env: str = "fixtureenv", difficulty: str = "Easy",
                    trajectory: str = "P000", doubled: bool = True) -> Path:
    """<root>/<env>/<env>/<difficulty>/<trajectory>/{image_left, depth_left, pose_left.txt} (NED camera-to-world), as the
    official zips unzip (``doubled``), or with one <env> folder."""
    folder = Path(root) / env / (env if doubled else "") / difficulty / trajectory
    lines = []
    for index, (rgb, depth, world_to_camera) in enumerate(zip(scene.rgb, scene.depth, scene.world_to_camera)):
        save_image(folder / "image_left" / f"{index:06d}_left.png", rgb)
        (folder / "depth_left").mkdir(parents=True, exist_ok=True)
        np.save(folder / "depth_left" / f"{index:06d}_left_depth.npy", np.where(depth == 0, 10000.0, depth).astype(np.float32))
        camera_to_world = np.linalg.inv(world_to_camera)  # OpenCV camera axes
        rotation_ned = camera_to_world[:3, :3] @ NED_AXES_IN_OPENCV  # NED camera axes -> world
        qx, qy, qz, qw = Rotation.from_matrix(rotation_ned).as_quat()  # scipy: scalar last
        tx, ty, tz = camera_to_world[:3, 3]
        lines.append(" ".join(repr(float(value)) for value in (tx, ty, tz, qx, qy, qz, qw)))
    (folder / "pose_left.txt").write_text("\n".join(lines) + "\n")
    return folder


def tartanair_options(scene: KnownScene) -> dict:
    """The fixed pinhole of this fixture as TartanAir states it: cx = W/2, cy = H/2 from the image corner."""
    height, width = scene.depth.shape[1:]
    focal = float(scene.intrinsics[0, 0, 0])
    return {"fx": focal, "fy": focal, "cx": width / 2, "cy": height / 2}


# ----------------------------------------------------------------------------- Dynamic Replica

PYTORCH3D_FLIP = np.diag([-1.0, -1.0, 1.0])  # OpenCV camera (x right, y down) -> PyTorch3D camera (x left, y up)


def write_dynamic_replica(root: Path, scene: KnownScene, split: str = "train", sequence: str = "fixture-3_obj") -> Path:
    """<root>/<split>/frame_annotations_<split>.jgz + the image/depth/mask files it names (left camera; the right
    camera's records are written too, shifted 6 cm, and records are stored in reverse frame order)."""
    folder = Path(root) / split
    frames, height, width = scene.depth.shape
    half, scale = np.array([width / 2, height / 2]), min(width, height) / 2  # ndc_isotropic
    records = []
    for camera, shift in (("left", 0.0), ("right", 0.06)):
        for index in range(frames):
            stem = f"{sequence}/{camera}"
            image = f"{stem}/images/{sequence}_source_{camera}_{index:04d}.png"
            depth = f"{stem}/depths/{sequence}_source_{camera}_{index:04d}.geometric.png"
            mask = f"{stem}/masks/{sequence}_source_{camera}_{index:04d}.png"
            save_image(folder / image, scene.rgb[index])
            save_image(folder / depth, scene.depth[index].astype(np.float16).view(np.uint16))  # float16 bits in a 16-bit PNG
            save_image(folder / mask, scene.dynamic_mask[index].astype(np.uint8) * 255)
            rotation_cv, translation_cv = scene.world_to_camera[index, :3, :3], scene.world_to_camera[index, :3, 3]
            translation_cv = translation_cv - np.array([shift, 0.0, 0.0])
            K = scene.intrinsics[index]
            corner_centre = K[:2, 2] + 0.5  # PyTorch3D NDC counts from the pixel corner
            records.append({
                "sequence_name": sequence, "camera_name": camera, "frame_number": index, "frame_timestamp": index / 30.0,
                "image": {"path": image, "size": [height, width]},
                "depth": {"path": depth, "scale_adjustment": 1.0, "mask_path": None},
                "mask": {"path": mask, "mass": float(scene.dynamic_mask[index].sum())},
                "viewpoint": {
                    "R": (rotation_cv.T @ PYTORCH3D_FLIP).tolist(),  # X_cam = X_world @ R + T, row vectors
                    "T": (PYTORCH3D_FLIP @ translation_cv).tolist(),
                    "focal_length": [K[0, 0] / scale, K[1, 1] / scale],
                    "principal_point": ((half - corner_centre) / scale).tolist(),
                    "intrinsics_format": "ndc_isotropic",
                },
            })
    with gzip.open(folder / f"frame_annotations_{split}.jgz", "wt", encoding="utf8") as file:
        json.dump(records[::-1], file)
    return folder


# ----------------------------------------------------------------------------- Spring

SPRING_BASELINE = 0.065


def write_spring(root: Path, scene: KnownScene, sequence: str = "0001") -> Path:
    """<root>/train/<sequence>/{frame_left, disp1_left (HDF5 at 2x), cam_data/{intrinsics,extrinsics}.txt}, 1-based.

    Of each 2x2 disparity block only the top-left sample is the pixel's disparity (the one peers read with
    [::2, ::2]); the other three are scaled, so a reader that averages or resizes reads wrong depth."""
    import h5py  # the [data] extra; the Spring tests skip without it
    folder = Path(root) / "train" / sequence
    intrinsics, extrinsics = [], []
    for index, (rgb, depth) in enumerate(zip(scene.rgb, scene.depth)):
        number = index + 1
        save_image(folder / "frame_left" / f"frame_left_{number:04d}.png", rgb)
        K = scene.intrinsics[index]
        with np.errstate(divide="ignore"):
            disparity = np.where(depth > 0, K[0, 0] * SPRING_BASELINE / depth, np.nan)  # (H, W), NaN = no ground truth
        doubled = np.repeat(np.repeat(disparity, 2, axis=0), 2, axis=1) * 1.5  # (2H, 2W)
        doubled[::2, ::2] = disparity
        (folder / "disp1_left").mkdir(parents=True, exist_ok=True)
        with h5py.File(folder / "disp1_left" / f"disp1_left_{number:04d}.dsp5", "w") as file:
            file.create_dataset("disparity", data=doubled.astype(np.float32))
        intrinsics.append(" ".join(repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5)))
        extrinsics.append(" ".join(repr(float(v)) for v in scene.world_to_camera[index].reshape(-1)))
    (folder / "cam_data").mkdir(parents=True, exist_ok=True)
    (folder / "cam_data" / "intrinsics.txt").write_text("\n".join(intrinsics) + "\n")
    (folder / "cam_data" / "extrinsics.txt").write_text("\n".join(extrinsics) + "\n")
    return folder


# ----------------------------------------------------------------------------- reading back


def read_all(source, sequence) -> dict[str, np.ndarray]:
    """Every frame of ``sequence`` read with ``source``, stacked: rgb, depth (float64), intrinsics, world_to_camera,
    dynamic_mask (None when a frame has none)."""
    frames = [source.read_frame(sequence, index) for index in range(sequence.num_frames)]
    stacked = {key: np.stack([getattr(frame, key) for frame in frames]) for key in ("rgb", "depth", "intrinsics", "world_to_camera")}
    stacked["depth"] = stacked["depth"].astype(np.float64)
    masks = [frame.dynamic_mask for frame in frames]
    stacked["dynamic_mask"] = None if any(mask is None for mask in masks) else np.stack(masks)
    return stacked


def check_depth(read: np.ndarray, known: np.ndarray, tolerance: float) -> None:
    """Valid known depth is read within ``tolerance`` metres; invalid pixels read as 0, NaN, inf or negative."""
    valid = known > 0
    assert np.all(np.isfinite(read[valid])), "valid depth read as non-finite"
    error = np.abs(read[valid] - known[valid]).max()
    assert error <= tolerance, f"depth off by {error:.3g} m > {tolerance:.3g} m"
    invalid = read[~valid]
    assert not np.any(np.isfinite(invalid) & (invalid > 0)), "an invalid pixel was read as valid depth"


def self_check(read: dict[str, np.ndarray], scene: KnownScene | None = None):
    """The clip self-check (one4d.data.selfcheck.check_clip: worst-frame median error and outlier fraction,
    ``.flagged()``) of frames as a source returned them, invalid depth -> 0 as the cutter does.

    The fixture's scene has moving objects; where the dataset has no dynamic mask of its own the known one of
    ``scene`` is used, so the check measures the reader's conventions and not the motion (about 2.5 % of the points)."""
    from one4d.data.selfcheck import check_clip

    depth = np.where(np.isfinite(read["depth"]) & (read["depth"] > 0), read["depth"], 0.0)
    mask = read["dynamic_mask"] if read["dynamic_mask"] is not None or scene is None else scene.dynamic_mask
    return check_clip(depth, read["intrinsics"], read["world_to_camera"], mask)


def config_options(name: str) -> dict:
    """``options`` of configs/source/<name>.yaml, as the command passes them to the source's constructor."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "source" / f"{name}.yaml")
    assert config.name == name and {"far_depth", "stride", "options"} <= set(config)
    return OmegaConf.to_container(config.options)


# ----------------------------------------------------------------------------- the command, end to end


def convert_download(source: str, root: Path, out: Path, frames: int, height: int, width: int,
                     *overrides: str) -> subprocess.CompletedProcess:
    """scripts/prepare_data.py as a user runs it (one worker, stride 1, no progress bar)."""
    command = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), f"source={source}", f"root={root}", f"out={out}",
               f"num_frames={frames}", f"height={height}", f"width={width}", "workers=1", "stride=1", "progress=false", *overrides]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def check_clip_geometry(clip, scene: KnownScene, expected_depth: np.ndarray, valid: np.ndarray, shrink: int,
                        points_atol: float) -> None:
    """A converted clip's cameras equal the scene's (intrinsics resized ``shrink`` times, poses relative to frame 0) and
    its float16 pointmaps the scene's points on ``valid`` pixels (to 2^-10 of their extent plus ``points_atol``)."""
    frames = len(expected_depth)
    expected_intrinsics = resize_intrinsics(torch.from_numpy(scene.intrinsics[:frames]), 1 / shrink, 1 / shrink)
    np.testing.assert_allclose(clip.intrinsics.numpy(), expected_intrinsics.numpy(), atol=1e-4)
    expected_poses = scene.world_to_camera[:frames] @ np.linalg.inv(scene.world_to_camera[0])  # relative to frame 0
    stored = clip.world_to_camera.numpy()
    np.testing.assert_allclose(stored @ np.linalg.inv(stored[0]), expected_poses, atol=1e-5)
    expected_points = depth_to_pointmap(torch.from_numpy(expected_depth), expected_intrinsics, torch.from_numpy(expected_poses)).numpy()
    scale = np.abs(expected_points[valid]).max()
    np.testing.assert_allclose(clip.pointmaps.numpy()[valid], expected_points[valid], atol=scale * 2.0**-10 + points_atol)
