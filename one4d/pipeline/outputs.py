"""The 4D output folder, written to a temporary folder and renamed into place only when complete.

    out/rgb.mp4          generated RGB (H.264 yuv420p, plays in browsers; GIF if ffmpeg is missing)
    out/xyz.mp4          pointmaps as colours: normalised x, y, z in [-1, 1] -> R, G, B
    out/depth.mp4        inverse depth, turbo colour map, one range for the whole clip (black = invalid)
    out/pointmaps.npz    pointmaps (F, H, W, 3) float32 in frame 0's camera, normalized_pointmaps, rgb uint8,
                         observed (F,), source_frames (F,), input_to_model (N,), norm_centre, norm_scale,
                         frame_rate (of the trajectory's stamps, one4d.postopt.io)
    out/cameras.json, out/trajectory.txt (TUM), out/depth.npz   from ``one4d.postopt.save_cameras``
    out/ply/frame_000000.ply ...   one coloured point cloud per frame
    out/summary.json     settings, the model as loaded, shapes, frame rate, input warnings, points behind
                         their camera, unreliable frames, files, timings; written last

A folder that has ``summary.json`` is complete. An existing ``out`` is replaced only if it is itself a
One4D output (has summary.json) or empty; anything else is refused so that no user data is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from one4d.data.clip import write_video

SUMMARY_NAME = "summary.json"

# Turbo colour map (Mikhailov 2019, Google), polynomial fit of the published table: no matplotlib needed.
_TURBO_R = (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943)
_TURBO_G = (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604)
_TURBO_B = (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973)


# ----------------------------------------------------------------------------- the folder


def prepare_output_folder(out: str | Path) -> Path:
    """Check that ``out`` can be (re)placed and create the temporary folder beside it; ValueError if not."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / SUMMARY_NAME).is_file():
        raise ValueError(f"output folder {out} is not empty and is not a One4D output; choose another out=")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # host and process: unique among the processes of a run spread over nodes that share a file system
        temporary = out.parent / f".{out.name}.partial-{socket.gethostname()}-{os.getpid()}"
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir()
    except OSError as error:
        raise ValueError(f"output folder {out} cannot be written ({error.strerror or error})") from None
    return temporary


def publish(temporary: Path, out: str | Path) -> Path:
    """Rename the completed temporary folder to ``out`` (replacing a previous One4D output)."""
    out = Path(out).absolute()
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    temporary.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def discard(temporary: Path | None) -> None:
    """Remove an unfinished temporary folder."""
    if temporary is not None and temporary.exists():
        shutil.rmtree(temporary, ignore_errors=True)


# ----------------------------------------------------------------------------- pictures


def ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).is_file()
    except Exception:
        return False


def write_movie(path: Path, frames: np.ndarray, fps: float) -> Path:
    """uint8 frames (F, H, W, 3) as a playable H.264 .mp4 (yuv420p); a .gif when ffmpeg is missing.

    The clip format's writer in 4:2:0 rather than its lossless 4:4:4: these files are for people, and
    browsers and most players do not decode 4:4:4 H.264.
    """
    if not ffmpeg_available():
        path = path.with_suffix(".gif")
        print(f"ffmpeg is not available: writing {path.name} instead of an .mp4")
        imageio.mimsave(path, list(frames), duration=1000.0 / fps, loop=0)
        return path
    write_video(path, frames, fps, crf=18, pixel_format="yuv420p")
    return path


def turbo(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) with the turbo colour map."""
    x = np.clip(values, 0.0, 1.0)[..., None] ** np.arange(6)  # (..., 6) powers
    rgb = np.stack([x @ np.array(c) for c in (_TURBO_R, _TURBO_G, _TURBO_B)], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """Depth (F, H, W), 0 = invalid -> (F, H, W, 3) uint8: inverse depth over the clip's 2-98 % range."""
    valid = depth > 0
    colours = np.zeros((*depth.shape, 3), dtype=np.uint8)
    if not valid.any():
        return colours
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    low, high = np.percentile(inverse[valid], [2, 98])
    scaled = (inverse - low) / max(high - low, 1e-12)
    colours[valid] = turbo(scaled[valid])
    return colours


