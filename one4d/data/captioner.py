"""Caption converted clips with a local vision-language model (issue 14 item 5; the paper captions each ~81-frame
segment with Gemini-2.0-Flash, One4D "Datasets").

The third caption source, after the dataset's own text and a user caption file (``one4d.data.captions``), run
over an existing clip root so captioning can be redone without re-converting:

    python scripts/caption_clips.py clips=data/clips/bedlam captioner.model=/models/Qwen2.5-VL-7B-Instruct

Any transformers image-text-to-text model in a local folder works (``AutoProcessor`` +
``AutoModelForImageTextToText``, ``local_files_only=True``: never a hub download) whose processor has a chat
template (Qwen2.5-VL, Qwen2-VL, LLaVA, Idefics3, SmolVLM ...). A few frames spread over the clip are given as
images of one user message with the prompt; generation is greedy, so a rerun gives the same captions. Each
caption goes into the clip's meta.json (atomic rename) with ``caption_source``; ``index.jsonl`` of the root
(the conversion's index, keyed by ``clip``) is brought in line with the clips' meta.json at the end. Clips that
have a caption are skipped unless ``overwrite``: a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from one4d.data.clip import META_NAME, ClipError, read_meta, read_rgb, write_meta, write_text_atomic

INDEX_NAME = "index.jsonl"
DEFAULT_PROMPT = (
    "These are frames of one video, in order. Describe the video in one or two sentences: the scene, "
    "the people, animals or objects and how they move, and how the camera moves."
)


def frame_indices(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over a clip, first and last included (all frames if it has fewer)."""
    if num_frames <= count:
        return list(range(num_frames))
    return [int(index) for index in np.linspace(0, num_frames - 1, count).round()]


def _first_line(error: BaseException) -> str:
    """The first non-empty line of an error message (transformers' ImportErrors start with a newline)."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def check_model_folder(model: str | Path) -> Path:
    """The model folder, or one line saying it is not one (checked before any clip is read)."""
    path = Path(str(model))
    if not (path / "config.json").is_file():
        raise ValueError(f"captioner.model={model} is not a local model folder (no config.json there); download the model once "
                         "(e.g. huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct --local-dir DIR) and pass captioner.model=DIR")
    return path


class VLMCaptioner:
    """A local image-text-to-text model that writes one caption per clip from a few of its frames."""

    def __init__(self, model: str | Path, prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 96,
                 device: str = "auto", dtype: str = "auto"):
        path = check_model_folder(model)
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from one4d.pipeline.cli import resolve_device
        from one4d.storage import torch_dtype

        self.device = resolve_device(device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        try:
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=torch_dtype(dtype))
        except (OSError, KeyError) as error:  # not a processor / image-text-to-text folder: transformers says which file
            raise ValueError(f"captioner.model={model} cannot be loaded as an image-text-to-text model ({_first_line(error)})") from None
        except ImportError as error:  # e.g. Qwen2-VL's video processor needs torchvision, which the project does not install
            raise ValueError(f"captioner.model={model} needs a package that is not installed: {_first_line(error)} "
                             "(torchvision: install the build matching your torch)") from None
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"captioner.model={model} has no chat template (chat_template.jinja); use an instruction-tuned model folder")
        self.model.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"  # decoder-only batched generation continues after the prompt
        self.prompt, self.max_new_tokens = prompt, int(max_new_tokens)
        self.name = path.name

    def caption(self, clips: list[list[np.ndarray]]) -> list[str]:
        """One caption for each clip, given as a list of frames (H, W, 3) uint8; one batched generate call."""
        from PIL import Image

        texts, images = [], []
        for frames in clips:
            content = [{"type": "image"} for _ in frames] + [{"type": "text", "text": self.prompt}]
            texts.append(self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True))
            images += [Image.fromarray(frame) for frame in frames]
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device, dtype=self.model.dtype)  # floating tensors (pixels) in the model's dtype
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]  # (B, generated)
        return [text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]


@dataclass
class CaptionReport:
    """What a captioning run did."""

    captioned: list[str] = field(default_factory=list)
    already_captioned: int = 0
    bad_clips: dict[str, str] = field(default_factory=dict)  # clip name -> problem
    index_lines_updated: int = 0
    seconds: float = 0.0  # captioning and writing, after the model load

    def summary(self) -> str:
        rate = len(self.captioned) / self.seconds if self.seconds > 0 else 0.0
        line = (f"captioned {len(self.captioned)} clips ({rate:.2f} clips/s), {self.already_captioned} had a caption already, "
                f"{len(self.bad_clips)} unreadable, {self.index_lines_updated} index lines updated")
        return "\n".join([line] + [f"  skipped {name}: {problem}" for name, problem in sorted(self.bad_clips.items())])


def clip_folders(root: str | Path) -> list[Path]:
    """Clip folders of a clip root (sub-folders holding meta.json; hidden ones are unfinished conversions)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"clips={root} is not a folder; pass the clip root a conversion wrote (scripts/prepare_data.py out=...)")
    folders = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".") and (path / META_NAME).is_file())
    if not folders:
        raise ValueError(f"clips={root} holds no clip folder (sub-folders with {META_NAME})")
    return folders


