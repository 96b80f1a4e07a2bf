"""Training the plain Wan I2V base (the "pretrained video prior") with the One4D trainer.

The paper fine-tunes a pretrained Wan2.1-Fun I2V model. The shipped tiny model has no such prior to
download, so its first stage trains one: full fine-tuning of a ``WanTransformer3DModel`` on RGB clips
with UMC conditioning, through the same :class:`Trainer`, objective and data (raw clips or the latent
cache) as One4D itself. Select it with ``model.architecture=base`` (``configs/experiment/tiny_base.yaml``).

:class:`one4d.models.WanBaseModel` offers the trainer what the joint models offer (trainable parameters
and state, an architecture description, gradient checkpointing) so checkpoints, resume and logging are shared.
``scripts/train.py`` picks :class:`BaseModelTrainer` when ``model.architecture=base``.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from one4d.models import WanBaseModel
from one4d.models.presets import build_base_transformer

from .adapter import BaseFlowAdapter
from one4d.storage import torch_dtype

from .builders import build_objective
from .trainer import Trainer

def build_base_model(model_cfg) -> WanBaseModel:
    """The base of ``cfg.model``: the preset with random weights, or ``model.transformer`` (a local diffusers folder)."""
    dtype = torch_dtype(model_cfg.dtype)
    if model_cfg.get("transformer"):
        from one4d.weights import load_base_transformer

        base = load_base_transformer(model_cfg.transformer, preset=model_cfg.preset, dtype=dtype)
    else:
        overrides = OmegaConf.to_container(model_cfg.get("base_overrides") or OmegaConf.create({}))
        base = build_base_transformer(model_cfg.preset, dtype=dtype, **overrides)
    return WanBaseModel(base)


class BaseModelTrainer(Trainer):
    """The One4D trainer with the plain base model and :class:`BaseFlowAdapter` (RGB loss only)."""

    def build_model(self) -> WanBaseModel:
        return build_base_model(self.cfg.model)

    def build_adapter(self) -> BaseFlowAdapter:
        joint = super().build_adapter()
        return BaseFlowAdapter(build_objective(self.cfg.train), joint.encoders, empty_prompt=joint.empty_prompt,
                               prompt_dropout=joint.prompt_dropout, sample_posterior=joint.sample_posterior,
                               condition_fill=joint.condition_fill)

    def write_sampling_file(self, folder) -> None:
        """No sampling.json: a plain base is not a One4D checkpoint for ``scripts/sample.py``."""

    def validate(self) -> None:
        """Validation samples need the joint sampler; the base stage is checked by its loss instead."""
