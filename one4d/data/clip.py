"""The on-disk clip format: one folder per clip (documented for users in ``data/README.md``).

    <clip>/rgb.mp4          H.264, YUV 4:4:4 (lossless by default: crf 0), or rgb/000000.png ...
    <clip>/pointmaps.npz    "pointmaps" float16 (F, H, W, 3), every pixel's point in frame 0's camera
                            (layout "full" only; layout "depth" computes them when reading)
    <clip>/depth.npz        "depth" float16 (F, H, W), z in each frame's own camera, 0 = invalid (deflate-compressed)
    <clip>/cameras.json     "intrinsics" (F, 3, 3) and "world_to_camera" (F, 4, 4), OpenCV
    <clip>/meta.json        num_frames, height, width, fps, source, caption, norm_centre, norm_scale, layout

Pointmaps are a pure function of depth, intrinsics and poses, so the "depth" layout stores no
pointmaps.npz (most of a clip's bytes: 1.3 of 1.4 MB per frame at 352x624) and :func:`read_clip` computes them with
:func:`pointmaps_from_depth`. ``write_clip(pointmaps=None)`` stores that same function's output in
the "full" layout, so both layouts of one clip read back bitwise-identical arrays.

Conventions are those of ``one4d.geometry``. Every problem with a clip raises :class:`ClipError`
(a ValueError) naming the clip and the problem, so the training dataset can skip and count it.
Video is read with decord and falls back to imageio (ffmpeg) when decord is missing or fails.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch

from one4d.geometry import depth_to_camera_points, invert_pose, pointmap_normalization, transform_points

FORMAT_VERSION = 1
VIDEO_NAME, PNG_FOLDER = "rgb.mp4", "rgb"
POINTMAPS_NAME, DEPTH_NAME = "pointmaps.npz", "depth.npz"
CAMERAS_NAME, META_NAME = "cameras.json", "meta.json"
FLOAT16_MAX = float(np.finfo(np.float16).max)
LAYOUTS = ("full", "depth")  # full: pointmaps.npz stored; depth: pointmaps computed from depth when read


class ClipError(ValueError):
    """A clip folder that cannot be used; the message names the clip and the problem."""

    def __init__(self, folder, problem: str):
        super().__init__(f"clip {folder}: {problem}")
        self.folder = str(folder)
        self.problem = problem


@dataclass
class Clip:
    """A clip (or the frames of it that were read) as tensors."""

    name: str
    rgb: torch.Tensor  # (F, H, W, 3) float32 in [0, 1]
    pointmaps: torch.Tensor  # (F, H, W, 3) float32, in frame 0's camera of the STORED clip
    depth: torch.Tensor  # (F, H, W) float32, 0 = invalid
    intrinsics: torch.Tensor  # (F, 3, 3) float64
    world_to_camera: torch.Tensor  # (F, 4, 4) float64
    meta: dict
    frames: list[int] = field(default_factory=list)  # stored frame indices that were read
    reference_world_to_camera: torch.Tensor | None = None  # (4, 4) stored frame 0: the frame of ``pointmaps``


# ----------------------------------------------------------------------------- writing


def _as_numpy(array, name: str, shape_tail: tuple[int, ...], folder) -> np.ndarray:
    """Tensor or array -> numpy, checking the trailing shape."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 1 + len(shape_tail) or any(t is not None and s != t for s, t in zip(array.shape[1:], shape_tail)):
        raise ClipError(folder, f"{name} must have shape (F, {', '.join('?' if t is None else str(t) for t in shape_tail)}), got {array.shape}")
    return array


