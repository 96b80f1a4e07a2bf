"""The model as an evaluation predictor (``scripts/eval.py mode=model``).

A benchmark sequence of N frames goes through the full-video task (or the sparse task with the
protocol's observed frames) in windows of at most ``num_frames`` model frames. Each window is resampled
to the smallest 4k + 1 model frames that covers it (no input frame dropped), resized to the model's size,
sampled, and mapped back to its input frames. The windows' pointmaps are merged into one trajectory by
Sim(3) on the shared frames (:func:`one4d.postopt.recover_cameras_windowed`), which also gives depth;
depth is resized to the ground truth's resolution by the metrics.

Windows start on observed frames (:func:`observed_windows`): training always observes a clip's first
frame (every task of :func:`one4d.conditioning.observed_frames` holds frame 0), so a window whose first
frame is unobserved (Bonn at sparsity 0.03 with fixed windows: observed [0, 55, 109], the second window
[65, 110) sees only its last frame) is a condition the model never saw. Consecutive windows therefore
share at least ``overlap`` frames, more where the observed frames fall earlier.

Prompts (issue 13): one per sequence, from ``prompts`` (a JSONL file of ``{"sequence": name, "prompt": text}``
lines, or any mapping name -> prompt), else the fixed ``prompt``; the negative prompt defaults to Wan's
(:data:`one4d.pipeline.pipeline.WAN_NEGATIVE_PROMPT`). With the empty prompt and the empty negative prompt
the conditional and unconditional passes are the same input and classifier-free guidance changes nothing.
The data pipeline has no captioner yet: one plugs in as ``prompts`` (a mapping, or the JSONL file it writes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from one4d.conditioning import UNOBSERVED_FILL, VAE_TEMPORAL_FACTOR
from one4d.eval.datasets import EvalSequence
from one4d.eval.runner import Prediction
from one4d.postopt import recover_cameras, recover_cameras_windowed

from .inputs import check_frame_count, model_size, nearest_model_frames, resample_indices, resize_frames
from .loading import load_pipeline
from .pipeline import WAN_NEGATIVE_PROMPT

logger = logging.getLogger(__name__)


def covering_frame_count(input_frames: int) -> int:
    """The smallest 4k + 1 >= the window's input frames (at least 5)."""
    return max(5, -(-(input_frames - 1) // VAE_TEMPORAL_FACTOR) * VAE_TEMPORAL_FACTOR + 1)


def observed_windows(total: int, observed, window: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) input-frame windows of at most ``window`` frames covering ``total``, each starting on an
    observed frame and sharing at least ``overlap`` frames with the previous one.

    The first window starts at frame 0 (every evaluation protocol observes it); each next one at the LAST
    observed frame s with previous start < s <= previous end - overlap (the fewest windows; with every
    frame observed this is :func:`one4d.postopt.split_windows`). A ValueError when no observed frame lies
    there (observed frames more than ``window - overlap`` apart), naming the fix.
    """
    if total <= window:
        return [(0, total)]
    if not 1 <= overlap < window:
        raise ValueError(f"overlap must be in [1, num_frames) = [1, {window}), got {overlap}")
    observed = sorted({int(i) for i in observed})
    windows = [(0, window)]
    while windows[-1][1] < total:
        start, end = windows[-1]
        candidates = [i for i in observed if start < i <= end - overlap]
        if not candidates:
            raise ValueError(
                f"no observed frame in {start + 1}..{end - overlap} to start the window after [{start}, {end}) on "
                f"(observed: {observed}): observed frames more than num_frames - overlap = {window - overlap} apart; "
                "use a larger sparsity ratio or model_predictor.num_frames, or a smaller model_predictor.overlap")
        start = candidates[-1]
        windows.append((start, min(start + window, total)))
    return windows


def load_prompts(path: str | Path) -> dict[str, str]:
    """A captions file: JSONL lines ``{"sequence": name, "prompt": text}`` (blank lines skipped) -> {name: text}.
    A line that is not such an object, or a sequence given twice, is a ValueError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model_predictor.prompts={path}: no such file (JSONL lines {{\"sequence\": name, \"prompt\": text}})")
    prompts = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not (isinstance(entry, dict) and isinstance(entry.get("sequence"), str) and isinstance(entry.get("prompt"), str)):
            raise ValueError(f"{path}:{number}: expected {{\"sequence\": name, \"prompt\": text}}, got {line.strip()[:120]}")
        if entry["sequence"] in prompts:
            raise ValueError(f"{path}:{number}: sequence {entry['sequence']!r} is given twice")
        prompts[entry["sequence"]] = entry["prompt"]
    return prompts


class ModelPredictor:
    """``(EvalSequence, observed input frames) -> Prediction`` by sampling One4D and post-optimising.

    ``prompt``: the fixed prompt; ``prompts``: per-sequence prompts (a JSONL path, see :func:`load_prompts`,
    or a mapping), the fixed prompt standing in for a sequence they miss (:meth:`check_prompts` says so
    once, with the count); ``negative_prompt``: None = Wan's standard one. ``guidance_scale`` 1 runs no
    unconditional pass (the pipeline skips it).
    """

    def __init__(self, pipeline, num_frames: int = 81, height: int | None = None, width: int | None = None,
                 overlap: int = 16, num_inference_steps: int = 50, guidance_scale: float = 6.0, prompt: str = "",
                 seed: int = 0, postopt_kwargs: dict | None = None, negative_prompt: str | None = None,
                 prompts: str | Path | Mapping | None = None):
        self.pipeline, self.num_frames = pipeline, check_frame_count(num_frames)
        self.height, self.width, self.overlap = height, width, overlap
        self.steps, self.guidance_scale, self.prompt, self.seed = num_inference_steps, guidance_scale, prompt, seed
        self.negative_prompt = WAN_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
        self.postopt_kwargs = postopt_kwargs or {}
        if prompts is None:
            self.prompts, self.prompts_source = {}, None
        elif isinstance(prompts, Mapping):
            self.prompts, self.prompts_source = dict(prompts), "the prompts mapping"
        else:
            self.prompts, self.prompts_source = load_prompts(prompts), Path(prompts).name
        self._reported = False

    def prompt_for(self, name: str) -> str:
        """The sequence's prompt: its entry in ``prompts``, else the fixed prompt (said once per run: by
        :meth:`check_prompts` with the count when the driver calls it first, else at the first miss)."""
        if self.prompts_source and name not in self.prompts and not self._reported:
            self._reported = True
            logger.warning("%s has no prompt for sequence %s: it and any other sequence it misses use the fixed prompt %r",
                           self.prompts_source, name, self.prompt)
        return self.prompts.get(name, self.prompt)

    def check_prompts(self, names: Iterable[str]) -> list[str]:
        """The sequences ``prompts`` has no prompt for; warns once (the first call that finds some) with the count."""
        names = list(names)
        missing = [name for name in names if name not in self.prompts] if self.prompts_source else []
        if missing and not self._reported:
            self._reported = True
            logger.warning("%s has no prompt for %d of %d sequences: they use the fixed prompt %r (%s)", self.prompts_source,
                           len(missing), len(names), self.prompt, ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        return missing

    def __call__(self, sequence: EvalSequence, observed) -> Prediction:
        total = sequence.num_frames
        observed = sorted({int(i) for i in observed})
        height, width = model_size(*sequence.frames.shape[1:3], self.height, self.width)
        frames = resize_frames(sequence.frames, height, width, crop=False)  # (N, h, w, 3) uint8
        windows = observed_windows(total, observed, self.num_frames, self.overlap)
        prompt = self.prompt_for(sequence.name)
        pointmaps = [self._window(sequence.name, frames[start:end], [i - start for i in observed if start <= i < end], prompt)
                     for start, end in windows]  # each (end - start, h, w, 3)
        if len(pointmaps) == 1:
            result = recover_cameras(pointmaps[0], **self.postopt_kwargs)
        else:
            overlaps = [previous[1] - current[0] for previous, current in zip(windows, windows[1:])]
            result = recover_cameras_windowed(pointmaps, overlap=overlaps, **self.postopt_kwargs)
        return Prediction(depth=result.depth.float().cpu().numpy(), camera_to_world=result.camera_to_world.cpu().numpy())

    def _window(self, name: str, frames: np.ndarray, observed: list[int], prompt: str) -> torch.Tensor:
        """Sample one window; pointmaps (L, h, w, 3) for its L input frames, in the window's own frame 0 camera."""
        if not observed:
            raise ValueError(f"sequence {name}: a window of {len(frames)} frames has no observed frame; use a larger sparsity ratio or window")
        count = covering_frame_count(len(frames))
        to_input = resample_indices(len(frames), count)  # model frame -> input frame
        to_model = nearest_model_frames(len(frames), count)  # input frame -> model frame
        observed_model = sorted({to_model[i] for i in observed})
        images = frames[[to_input[j] for j in observed_model]]  # (K, h, w, 3)
        output = self.pipeline(
            images, observed_model, count, prompt=prompt, negative_prompt=self.negative_prompt, num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale, generator=torch.Generator().manual_seed(self.seed),
            output_type="pt", recover_cameras=False, progress=False,
        )
        return output.pointmaps[0][to_model]  # (L, h, w, 3)


def build_eval_predictor(checkpoint: str | None = None, preset: str = "wan2.1-fun-14b-inp", device: str = "auto",
                         components: str = "tiny", transformer: str | None = None, dtype: str = "bfloat16",
                         num_frames: int = 81, height: int | None = None, width: int | None = None, overlap: int = 16,
                         num_inference_steps: int = 50, guidance_scale: float = 6.0, seed: int = 0,
                         encoder_dtype: str | None = None, condition_fill: float = UNOBSERVED_FILL,
                         transformer_from_components: bool = False, base_storage_dtype: str | None = None,
                         prompt: str = "", prompts: str | None = None, negative_prompt: str | None = None) -> ModelPredictor:
    """Load the pipeline from local paths (see :func:`load_pipeline`, whose options these are, as in sampling) and
    wrap it as an eval predictor; ``base_storage_dtype`` stores the frozen base in fp8 (``one4d.storage``).
    ``prompt`` / ``prompts`` / ``negative_prompt``: see :class:`ModelPredictor` (a bad prompts file fails here,
    before any weight is loaded)."""
    from one4d.storage import check_precision, enable_fp8_base_storage, storage_dtype, torch_dtype

    if prompts is not None:
        load_prompts(prompts)  # a bad file fails before the weights load
    storage = storage_dtype(base_storage_dtype)
    from .cli import resolve_device

    device = resolve_device(device)
    check_precision(torch_dtype(dtype), device, storage)
    pipeline = load_pipeline(preset=preset, components=components, transformer=transformer, state=checkpoint,
                             dtype=dtype, seed=seed, encoder_dtype=encoder_dtype, condition_fill=condition_fill,
                             transformer_from_components=transformer_from_components)
    if storage is not None:  # cast on the CPU, so only fp8 weights reach the GPU
        enable_fp8_base_storage(pipeline.transformer, storage)
    pipeline.to(device)
    return ModelPredictor(pipeline, num_frames, height, width, overlap, num_inference_steps, guidance_scale, prompt=prompt,
                          seed=seed, negative_prompt=negative_prompt, prompts=prompts)