def pointmap_colours(normalized: np.ndarray) -> np.ndarray:
    """Normalised pointmaps (F, H, W, 3) in [-1, 1] -> uint8 colours (x, y, z -> R, G, B), as the paper shows them."""
    return ((np.clip(normalized, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] -> uint8."""
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def write_ply(path: Path, points: np.ndarray, colours: np.ndarray) -> None:
    """A binary little-endian PLY of points (N, 3) float32 with uint8 colours (N, 3)."""
    vertices = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for index, axis in enumerate("xyz"):
        vertices[axis] = points[:, index]
    for index, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = colours[:, index]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(vertices.tobytes())


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) and colours (N, 3) of a PLY written by :func:`write_ply`."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    count = int(next(line for line in data[:end].decode().splitlines() if line.startswith("element vertex")).split()[-1])
    vertices = np.frombuffer(data[end:], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")], count=count)
    return np.stack([vertices[a] for a in "xyz"], -1), np.stack([vertices[c] for c in "rgb"], -1)


# ----------------------------------------------------------------------------- everything


# Model keys of the sample config that the loaded weights decide (a checkpoint's architecture.json wins over them).
LOADED_MODEL_KEYS = ("architecture", "lora_rank", "lora_alpha", "link_layers", "num_links")


def loaded_model(model: dict | None, settings: dict) -> dict | None:
    """The model as loaded (``One4DPipelineOutput.model``, the wrapper's architecture_config) with its link count;
    the same keys in ``settings["model"]`` are replaced by it, so the summary never shows config defaults that lost."""
    if not model:
        return None
    model = dict(model, num_links=len(model["link_layers"]) if "link_layers" in model else None)
    if isinstance(settings.get("model"), dict):
        settings["model"].update({key: model.get(key) for key in LOADED_MODEL_KEYS})
    return model


def write_outputs(folder: Path, output, conditions, settings: dict, ply_stride: int = 1, timings: dict | None = None) -> dict:
    """Write one sample (a ``One4DPipelineOutput`` with B = 1, output_type "np") into ``folder``; returns the summary."""
    from one4d.postopt import save_cameras
    from one4d.postopt.io import sampler_frame_rate

    folder = Path(folder)
    rgb = to_uint8(output.rgb[0])  # (F, H, W, 3)
    pointmaps = output.pointmaps[0].astype(np.float32)  # (F, H, W, 3)
    normalized = output.normalized_pointmaps[0]
    fps = float(conditions.fps)
    frame_rate = sampler_frame_rate(fps, len(pointmaps), conditions.input_frames)  # the trajectory's (one4d.postopt.io)
    model = loaded_model(getattr(output, "model", None), settings)
    files = {
        "rgb": write_movie(folder / "rgb.mp4", rgb, fps),
        "xyz": write_movie(folder / "xyz.mp4", pointmap_colours(normalized), fps),
    }
    np.savez(
        folder / "pointmaps.npz", pointmaps=pointmaps, normalized_pointmaps=normalized.astype(np.float16), rgb=rgb,
        observed=output.observed[0], source_frames=np.asarray(conditions.source_frames),
        input_to_model=np.asarray(conditions.input_to_model),
        norm_centre=np.asarray(settings.get("pointmap_centre", (0.0, 0.0, 0.0)), dtype=np.float32),
        norm_scale=np.float32(settings.get("pointmap_scale", 1.0)), frame_rate=np.float64(frame_rate),
    )
    files["pointmaps"] = folder / "pointmaps.npz"
    camera_summary = None
    if output.cameras is not None:
        cameras = output.cameras[0]
        files.update(save_cameras(cameras, folder, frame_rate=frame_rate))
        files["depth_video"] = write_movie(folder / "depth.mp4", colorize_depth(output.depth[0]), fps)
        valid = int(cameras.valid.sum())
        camera_summary = {"losses": cameras.losses, "warnings": cameras.warnings, "points_behind_camera": cameras.num_behind,
                          "points_behind_fraction": cameras.num_behind / max(valid, 1), "unreliable_frames": cameras.unreliable}
    if ply_stride > 0:
        (folder / "ply").mkdir()
        for index in range(len(pointmaps)):
            points = pointmaps[index, ::ply_stride, ::ply_stride].reshape(-1, 3)
            write_ply(folder / "ply" / f"frame_{index:06d}.ply", points, rgb[index, ::ply_stride, ::ply_stride].reshape(-1, 3))
        files["ply"] = folder / "ply"

    summary = {
        "settings": settings,
        "model": model,
        "task": conditions.task,
        "num_frames": conditions.num_frames,
        "height": conditions.height,
        "width": conditions.width,
        "fps": fps,
        "frame_rate": frame_rate,
        "warnings": list(getattr(conditions, "warnings", [])),
        "observed": conditions.observed,
        "input_frames": conditions.input_frames,
        "input_size": list(conditions.input_size),
        "resize": conditions.resize,
        "source_frames": conditions.source_frames,
        "input_to_model": conditions.input_to_model,
        "cameras": camera_summary,
        "timings_s": timings or {},
        "files": {key: str(path.relative_to(folder)) for key, path in files.items()},
    }
    (folder / SUMMARY_NAME).write_text(json.dumps(summary, indent=1) + "\n")
    return summary
