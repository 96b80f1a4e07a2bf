"""Tiny downloads of BEDLAM, OmniWorld-Game, SpatialVID and Virtual KITTI 2, written in each dataset's own format.

Each writer takes a synthetic scene of exactly known geometry (``one4d.data.synthetic.render_scene``) and converts it
INTO the dataset's conventions with the encode formulas of FORMATS.md section 10 and the authors' conventions,
written here independently of the readers in ``one4d/data/sources/`` (for example the BEDLAM pose is encoded with
Unreal's FRotator axes, not by inverting the reader's matrices), so a reader with a wrong convention fails.

The scene's world is moved by a fixed rigid transform first, so no dataset's first pose is the identity. Reading
back and the self-check are tests/source_fixtures_a.py's (``read_all``, ``self_check``).
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import torch
from source_fixtures_a import KnownScene, save_image

from one4d.data.synthetic import render_scene
from one4d.geometry import relative_to_first


def _rotation(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def make_scene(seed: int = 3, frames: int = 6, height: int = 36, width: int = 64) -> KnownScene:
    """``render_scene`` with its world moved by a fixed rotation (about a tilted axis) and translation."""
    scene = render_scene(seed, num_frames=frames, height=height, width=width)
    moved = np.eye(4)
    moved[:3, :3] = _rotation([0.3, 1.0, 0.2], 0.7)
    moved[:3, 3] = [20.0, -5.0, 30.0]  # world point = moved @ scene point; tens of metres, as in real datasets
    relative_poses = scene.world_to_camera.double().numpy()  # (F, 4, 4), float32 values: make each R exactly orthonormal
    u, _, vt = np.linalg.svd(relative_poses[:, :3, :3])
    relative_poses[:, :3, :3] = u @ vt
    world_to_camera = relative_poses @ np.linalg.inv(moved)
    return KnownScene(
        rgb=(scene.rgb.numpy() * 255).round().astype(np.uint8),
        depth=scene.depth.double().numpy(),
        intrinsics=scene.intrinsics.double().numpy(),
        world_to_camera=world_to_camera,
        dynamic_mask=scene.dynamic_mask.numpy(),
    )


def relative(world_to_camera: np.ndarray) -> np.ndarray:
    """Poses (F, 4, 4) re-expressed in frame 0's camera, to compare cameras whatever the world frame."""
    return relative_to_first(torch.as_tensor(np.asarray(world_to_camera, dtype=np.float64))).numpy()


# ----------------------------------------------------------------------------- Virtual KITTI 2


def write_vkitti2(root: Path, scene: KnownScene, sky_rows: int = 2) -> str:
    """``vkitti_2.0.3_{rgb,depth,textgt}/Scene01/clone/...`` for Camera_0 (and Camera_1 rows in the text files, a
    0.53 m baseline to the right, as the stereo rig has). The top ``sky_rows`` rows are sky (65535)."""
    base = "Scene01/clone"
    for index, (rgb, depth) in enumerate(zip(scene.rgb, scene.depth)):
        save_image(root / "vkitti_2.0.3_rgb" / base / "frames/rgb/Camera_0" / f"rgb_{index:05d}.jpg", rgb, quality=95, subsampling=0)
        codes = np.round(depth * 100).astype(np.uint16)  # centimetres (FORMATS.md section 10)
        codes[:sky_rows] = 65535
        save_image(root / "vkitti_2.0.3_depth" / base / "frames/depth/Camera_0" / f"depth_{index:05d}.png", codes)
    text = root / "vkitti_2.0.3_textgt" / base
    text.mkdir(parents=True)
    intrinsic = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
    extrinsic = ["frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1"]
    for index, (k, pose) in enumerate(zip(scene.intrinsics, scene.world_to_camera)):
        right = pose.copy()
        right[0, 3] -= 0.532725  # camera 1 sits 0.53 m to the right: its x coordinates are smaller
        for camera, matrix in ((0, pose), (1, right)):
            intrinsic.append(f"{index} {camera} {k[0, 0]:.6f} {k[1, 1]:.6f} {k[0, 2]:.6f} {k[1, 2]:.6f}")
            extrinsic.append(f"{index} {camera} " + " ".join(f"{value:.9f}" for value in matrix.reshape(-1)))
    (text / "intrinsic.txt").write_text("\n".join(intrinsic) + "\n")
    (text / "extrinsic.txt").write_text("\n".join(extrinsic) + "\n")
    return f"{base}/Camera_0"


