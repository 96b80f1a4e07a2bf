"""Reading sampler inputs and fitting them to the model: 4k + 1 frames, sides that are multiples of 16.

The documented rule (also in ``one4d/pipeline/README.md``):

* **Frames.** A video or frame folder of N frames is resampled to F = 4k + 1 model frames at evenly
  spaced times: model frame j shows input frame round(j (N - 1) / (F - 1)), so the first and last
  input frames are always kept. ``num_frames`` picks F (it must be 4k + 1); by default F is the
  largest 4k + 1 <= min(N, 81), and at least 5. A single image gives F = ``num_frames`` (default 81).
  Mapping back: input frame i is shown by the nearest model frame round(i (F - 1) / (N - 1)).
* **Size.** With ``height`` and ``width`` given (multiples of 16), frames are scaled to cover that
  size and centre-cropped (no distortion). With neither, the input is scaled to at most ``max_area``
  pixels (default 352 x 624, the training size) and each side rounded to the nearest multiple of 16,
  a plain resize that changes the aspect ratio by at most half a 16-pixel step. With one of them,
  the other follows the input's aspect ratio, rounded to a multiple of 16.

Every problem raises a one-line ValueError naming the input and what to do. What runs but is likely not
what was meant gets one line each in ``Conditions.warnings`` (printed by :func:`print_warnings`, kept in summary.json):
``num_frames`` above a video's frame count (input frames repeat), an input upscaled more than
``MAX_UPSCALE`` times to the model size, a blank prompt.
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import torch.nn.functional as F

from one4d.conditioning import VAE_TEMPORAL_FACTOR, observed_frames
from one4d.data.clip import ClipError, read_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif", ".m4v")
SIZE_MULTIPLE = 16  # VAE x8 then patch x2
MAX_FRAMES = 81  # the training maximum (paper section 4.1)
DEFAULT_MAX_AREA = 352 * 624  # the training resolution
DEFAULT_FPS = 16.0  # Wan's frame rate, for single images and frame folders
MAX_UPSCALE = 2.0  # an input enlarged more than this to the model size is warned about (the model sees a blur)


@dataclass
class InputFrames:
    """Frames read from disk: (N, H, W, 3) uint8, the source path and the frame rate if the file has one."""

    frames: np.ndarray
    path: Path
    fps: float | None = None


@dataclass
class Conditions:
    """What the pipeline receives: observed frames at model size and where they sit among F model frames.

    images (K, H, W, 3) uint8 in the order of ``observed`` (K model frame indices, increasing);
    source_frames (F,): the input frame each model frame stands for; input_to_model (N,): the
    model frame nearest to each input frame (how outputs map back to the input).
    """

    task: str
    images: np.ndarray
    observed: list[int]
    num_frames: int
    height: int
    width: int
    fps: float
    source_frames: list[int]
    input_to_model: list[int]
    input_frames: int
    input_size: tuple[int, int]
    resize: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading


def read_input(path: str | Path) -> InputFrames:
    """An image file, a video file or a folder of image frames (sorted by name) -> uint8 frames."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"input {path} does not exist")
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            raise ValueError(f"input folder {path} holds no image frames ({', '.join(IMAGE_SUFFIXES)})")
        images = [_read_image(frame) for frame in frames]
        shapes = {image.shape for image in images}
        if len(shapes) != 1:
            raise ValueError(f"input folder {path}: frames differ in size {sorted(shapes)}")
        return InputFrames(np.stack(images), path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _read_video_file(path)
    return InputFrames(_read_image(path)[None], path)


def _read_image(path: Path) -> np.ndarray:
    """One image as (H, W, 3) uint8; grey and alpha are converted, 16-bit is scaled."""
    try:
        image = np.asarray(imageio.imread(path))
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"input {path} cannot be read as an image ({first_line})") from None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"input {path} is not an RGB image (array of shape {image.shape})")
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round()
    elif image.dtype.kind == "f":
        image = image.clip(0, 1) * 255.0
    return np.ascontiguousarray(image.astype(np.uint8))


def _read_video_file(path: Path) -> InputFrames:
    """All frames of a video through the data package's reader (decord, imageio fallback)."""
    try:
        with _native_stderr_silenced():  # decord and ffmpeg print their own lines for a corrupt file
            frames = read_video(path)
    except ClipError as error:
        raise ValueError(f"input {path}: {error.problem}") from None
    return InputFrames(frames, path, _video_fps(path))


@contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block, so a bad input gives exactly one line of error."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _video_fps(path: Path) -> float | None:
    try:
        reader = imageio.get_reader(str(path), format="ffmpeg")
        try:
            fps = reader.get_meta_data().get("fps")
        finally:
            reader.close()
        return float(fps) if fps and math.isfinite(float(fps)) and fps > 0 else None
    except Exception:
        return None


# ----------------------------------------------------------------------------- the fitting rule


def check_frame_count(num_frames: int) -> int:
    """A model frame count must be 4k + 1 (the Wan VAE keeps frame 0 alone, then 4 frames per latent)."""
    if num_frames < 1 or (num_frames - 1) % VAE_TEMPORAL_FACTOR:
        raise ValueError(f"num_frames must be 4k + 1 (e.g. 5, 49, 81), got {num_frames}")
    return num_frames


def default_frame_count(available: int, max_frames: int = MAX_FRAMES) -> int:
    """The largest 4k + 1 <= min(available, max_frames), at least 5 (the smallest clip with a sparse task)."""
    limit = min(available, max_frames)
    return max(5, (limit - 1) // VAE_TEMPORAL_FACTOR * VAE_TEMPORAL_FACTOR + 1)


def resample_indices(input_frames: int, num_frames: int) -> list[int]:
    """Model frame j shows input frame round(j (N - 1) / (F - 1)) (halves round up): first and last kept."""
    if num_frames == 1 or input_frames == 1:
        return [0] * num_frames
    return [int(math.floor(j * (input_frames - 1) / (num_frames - 1) + 0.5)) for j in range(num_frames)]


def nearest_model_frames(input_frames: int, num_frames: int) -> list[int]:
    """Input frame i maps back to model frame round(i (F - 1) / (N - 1))."""
    if input_frames == 1:
        return [0]
    return [int(math.floor(i * (num_frames - 1) / (input_frames - 1) + 0.5)) for i in range(input_frames)]


def model_size(height: int, width: int, target_height: int | None, target_width: int | None, max_area: int = DEFAULT_MAX_AREA) -> tuple[int, int]:
    """The model's (H, W) for an input of (height, width), following the module's rule."""
    for name, value in (("height", target_height), ("width", target_width)):
        if value is not None and (value < SIZE_MULTIPLE or value % SIZE_MULTIPLE):
            raise ValueError(f"{name} must be a positive multiple of {SIZE_MULTIPLE}, got {value}")
    if target_height is not None and target_width is not None:
        return target_height, target_width
    if target_height is not None:
        return target_height, _round_to_multiple(target_height * width / height)
    if target_width is not None:
        return _round_to_multiple(target_width * height / width), target_width
    if max_area < SIZE_MULTIPLE**2:
        raise ValueError(f"max_area must be at least {SIZE_MULTIPLE**2} pixels, got {max_area}")
    scale = min(1.0, math.sqrt(max_area / (height * width)))
    return _round_to_multiple(height * scale), _round_to_multiple(width * scale)


def _round_to_multiple(value: float) -> int:
    return max(SIZE_MULTIPLE, int(math.floor(value / SIZE_MULTIPLE + 0.5)) * SIZE_MULTIPLE)


def resize_frames(frames: np.ndarray, height: int, width: int, crop: bool) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, height, width, 3) uint8: antialiased bilinear; ``crop``: cover then centre-crop."""
    source_height, source_width = frames.shape[1:3]
    if (source_height, source_width) == (height, width):
        return frames
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (N, 3, h, w)
    if crop:
        scale = max(height / source_height, width / source_width)
        size = (max(height, round(source_height * scale)), max(width, round(source_width * scale)))
    else:
        size = (height, width)
    video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[:, :, top : top + height, left : left + width]  # (N, 3, height, width)
    return video.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def prepare_conditions(
    task: str,
    source: InputFrames,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    max_area: int = DEFAULT_MAX_AREA,
    sparsity: float | None = 0.1,
    frames: list[int] | None = None,
    prompt: str | None = None,
) -> Conditions:
    """Fit an input to the model for a task; ``frames`` (sparse only): explicit INPUT frame indices to observe.

    ``prompt``, when given, is only checked (a blank one is warned about); see the module docstring for the warnings.
    """
    count = len(source.frames)
    if task == "single":
        if count != 1:
            raise ValueError(f"task=single takes one image, but {source.path} has {count} frames; use task=sparse or task=full")
        num_frames = check_frame_count(num_frames) if num_frames is not None else MAX_FRAMES
    elif task in ("sparse", "full"):
        if count < 2:
            raise ValueError(f"task={task} needs a video or frame folder with at least 2 frames, {source.path} has {count}")
        num_frames = check_frame_count(num_frames) if num_frames is not None else default_frame_count(count)
        if num_frames < 5 and task == "sparse":
            raise ValueError(f"task=sparse needs num_frames >= 5, got {num_frames}")
    else:
        raise ValueError(f"unknown task {task!r}; expected single, sparse or full")

    model_height, model_width = model_size(*source.frames.shape[1:3], height, width, max_area)
    crop = height is not None and width is not None
    source_frames = resample_indices(count, num_frames)
    input_to_model = nearest_model_frames(count, num_frames)

    if task == "single":
        observed, picked = [0], [0]
    elif task == "full":
        observed, picked = list(range(num_frames)), source_frames
    elif frames is not None:
        observed, picked = _explicit_sparse(frames, count, input_to_model, source.path)
        source_frames = list(source_frames)
        for model_frame, input_frame in zip(observed, picked):
            source_frames[model_frame] = input_frame  # an observed model frame shows exactly the chosen input frame
    else:
        observed = observed_frames("sparse", num_frames, sparsity=sparsity)
        picked = [source_frames[j] for j in observed]

    images = resize_frames(source.frames[picked], model_height, model_width, crop)  # (K, H, W, 3)
    notes = input_warnings(task, source, num_frames, source_frames, (model_height, model_width), crop, prompt)
    return Conditions(
        task=task, images=images, observed=observed, num_frames=num_frames, height=model_height, width=model_width,
        fps=source.fps or DEFAULT_FPS, source_frames=source_frames, input_to_model=input_to_model,
        input_frames=count, input_size=tuple(int(s) for s in source.frames.shape[1:3]),
        resize={"mode": "cover+centre-crop" if crop else "resize", "from": list(source.frames.shape[1:3]), "to": [model_height, model_width]},
        warnings=notes,
    )


def print_warnings(conditions: Conditions) -> None:
    """The input warnings, one line each on stderr (the sampler calls this once every input check has passed)."""
    for note in conditions.warnings:
        print(f"warning: {note}", file=sys.stderr, flush=True)


def input_warnings(task: str, source: InputFrames, num_frames: int, source_frames: list[int], size: tuple[int, int],
                   crop: bool, prompt: str | None) -> list[str]:
    """One line for each thing that runs but is likely not what was meant (module docstring)."""
    notes = []
    count = len(source.frames)
    repeated = num_frames - len(set(source_frames))
    if task != "single" and repeated > 0:
        fewer = default_frame_count(count)
        remedy = f"num_frames={fewer} uses each at most once" if fewer <= count else "a longer video avoids it"
        notes.append(f"num_frames={num_frames} but {source.path} has {count} frames: {repeated} of the {num_frames} model frames "
                     f"repeat an input frame (a slowed-down clip); {remedy}")
    height, width = source.frames.shape[1:3]
    scale = (max if crop else min)(size[0] / height, size[1] / width)  # the enlargement of the picture's content
    if scale > MAX_UPSCALE:
        notes.append(f"{source.path} is {height}x{width} pixels, enlarged {scale:.1f}x to the model's {size[0]}x{size[1]}: "
                     "the model sees a blur of it; give an input near the model size")
    if prompt is not None and not prompt.strip():
        notes.append('the prompt is blank: the model gets no description of the scene (One4D was trained with captions); '
                     'give prompt="..."')
    return notes


def _explicit_sparse(frames: list[int], count: int, input_to_model: list[int], path: Path) -> tuple[list[int], list[int]]:
    """Input frame indices -> (model frames, input frames), one input frame per model frame (the first listed wins)."""
    bad = [index for index in frames if not 0 <= int(index) < count]
    if bad:
        raise ValueError(f"frames {bad} are outside {path}'s {count} frames (0..{count - 1})")
    chosen: dict[int, int] = {}
    for index in sorted(int(i) for i in frames):
        chosen.setdefault(input_to_model[index], index)
    if len(chosen) < 2:
        raise ValueError(f"task=sparse needs at least 2 distinct observed frames, got frames={list(frames)} (they map to model frames {sorted(chosen)})")
    observed = sorted(chosen)
    return observed, [chosen[j] for j in observed]
