"""The model as an evaluation predictor (``scripts/eval.py mode=model``).

A benchmark sequence of N frames goes through the full-video task (or the sparse task with the
protocol's observed frames) in windows of at most ``num_frames`` model frames overlapping by
``overlap`` input frames. Each window is resampled to the smallest 4k + 1 model frames that covers it
(no input frame dropped), resized to the model's size, sampled, and mapped back to its input frames.
The windows' pointmaps are merged into one trajectory by Sim(3) on the shared frames
(:func:`one4d.postopt.recover_cameras_windowed`), which also gives depth; depth is resized to the
ground truth's resolution by the metrics.
"""

from __future__ import annotations

import numpy as np
import torch

from one4d.conditioning import UNOBSERVED_FILL, VAE_TEMPORAL_FACTOR
from one4d.eval.datasets import EvalSequence
from one4d.eval.runner import Prediction
from one4d.postopt import recover_cameras, recover_cameras_windowed, split_windows

from .inputs import check_frame_count, model_size, nearest_model_frames, resample_indices, resize_frames
from .loading import load_pipeline


def covering_frame_count(input_frames: int) -> int:
    """The smallest 4k + 1 >= the window's input frames (at least 5)."""
    return max(5, -(-(input_frames - 1) // VAE_TEMPORAL_FACTOR) * VAE_TEMPORAL_FACTOR + 1)


class ModelPredictor:
    """``(EvalSequence, observed input frames) -> Prediction`` by sampling One4D and post-optimising."""

    def __init__(self, pipeline, num_frames: int = 81, height: int | None = None, width: int | None = None,
                 overlap: int = 16, num_inference_steps: int = 50, guidance_scale: float = 6.0, prompt: str = "",
                 seed: int = 0, postopt_kwargs: dict | None = None):
        self.pipeline, self.num_frames = pipeline, check_frame_count(num_frames)
        self.height, self.width, self.overlap = height, width, overlap
        self.steps, self.guidance_scale, self.prompt, self.seed = num_inference_steps, guidance_scale, prompt, seed
        self.postopt_kwargs = postopt_kwargs or {}

    def __call__(self, sequence: EvalSequence, observed) -> Prediction:
        total = sequence.num_frames
        observed = sorted({int(i) for i in observed})
        height, width = model_size(*sequence.frames.shape[1:3], self.height, self.width)
        frames = resize_frames(sequence.frames, height, width, crop=False)  # (N, h, w, 3) uint8
        windows = split_windows(total, self.num_frames, self.overlap) if total > self.num_frames else [(0, total)]
        pointmaps = [self._window(sequence.name, frames[start:end], [i - start for i in observed if start <= i < end])
                     for start, end in windows]  # each (end - start, h, w, 3)
        if len(pointmaps) == 1:
            result = recover_cameras(pointmaps[0], **self.postopt_kwargs)
        else:
            result = recover_cameras_windowed(pointmaps, overlap=self.overlap, **self.postopt_kwargs)
        return Prediction(depth=result.depth.float().cpu().numpy(), camera_to_world=result.camera_to_world.cpu().numpy())

    def _window(self, name: str, frames: np.ndarray, observed: list[int]) -> torch.Tensor:
        """Sample one window; pointmaps (L, h, w, 3) for its L input frames, in the window's own frame 0 camera."""
        if not observed:
            raise ValueError(f"sequence {name}: a window of {len(frames)} frames has no observed frame; use a larger sparsity ratio or window")
        count = covering_frame_count(len(frames))
        to_input = resample_indices(len(frames), count)  # model frame -> input frame
        to_model = nearest_model_frames(len(frames), count)  # input frame -> model frame
        observed_model = sorted({to_model[i] for i in observed})
        images = frames[[to_input[j] for j in observed_model]]  # (K, h, w, 3)
        output = self.pipeline(
            images, observed_model, count, prompt=self.prompt, num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale, generator=torch.Generator().manual_seed(self.seed),
            output_type="pt", recover_cameras=False, progress=False,
        )
        return output.pointmaps[0][to_model]  # (L, h, w, 3)


def build_eval_predictor(checkpoint: str | None = None, preset: str = "wan2.1-fun-14b-inp", device: str = "cuda",
                         components: str = "tiny", transformer: str | None = None, dtype: str = "bfloat16",
                         num_frames: int = 81, height: int | None = None, width: int | None = None, overlap: int = 16,
                         num_inference_steps: int = 50, guidance_scale: float = 6.0, seed: int = 0,
                         encoder_dtype: str | None = None, condition_fill: float = UNOBSERVED_FILL,
                         transformer_from_components: bool = False, base_storage_dtype: str | None = None) -> ModelPredictor:
    """Load the pipeline from local paths (see :func:`load_pipeline`, whose options these are, as in sampling) and
    wrap it as an eval predictor; ``base_storage_dtype`` stores the frozen base in fp8 (``one4d.storage``)."""
    from one4d.storage import check_precision, enable_fp8_base_storage, storage_dtype, torch_dtype

    storage = storage_dtype(base_storage_dtype)
    check_precision(torch_dtype(dtype), device, storage)
    pipeline = load_pipeline(preset=preset, components=components, transformer=transformer, state=checkpoint,
                             dtype=dtype, seed=seed, encoder_dtype=encoder_dtype, condition_fill=condition_fill,
                             transformer_from_components=transformer_from_components)
    if storage is not None:  # cast on the CPU, so only fp8 weights reach the GPU
        enable_fp8_base_storage(pipeline.transformer, storage)
    pipeline.to(device)
    return ModelPredictor(pipeline, num_frames, height, width, overlap, num_inference_steps, guidance_scale, seed=seed)