# ----------------------------------------------------------------------------- OmniWorld-Game

OMNIWORLD_UID = "b04f88d1f85a"
OMNIWORLD_FIRST = 10  # split 0 holds global frames 10..; split 1 holds 20.. (indices are global, not 0-based)


def omniworld_codes(z: np.ndarray) -> np.ndarray:
    """Metres -> ReShade depth-buffer codes, the inverse of scripts/utils.py:load_depth (FORMATS.md section 10)."""
    zz = z * 0.004
    d = zz * 1000 / (1 + zz * 999)
    return np.round(d * 65535).astype(np.uint16)


def _wxyz(rotation: np.ndarray) -> list[float]:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(rotation).as_quat()  # scipy is (x, y, z, w)
    return [w, x, y, z]


def write_omniworld(root: Path, scene: KnownScene, caption: str = "a red ball rolls across a tiled floor") -> Path:
    """One extracted scene ``<uid>/`` with two splits: split 0 = all frames at global indices 10.., split 1 = the
    first three frames again at 20.. with their world turned and shifted (each split has its own camera file)."""
    folder = root / OMNIWORLD_UID
    other_world = np.eye(4)
    other_world[:3, :3] = _rotation([1.0, 0.0, 0.5], -1.1)
    other_world[:3, 3] = [-7.0, 1.0, 4.0]
    splits = [
        (list(range(OMNIWORLD_FIRST, OMNIWORLD_FIRST + len(scene.depth))), scene.world_to_camera, range(len(scene.depth))),
        ([20, 21, 22], scene.world_to_camera[:3] @ other_world, range(3)),
    ]
    for split, (indices, poses, frames) in enumerate(splits):
        camera = {"focals": [], "cx": float(scene.intrinsics[0, 0, 2] + 0.5), "cy": float(scene.intrinsics[0, 1, 2] + 0.5),
                  "quats": [], "trans": []}
        for global_index, frame, pose in zip(indices, frames, poses):
            save_image(folder / "color" / f"{global_index:06d}.png", scene.rgb[frame])
            save_image(folder / "depth" / f"{global_index:06d}.png", omniworld_codes(scene.depth[frame]))
            save_image(folder / "gdino_mask" / f"{global_index:06d}.png", scene.dynamic_mask[frame].astype(np.uint8) * 255)
            camera["focals"].append(float(scene.intrinsics[frame, 0, 0]))
            camera["quats"].append(_wxyz(pose[:3, :3]))
            camera["trans"].append(pose[:3, 3].tolist())
        (folder / "camera").mkdir(parents=True, exist_ok=True)
        (folder / "camera" / f"split_{split}.json").write_text(json.dumps(camera))
    (folder / "split_info.json").write_text(json.dumps({"split": [indices for indices, _, _ in splits]}))
    (folder / "fps.txt").write_text("24\n")
    (folder / "text").mkdir()
    (folder / "text" / "split_0_0.txt").write_text(caption + "\n")
    return folder


# ----------------------------------------------------------------------------- BEDLAM

BEDLAM_SCENE = "20221011_1_250_batch01hand_orbit_bigOffice"
BEDLAM_SKY_CM = 1.0e8  # the sky's depth in BEDLAM's EXRs is ~1e8 cm (pixelite1201/BEDLAM#24)


