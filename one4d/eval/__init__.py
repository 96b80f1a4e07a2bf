"""Evaluation: benchmark readers, depth and pose metrics, the evaluation runner and paper-style tables.

Public API: ``depth_metrics`` and ``pose_metrics``. ``evaluate`` runs any
``Predictor`` (a callable ``(EvalSequence, observed_frame_indices) -> Prediction``) over a
benchmark's sequences.
"""

from one4d.eval.datasets import EvalSequence, SequenceSource
from one4d.eval.metrics import depth_metrics, pose_metrics
from one4d.eval.runner import Prediction, Predictor, evaluate, sparse_frame_indices

__all__ = [
    "EvalSequence", "Prediction", "Predictor", "SequenceSource",
    "depth_metrics", "evaluate", "pose_metrics", "sparse_frame_indices",
]
