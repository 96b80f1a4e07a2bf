"""Evaluation: benchmark readers, depth and pose metrics, the evaluation runner and paper-style tables.

Public API (SPEC section 8): ``depth_metrics`` and ``pose_metrics``; ``evaluate`` runs any
predictor over a benchmark's sequences.
"""

from one4d.eval.metrics import depth_metrics, pose_metrics

__all__ = ["depth_metrics", "pose_metrics"]