def opencv_to_unreal_camera(world_to_camera: np.ndarray) -> tuple[float, ...]:
    """OpenCV world-to-camera (world in OpenCV-like axes) -> BEDLAM's (x, y, z) in cm and (yaw, pitch, roll) in degrees.

    Written from Unreal's conventions, not from the reader: a point (x, y, z) of the OpenCV world is (z, x, -y) in
    Unreal (X forward, Y right, Z up); the camera's forward, right and up axes are Unreal's FRotationMatrix columns
    X = (cp cy, cp sy, sp), Y = (sr sp cy - cr sy, sr sp sy + cr cy, -sr cp), Z = (-(cr sp cy + sr sy), cy sr - cr sp sy, cr cp).
    """
    to_unreal = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    rotation = world_to_camera[:3, :3]
    centre = -rotation.T @ world_to_camera[:3, 3]
    right, down, forward = (to_unreal @ rotation[row] for row in range(3))  # camera axes in Unreal world
    up = -down
    pitch = math.asin(np.clip(forward[2], -1, 1))
    yaw = math.atan2(forward[1], forward[0])
    roll = math.atan2(-right[2], up[2])
    x, y, z = to_unreal @ centre * 100.0
    return x, y, z, math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def write_exr_depth(path: Path, z_cm: np.ndarray) -> None:
    """A float32 single-channel "Depth" EXR, written with the legacy API as bedlam_render's exr_save_depth_masks.py."""
    import Imath
    import OpenEXR

    path.parent.mkdir(parents=True, exist_ok=True)
    header = OpenEXR.Header(z_cm.shape[1], z_cm.shape[0])
    header["channels"] = {"Depth": Imath.Channel(Imath.PixelType(Imath.PixelType.FLOAT))}
    exr = OpenEXR.OutputFile(str(path), header)
    exr.writePixels({"Depth": z_cm.astype(np.float32).tobytes()})
    exr.close()


def write_bedlam(root: Path, scene: KnownScene, sequence: str = "seq_000000", sky_rows: int = 1) -> Path:
    """One BEDLAM scene folder with one sequence: PNGs, centimetre EXR depth (top rows sky), env masks (255 =
    environment), the camera csv in Unreal units and a be_seq.csv naming the sequence. Needs a 16:9 scene."""
    folder = root / BEDLAM_SCENE
    frames, height, width = scene.depth.shape
    assert width * 9 == height * 16, "BEDLAM's sensor is 36 x 20.25 mm: the fixture must be 16:9"
    rows = ["name,x,y,z,yaw,pitch,roll,focal_length"]
    for index in range(frames):
        stem = f"{sequence}_{index:04d}"
        save_image(folder / "png" / sequence / f"{stem}.png", scene.rgb[index])
        z_cm = scene.depth[index] * 100.0
        z_cm[:sky_rows] = BEDLAM_SKY_CM
        write_exr_depth(folder / "depth" / sequence / f"{stem}_depth.exr", z_cm)
        save_image(folder / "masks" / sequence / f"{stem}_env.png", (~scene.dynamic_mask[index]).astype(np.uint8) * 255)
        focal_mm = scene.intrinsics[index, 0, 0] * 36.0 / width
        values = opencv_to_unreal_camera(scene.world_to_camera[index]) + (focal_mm,)
        rows.append(f"{stem}," + ",".join(f"{value:.10f}" for value in values))
    (folder / "ground_truth" / "camera").mkdir(parents=True)
    (folder / "ground_truth" / "camera" / f"{sequence}_camera.csv").write_text("\n".join(rows) + "\n")
    (folder / "be_seq.csv").write_text(
        "Index,Type,Body,X,Y,Z,Yaw,Pitch,Roll,Comment\n"
        f"0,Group,,0,0,0,0,0,0,sequence_name={sequence};frames={frames}\n"
        "1,Body,rp_aaron_posed_002,0,0,0,0,0,0,start_frame=0\n"
    )
    return folder


# ----------------------------------------------------------------------------- SpatialVID

SPATIALVID_CLIP = "group_0001/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
SPATIALVID_VIDEO_FPS = 10.0
SPATIALVID_INTERVAL = 2  # annotated every int(0.2 * 10) = 2 video frames (utils/extract_frames.py)


