"""Training: flow-matching objective, the model adapter, the accelerate/DeepSpeed trainer, checkpoints and the latent cache."""

from .adapter import JointFlowAdapter
from .builders import ShardedBatches, StepDraws, build_dataset, build_joint_model, build_objective, step_generator
from .checkpointing import latest_valid, list_checkpoints, verify
from .objective import FlowMatchingObjective
from .trainer import Trainer, run

__all__ = [
    "FlowMatchingObjective", "JointFlowAdapter", "Trainer", "run", "ShardedBatches",
    "StepDraws", "build_dataset", "build_joint_model", "build_objective", "step_generator",
    "latest_valid", "list_checkpoints", "verify",
]