def _rgb_to_uint8(rgb: np.ndarray) -> np.ndarray:
    """uint8 frames as they are; floats are read as [0, 1]."""
    if rgb.dtype == np.uint8:
        return rgb
    return (np.clip(rgb.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def pointmaps_from_depth(depth: torch.Tensor, intrinsics: torch.Tensor, world_to_camera: torch.Tensor,
                         reference_world_to_camera: torch.Tensor) -> torch.Tensor:
    """float16 depth (F, H, W), float64 K (F, 3, 3) and poses (F, 4, 4) -> float16 pointmaps (F, H, W, 3).

    Points are in the camera of ``reference_world_to_camera`` (the stored clip's frame 0, the
    pointmap convention); invalid pixels (depth 0) are 0. Computed in float64 one frame at a time,
    so a frame's result does not depend on which other frames are read with it: the writer
    (all frames) and the depth-layout reader (a sample's frames) get the same bits.
    """
    points = torch.empty(*depth.shape, 3, dtype=torch.float16)  # (F, H, W, 3)
    for index in range(len(depth)):
        frame_depth = depth[index : index + 1].double()  # (1, H, W)
        camera_points = depth_to_camera_points(frame_depth, intrinsics[index : index + 1])  # (1, H, W, 3)
        camera_to_reference = reference_world_to_camera @ invert_pose(world_to_camera[index])  # (4, 4)
        frame_points = transform_points(camera_points, camera_to_reference[None])  # (1, H, W, 3)
        points[index] = (frame_points[0] * (frame_depth[0, ..., None] > 0)).to(torch.float16)
    return points


def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 0, pixel_format: str = "yuv444p") -> None:
    """Write uint8 frames (F, H, W, 3) as H.264, by default YUV 4:4:4 (crf 0: lossless up to RGB<->YUV rounding).

    4:4:4 for data because 4:2:0 chroma subsampling smears the sharp colour edges that tie appearance
    to geometry (errors of 100/255 on our textures at 64x64); "yuv420p" for videos people watch
    (browsers and most players do not decode 4:4:4).
    """
    writer = imageio.get_writer(
        str(path), fps=fps, codec="libx264", pixelformat=pixel_format, macro_block_size=1,
        ffmpeg_params=["-crf", str(crf)], ffmpeg_log_level="error",
    )
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()


def write_clip(
    folder: str | Path,
    rgb,
    pointmaps,
    depth,
    intrinsics,
    world_to_camera,
    meta: dict | None = None,
    rgb_format: str = "mp4",
    crf: int = 0,
    layout: str = "full",
) -> Path:
    """Write one clip folder. rgb (F, H, W, 3) in [0, 1] (or uint8); other shapes as in :class:`Clip`.

    ``meta`` may hold fps (default 16), source, caption and anything else JSON-serialisable;
    norm_centre / norm_scale are computed from the valid pointmaps (depth > 0) when absent.
    ``rgb_format`` is "mp4" or "png" (lossless frames). Non-finite values are refused: mark
    invalid pixels with depth 0 and any finite point instead.

    ``pointmaps=None`` computes them from the float16-rounded depth (:func:`pointmaps_from_depth`).
    ``layout="depth"`` stores no pointmaps.npz (the reader computes them the same way) and needs
    ``pointmaps=None``: given pointmaps could disagree with what the reader computes.
    """
    folder = Path(folder)
    if rgb_format not in ("mp4", "png"):
        raise ValueError(f"rgb_format must be 'mp4' or 'png', got {rgb_format!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "depth" and pointmaps is not None:
        raise ValueError("layout='depth' stores no pointmaps (the reader computes them from depth); pass pointmaps=None")
    rgb = _rgb_to_uint8(_as_numpy(rgb, "rgb", (None, None, 3), folder))
    frames, height, width = rgb.shape[:3]
    depth = _as_numpy(depth, "depth", (height, width), folder)
    intrinsics = _as_numpy(intrinsics, "intrinsics", (3, 3), folder).astype(np.float64)
    world_to_camera = _as_numpy(world_to_camera, "world_to_camera", (4, 4), folder).astype(np.float64)
    arrays = {"depth": depth, "intrinsics": intrinsics, "world_to_camera": world_to_camera}
    if pointmaps is not None:
        pointmaps = arrays["pointmaps"] = _as_numpy(pointmaps, "pointmaps", (height, width, 3), folder)
    counts = {"rgb": frames} | {name: len(array) for name, array in arrays.items()}
    if len(set(counts.values())) != 1:
        raise ClipError(folder, f"frame counts differ: {counts}")
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise ClipError(folder, f"{name} has NaN or infinite values; mark invalid pixels with depth 0 instead")
        if name in ("pointmaps", "depth") and np.abs(array).max(initial=0.0) > FLOAT16_MAX:
            raise ClipError(folder, f"{name} exceed the float16 range ({FLOAT16_MAX}); store them in smaller units")
    depth = depth.astype(np.float16)
    if pointmaps is None:
        world_to_camera_t = torch.from_numpy(world_to_camera)
        pointmaps = pointmaps_from_depth(torch.from_numpy(depth), torch.from_numpy(intrinsics), world_to_camera_t, world_to_camera_t[0]).numpy()
        if not torch.isfinite(torch.from_numpy(pointmaps)).all():
            raise ClipError(folder, f"pointmaps computed from depth exceed the float16 range ({FLOAT16_MAX}); store the scene in smaller units")

    meta = dict(meta or {})
    meta.setdefault("fps", 16.0)
    meta.setdefault("source", "unknown")
    meta.setdefault("caption", "")
    if "norm_centre" not in meta or "norm_scale" not in meta:
        centre, scale = pointmap_normalization(torch.from_numpy(pointmaps).double(), torch.from_numpy(depth > 0))
        meta["norm_centre"], meta["norm_scale"] = centre.tolist(), float(scale)
    meta.update(format_version=FORMAT_VERSION, num_frames=frames, height=height, width=width,
                rgb=VIDEO_NAME if rgb_format == "mp4" else PNG_FOLDER, layout=layout)

    folder.mkdir(parents=True, exist_ok=True)
    if rgb_format == "mp4":
        write_video(folder / VIDEO_NAME, rgb, fps=float(meta["fps"]), crf=crf)
    else:
        (folder / PNG_FOLDER).mkdir(exist_ok=True)
        for index, frame in enumerate(rgb):
            imageio.imwrite(folder / PNG_FOLDER / f"{index:06d}.png", frame)
    if layout == "full":
        np.savez(folder / POINTMAPS_NAME, pointmaps=pointmaps.astype(np.float16))
    # Deflate: 17x smaller on rendered depth, 1.6x with 1 % per-pixel noise, for +0.05 s per 81-frame read
    # (BENCHMARKS.md, "Clip storage"); np.load reads both forms, so clips written before stay readable.
    np.savez_compressed(folder / DEPTH_NAME, depth=depth)
    cameras = {
        "convention": "OpenCV (x right, y down, z forward), pixel centres at integer coordinates",
        "intrinsics": intrinsics.tolist(),
        "world_to_camera": world_to_camera.tolist(),
    }
    (folder / CAMERAS_NAME).write_text(json.dumps(cameras))
    write_meta(folder, meta)
    return folder


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace a text file atomically (a dot-named temporary beside it, then a rename): a killed job never leaves half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_meta(folder: str | Path, meta: dict) -> None:
    """Replace a clip's meta.json atomically (:func:`write_text_atomic`)."""
    write_text_atomic(Path(folder) / META_NAME, json.dumps(meta, indent=1))


# ----------------------------------------------------------------------------- reading


def read_meta(folder: str | Path) -> dict:
    """meta.json of a clip, checked for the fields the loader relies on (cheap: no arrays read)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ClipError(folder, "is not a folder")
    path = folder / META_NAME
    if not path.is_file():
        raise ClipError(folder, f"missing {META_NAME}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipError(folder, f"{META_NAME} is not valid JSON ({error})") from None
    missing = [key for key in ("num_frames", "height", "width", "norm_centre", "norm_scale") if key not in meta]
    if missing:
        raise ClipError(folder, f"{META_NAME} lacks {', '.join(missing)}")
    return meta


def read_video(path: str | Path) -> np.ndarray:
    """Every frame (N, H, W, 3) uint8 of a video file (decord, imageio fallback); ClipError names the problem."""
    path = Path(path)
    _, count = _read_video(path.parent, path, [0])
    return _read_video(path.parent, path, list(range(count)))[0]


def _read_video(folder: Path, path: Path, frames: list[int]) -> tuple[np.ndarray, int]:
    """Frames (len(frames), H, W, 3) uint8 and the video's frame count; decord first, then imageio."""
    if not path.is_file():
        raise ClipError(folder, f"missing {path.name}")
    if path.stat().st_size == 0:
        raise ClipError(folder, f"{path.name} is empty (0 bytes)")
    problems = []
    try:
        import decord

        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        count = len(reader)
        if frames and max(frames) >= count:
            raise ClipError(folder, f"{path.name} has {count} frames, frame {max(frames)} was requested")
        return reader.get_batch(frames).asnumpy(), count
    except ClipError:
        raise
    except Exception as error:  # decord missing or unable to decode: try ffmpeg through imageio
        problems.append(f"decord: {error}")
    try:
        reader = imageio.get_reader(str(path), format="ffmpeg")
        try:
            decoded = [frame for frame in reader]  # the ffmpeg reader's length is unreliable
        finally:
            reader.close()
    except Exception as error:
        problems.append(f"imageio: {error}")
        raise ClipError(folder, f"{path.name} cannot be decoded ({'; '.join(p.splitlines()[0] for p in problems)})") from None
    if not decoded:
        raise ClipError(folder, f"{path.name} holds no frame")
    if frames and max(frames) >= len(decoded):
        raise ClipError(folder, f"{path.name} has {len(decoded)} frames, frame {max(frames)} was requested")
    return np.stack([decoded[index] for index in frames]), len(decoded)


def read_rgb(folder: str | Path, frames: list[int]) -> np.ndarray:
    """Only the RGB frames (len(frames), H, W, 3) uint8 of a clip (no geometry read): for captioning and viewing."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("rgb", VIDEO_NAME) == PNG_FOLDER:
        return _read_pngs(folder, frames)[0]
    return _read_video(folder, folder / VIDEO_NAME, frames)[0]


def _read_pngs(folder: Path, frames: list[int]) -> tuple[np.ndarray, int]:
    """PNG frames rgb/000000.png ... (sorted by name) -> (len(frames), H, W, 3) uint8 and the count."""
    paths = sorted((folder / PNG_FOLDER).glob("*.png"))
    if not paths:
        raise ClipError(folder, f"no PNG frame in {PNG_FOLDER}/")
    if frames and max(frames) >= len(paths):
        raise ClipError(folder, f"{PNG_FOLDER}/ has {len(paths)} frames, frame {max(frames)} was requested")
    try:
        images = [imageio.imread(paths[index]) for index in frames]
    except Exception as error:
        raise ClipError(folder, f"a PNG frame cannot be read ({error})") from None
    images = [image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1) for image in images]
    return np.stack(images), len(paths)


def _read_array(folder: Path, name: str, key: str) -> np.ndarray:
    """One array from an .npz file of the clip."""
    path = folder / name
    if not path.is_file():
        raise ClipError(folder, f"missing {name}")
    try:
        with np.load(path) as archive:
            return archive[key]
    except KeyError:
        raise ClipError(folder, f"{name} has no array named {key!r}") from None
    except Exception as error:
        raise ClipError(folder, f"{name} cannot be read ({error})") from None


def read_clip(folder: str | Path, frames: list[int] | None = None) -> Clip:
    """Read a clip folder (all frames, or the stored frame indices ``frames``), checking every file.

    Raises :class:`ClipError` for a missing file, unreadable JSON/arrays/video, frame counts or
    sizes that disagree between files, and NaN or infinite geometry.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    count = int(meta["num_frames"])
    frames = list(range(count)) if frames is None else [int(index) for index in frames]
    if not frames:
        raise ClipError(folder, "no frame requested")
    if min(frames) < 0 or max(frames) >= count:
        raise ClipError(folder, f"frames {min(frames)}..{max(frames)} requested but meta.json says {count} frames")

    try:
        cameras = json.loads((folder / CAMERAS_NAME).read_text())
        intrinsics = torch.tensor(cameras["intrinsics"], dtype=torch.float64)
        world_to_camera = torch.tensor(cameras["world_to_camera"], dtype=torch.float64)
    except FileNotFoundError:
        raise ClipError(folder, f"missing {CAMERAS_NAME}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ClipError(folder, f"{CAMERAS_NAME} is malformed ({error!r})") from None
    layout = meta.get("layout", "full")
    if layout not in LAYOUTS:
        raise ClipError(folder, f"{META_NAME} names layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    depth = _read_array(folder, DEPTH_NAME, "depth")
    pointmaps = _read_array(folder, POINTMAPS_NAME, "pointmaps") if layout == "full" else None
    if meta.get("rgb", VIDEO_NAME) == PNG_FOLDER:
        rgb, video_count = _read_pngs(folder, frames)
    else:
        rgb, video_count = _read_video(folder, folder / VIDEO_NAME, frames)

    counts = {"meta.json": count, "rgb": video_count, DEPTH_NAME: len(depth),
              "intrinsics": len(intrinsics), "world_to_camera": len(world_to_camera)}
    shapes = {"rgb": tuple(rgb.shape[1:]), DEPTH_NAME: tuple(depth.shape[1:]) + (3,),
              "meta.json": (int(meta["height"]), int(meta["width"]), 3)}
    if pointmaps is not None:
        counts[POINTMAPS_NAME], shapes[POINTMAPS_NAME] = len(pointmaps), tuple(pointmaps.shape[1:])
    if len(set(counts.values())) != 1:
        raise ClipError(folder, f"frame counts differ between files: {counts}")
    if len(set(shapes.values())) != 1:
        raise ClipError(folder, f"frame sizes differ between files: {shapes}")
    if intrinsics.shape[1:] != (3, 3) or world_to_camera.shape[1:] != (4, 4):
        raise ClipError(folder, f"cameras must be (F, 3, 3) and (F, 4, 4), got {tuple(intrinsics.shape)} and {tuple(world_to_camera.shape)}")
    if not (torch.isfinite(intrinsics).all() and torch.isfinite(world_to_camera).all()):
        raise ClipError(folder, "cameras hold NaN or infinite values")

    depth = torch.from_numpy(np.ascontiguousarray(depth[frames]))  # (F, H, W) float16
    if pointmaps is None:  # layout "depth": the same float16 values the full writer stores
        pointmaps = pointmaps_from_depth(depth, intrinsics[frames], world_to_camera[frames], world_to_camera[0])
    else:
        pointmaps = torch.from_numpy(np.ascontiguousarray(pointmaps[frames]))
    # torch converts float16 several times faster than numpy's astype.
    pointmaps, depth = pointmaps.float(), depth.float()
    for name, array in (("pointmaps", pointmaps), ("depth", depth)):
        # A float32 sum of float16-range values cannot overflow, so it is finite iff every value is
        # (one fast reduction instead of a full-size boolean mask).
        if not math.isfinite(float(array.sum())):
            raise ClipError(folder, f"{name} hold NaN or infinite values")
    return Clip(
        name=folder.name,
        rgb=torch.from_numpy(rgb).float() / 255.0,
        pointmaps=pointmaps,
        depth=depth,
        intrinsics=intrinsics[frames],
        world_to_camera=world_to_camera[frames],
        meta=meta,
        frames=frames,
        reference_world_to_camera=world_to_camera[0],
    )