def write_exr_half(file, values: np.ndarray, channel: str) -> None:
    """A HALF single-channel EXR (legacy API, as SpatialVID's cvd_opt.py writes its disparity)."""
    import Imath
    import OpenEXR

    header = OpenEXR.Header(values.shape[1], values.shape[0])
    header["channels"] = {channel: Imath.Channel(Imath.PixelType(Imath.PixelType.HALF))}
    exr = OpenEXR.OutputFile(str(file), header)
    exr.writePixels({channel: values.astype(np.float16).tobytes()})
    exr.close()


def csr_parts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, indices, indptr) of a bool (H, W) mask in compressed sparse row form (scipy.sparse.csr_matrix's)."""
    from scipy.sparse import csr_matrix

    matrix = csr_matrix(mask.astype(np.uint8))
    return matrix.data, matrix.indices, matrix.indptr


def write_spatialvid(root: Path, scene: KnownScene, caption: str = "A handheld camera walks through a bright room.",
                     sky_rows: int = 1) -> Path:
    """One SpatialVID clip: a 10 fps mp4 at twice the depth resolution whose even frames are the scene's frames
    (odd frames are other pictures), indexes.txt ``i 2i``, a zip of HALF disparity EXRs (top rows 0 = no depth),
    poses.npy (w2c, t + xyzw quaternion, float32), normalised intrinsics.npy, CSR dyn_masks.npz, caption.json."""
    from scipy.spatial.transform import Rotation

    from one4d.data.clip import write_video

    annotations = root / "annotations" / SPATIALVID_CLIP
    annotations.mkdir(parents=True)
    frames, height, width = scene.depth.shape
    video = []
    for frame in scene.rgb:  # the video is 2x the depth size: 2x2 blocks average back to the scene's pixels
        big = frame.repeat(2, axis=0).repeat(2, axis=1)
        video += [big, 255 - big]
    (root / "videos" / SPATIALVID_CLIP).parent.mkdir(parents=True)
    write_video(root / "videos" / f"{SPATIALVID_CLIP}.mp4", np.stack(video), fps=SPATIALVID_VIDEO_FPS)

    (root / "depths" / SPATIALVID_CLIP).parent.mkdir(parents=True)
    with zipfile.ZipFile(root / "depths" / f"{SPATIALVID_CLIP}.zip", "w") as archive:
        for index, depth in enumerate(scene.depth):
            disparity = 1.0 / depth
            disparity[:sky_rows] = 0.0
            exr = root / "tmp.exr"
            write_exr_half(exr, disparity, "Z")
            archive.write(exr, f"{index:05d}.exr")
            exr.unlink()

    poses = [np.concatenate([pose[:3, 3], Rotation.from_matrix(pose[:3, :3]).as_quat()]) for pose in scene.world_to_camera]
    np.save(annotations / "poses.npy", np.array(poses, dtype=np.float32))  # (N, 7) t, qx qy qz qw
    k = scene.intrinsics
    normalised = np.stack([k[:, 0, 0] / width, k[:, 1, 1] / height, (k[:, 0, 2] + 0.5) / width, (k[:, 1, 2] + 0.5) / height], axis=1)
    np.save(annotations / "intrinsics.npy", normalised.astype(np.float32))  # (N, 4); 0.5, 0.5 for a centred camera
    (annotations / "indexes.txt").write_text("".join(f"{i} {i * SPATIALVID_INTERVAL}\n" for i in range(frames)))
    parts = {"shape": np.array([height, width])}
    for index, mask in enumerate(scene.dynamic_mask):
        parts[f"f_{index}_data"], parts[f"f_{index}_indices"], parts[f"f_{index}_indptr"] = csr_parts(mask)
    np.savez(annotations / "dyn_masks.npz", **parts)
    (annotations / "caption.json").write_text(json.dumps({"CameraMotion": "forward", "SceneDescription": caption}))
    return annotations