def caption_root(root: str | Path, make_captioner, frames: int = 4, batch_size: int = 4, overwrite: bool = False,
                 limit: int | None = None, log=print) -> CaptionReport:
    """Caption every clip of ``root`` that has no caption (all with ``overwrite``), then update index.jsonl.

    ``make_captioner()`` builds the :class:`VLMCaptioner` (or anything with ``.caption`` and ``.name``); it is
    called only when some clip needs a caption, so a finished root costs no model load.
    """
    if frames < 1 or batch_size < 1 or (limit is not None and limit < 1):
        raise ValueError(f"captioner.frames, captioner.batch_size and limit must be at least 1, got {frames}, {batch_size} and {limit}")
    report = CaptionReport()
    todo = []
    for folder in clip_folders(root):
        try:
            meta = read_meta(folder)
        except ClipError as error:
            report.bad_clips[folder.name] = error.problem
            continue
        if str(meta.get("caption", "")).strip() and not overwrite:
            report.already_captioned += 1
        else:
            todo.append((folder, meta))
    todo = todo[:limit] if limit is not None else todo
    captioner = make_captioner() if todo else None
    start = time.perf_counter()  # the rate counts captioning, not the model load
    for first in range(0, len(todo), batch_size):
        batch, clips = [], []
        for folder, meta in todo[first : first + batch_size]:
            try:
                clips.append(list(read_rgb(folder, frame_indices(int(meta["num_frames"]), frames))))
                batch.append((folder, meta))
            except ClipError as error:
                report.bad_clips[folder.name] = error.problem
        if not batch:
            continue
        for (folder, meta), caption in zip(batch, captioner.caption(clips)):
            meta.update(caption=caption, caption_source=f"vlm:{captioner.name}")
            write_meta(folder, meta)
            report.captioned.append(folder.name)
        done = first + len(todo[first : first + batch_size])
        elapsed = time.perf_counter() - start
        log(f"captioned {done}/{len(todo)} clips ({done / elapsed:.2f} clips/s)")
    report.index_lines_updated = sync_index(root)
    report.seconds = time.perf_counter() - start
    return report


def sync_index(root: str | Path) -> int:
    """Copy each clip's meta.json caption into the root's index.jsonl (lines keyed by ``clip``); returns lines changed.

    Rewritten once at the end of a run (temporary file + rename) from the clips' meta.json, so an index left
    behind by a killed run is repaired by the next one.
    """
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        return 0
    lines, changed = [], 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path} line {number} is not valid JSON; rerun the conversion to rewrite the index") from None
        try:
            caption = read_meta(Path(root) / str(entry["clip"])).get("caption", "") if entry.get("clip") else None
        except ClipError:  # a clip removed or broken since the conversion: its line stays as it was
            caption = None
        if caption is not None and entry.get("caption") != caption:
            entry["caption"], changed = caption, changed + 1
        lines.append(json.dumps(entry))
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return changed
