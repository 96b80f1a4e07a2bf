"""Run a predictor over a benchmark's sequences and collect per-sequence and averaged metrics.

A predictor is any callable ``predictor(sequence, observed_frame_indices) -> Prediction``: the
model (full-video task, or the sparse task for Table 5, then post-optimisation), a folder of saved
predictions, or the GT-derived oracle used to test this driver. Sparse protocol (paper section
4.3; ``one4d.conditioning``): first, last and uniformly spread frames, ``max(2, round(r * F))`` of them;
the depth of every frame is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from one4d.conditioning import observed_frames
from one4d.eval.datasets import EvalSequence, SequenceSource
from one4d.eval.metrics import average_depth, average_pose, depth_metrics, pose_metrics
from one4d.runtime import raise_if_stopped


@dataclass
class Prediction:
    """What a method predicts for one sequence; either part may be None when not evaluated."""

    depth: object | None = None  # (F, H, W) numpy or torch, any resolution (resized to the GT's)
    camera_to_world: object | None = None  # (F, 4, 4)


Predictor = Callable[[EvalSequence, np.ndarray], Prediction]


def sparse_frame_indices(num_frames: int, ratio: float) -> np.ndarray:
    """Observed frames of the sparse task at sparsity ``ratio``: the one UMC rule of
    :func:`one4d.conditioning.observed_frames` (first, last, max(2, round(r F)) spread uniformly)."""
    return np.asarray(observed_frames("sparse", num_frames, sparsity=ratio), dtype=np.int64)


def evaluate_sequence(sequence: EvalSequence, prediction: Prediction, depth_options: dict | None = None) -> dict:
    """Metrics of one prediction; a ValueError names the sequence when the prediction does not fit.

    ``depth_options``: keyword arguments of :func:`depth_metrics` (a benchmark config's ``metrics`` group:
    align, max_depth, post_clip_max, ...).
    """
    result = {"frames": sequence.num_frames}
    if sequence.evaluate_depth and sequence.depth is not None:
        if prediction.depth is None:
            raise ValueError(f"sequence {sequence.name}: the prediction has no depth, the benchmark evaluates depth")
        if len(prediction.depth) != sequence.num_frames:
            raise ValueError(f"sequence {sequence.name}: {len(prediction.depth)} predicted depth maps for {sequence.num_frames} frames")
        try:
            result["depth"] = depth_metrics(prediction.depth, sequence.depth, **(depth_options or {}))
        except ValueError as error:
            raise ValueError(f"sequence {sequence.name}: {error}") from error
    if sequence.evaluate_pose and sequence.camera_to_world is not None:
        if prediction.camera_to_world is None:
            raise ValueError(f"sequence {sequence.name}: the prediction has no cameras, the benchmark evaluates pose")
        try:
            result["pose"] = pose_metrics(prediction.camera_to_world, sequence.camera_to_world)
        except ValueError as error:
            raise ValueError(f"sequence {sequence.name}: {error}") from error
    return result


def evaluate_each(
    benchmark_sequences: list[SequenceSource], predictor: Predictor, *, sparsity: float | None = None,
    strict: bool = True, depth_options: dict | None = None, log: Callable[[str], None] = print,
) -> tuple[dict, dict]:
    """Metrics of every sequence, one loaded at a time: ``({name: metrics}, {name: reason skipped})``.

    With ``strict=False`` a sequence whose data or prediction is bad is skipped with the reason
    (the tables show it), never silently dropped. Separate from :func:`summarize` so that processes
    each scoring a part of a benchmark (``one4d.eval.driver``) can average the gathered parts once.
    """
    per_sequence, skipped = {}, {}
    for source in benchmark_sequences:
        raise_if_stopped()
        try:
            sequence = source.load()
            observed = (np.arange(sequence.num_frames) if sparsity is None
                        else sparse_frame_indices(sequence.num_frames, sparsity))
            result = evaluate_sequence(sequence, predictor(sequence, observed), depth_options)
            result["observed_frames"] = int(len(observed))
        except ValueError as error:
            if strict:
                raise
            skipped[source.name] = str(error)
            log(f"skipped {source.name}: {error}")
            continue
        per_sequence[source.name] = result
        log(f"{source.name}: " + ", ".join(f"{k}={v:.4f}" for part in ("depth", "pose") for k, v in result.get(part, {}).items()
                                          if k in ("abs_rel", "delta_1_25", "ate", "rpe_trans", "rpe_rot")))
    return per_sequence, skipped


def summarize(per_sequence: dict, skipped: dict) -> dict:
    """``{"sequences", "skipped", "average": {"depth", "pose"}}``, averaged in the order of ``per_sequence``."""
    depth = [r["depth"] for r in per_sequence.values() if "depth" in r]
    pose = [r["pose"] for r in per_sequence.values() if "pose" in r]
    return {
        "sequences": per_sequence,
        "skipped": skipped,
        "average": {"depth": average_depth(depth), "pose": average_pose(pose)},
    }


def evaluate(
    benchmark_sequences: list[SequenceSource], predictor: Predictor, *, sparsity: float | None = None,
    strict: bool = True, depth_options: dict | None = None, log: Callable[[str], None] = print,
) -> dict:
    """Evaluate ``predictor`` on every sequence (:func:`evaluate_each`) and average (:func:`summarize`).

    Returns ``{"sequences": {name: metrics}, "skipped": {name: reason}, "average": {"depth", "pose"}}``.
    """
    per_sequence, skipped = evaluate_each(benchmark_sequences, predictor, sparsity=sparsity, strict=strict,
                                          depth_options=depth_options, log=log)
    return summarize(per_sequence, skipped)
