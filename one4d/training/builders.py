"""Building the trainer's parts from config values (configs are data; this is where they become objects)."""

from __future__ import annotations

import numpy as np
import torch

from one4d.models import ARCHITECTURES, build_model
from one4d.storage import torch_dtype

from .objective import FlowMatchingObjective

def architecture_kwargs(model_cfg) -> dict:
    """The keyword arguments of the chosen architecture's constructor (DLC has link options, the baselines do not)."""
    kwargs = {"lora_rank": int(model_cfg.lora_rank), "lora_alpha": model_cfg.get("lora_alpha")}
    if model_cfg.architecture == "dlc":
        kwargs["num_links"] = int(model_cfg.num_links)
        kwargs["link_layers"] = None if model_cfg.get("link_layers") is None else [int(i) for i in model_cfg.link_layers]
    return kwargs


def build_joint_model(model_cfg, device=None):
    """The joint RGB+XYZ model of ``cfg.model``: local pretrained weights, or a random base with the tiny components
    (tests, meta-device counts). ``one4d.weights.base_transformer_source`` decides which, and refuses a Fun preset
    on a diffusers I2V directory's transformer unless asked.

    The frozen base takes ``model.dtype`` (bf16 keeps diffusers' fp32 modules); trainable weights stay fp32.
    """
    from one4d.weights import base_transformer_source, load_base_transformer

    if model_cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"model.architecture must be one of {sorted(ARCHITECTURES)}, got {model_cfg.architecture!r}")
    dtype = torch_dtype(model_cfg.dtype)
    overrides = dict(model_cfg.get("base_overrides") or {})
    source = None if str(device) == "meta" else base_transformer_source(  # meta: shapes and counts only
        model_cfg.preset, model_cfg.get("transformer"), model_cfg.components, bool(model_cfg.get("transformer_from_components", False)))
    if source is not None:
        base = load_base_transformer(source, preset=model_cfg.preset, dtype=dtype)
        model = ARCHITECTURES[model_cfg.architecture](base, **architecture_kwargs(model_cfg))
    else:
        model = build_model(model_cfg.architecture, model_cfg.preset, device=device, dtype=dtype,
                            base_overrides=overrides, **architecture_kwargs(model_cfg))
    if model_cfg.get("attention_backend"):
        model.set_attention_backend(model_cfg.attention_backend)
    return model


def encoder_dtype(model_cfg) -> torch.dtype | None:
    """The dtype of the UMT5 and CLIP encoders (``model.encoder_dtype``, by default ``model.dtype``); the VAE is always fp32."""
    name = model_cfg.get("encoder_dtype")
    return None if name is None else torch_dtype(name)


def encoder_settings(model_cfg) -> dict:
    """What, besides the weights, decides the encoders' outputs: part of a latent cache's fingerprint."""
    return {"encoder_dtype": model_cfg.get("encoder_dtype"), "condition_fill": float(model_cfg.condition_fill)}


def build_objective(train_cfg) -> FlowMatchingObjective:
    sigma = train_cfg.sigma
    return FlowMatchingObjective(
        scheme=sigma.scheme, shift=float(sigma.shift), logit_mean=float(sigma.logit_mean),
        logit_std=float(sigma.logit_std), weights={key: float(value) for key, value in train_cfg.loss_weights.items()},
    )


def build_dataset(data_cfg, seed: int, vae_fingerprint: str | None = None):
    """Raw clips (``ClipDataset``) or, when ``data.cache`` is set, the latent cache checked against this config."""
    if data_cfg.get("cache"):
        from .cache import LatentCacheDataset

        return LatentCacheDataset(
            data_cfg.cache, num_frames=int(data_cfg.num_frames), height=int(data_cfg.height), width=int(data_cfg.width),
            vae=vae_fingerprint, seed=seed, task_probabilities=tuple(data_cfg.task_probabilities),
        )
    from one4d.data.dataset import ClipDataset

    roots = data_cfg.roots
    if not roots:
        raise ValueError("data.roots is empty: give one or more folders of clips (or data.cache=<folder> from scripts/cache_latents.py)")
    return ClipDataset(
        [str(root) for root in roots], num_frames=int(data_cfg.num_frames), height=int(data_cfg.height),
        width=int(data_cfg.width), frame_stride=int(data_cfg.frame_stride), seed=seed, crop=data_cfg.crop,
        task_probabilities=tuple(data_cfg.task_probabilities),
        weights=None if data_cfg.get("weights") is None else [float(w) for w in data_cfg.weights],
        length=None if data_cfg.get("length") is None else int(data_cfg.length),
    )


def step_generator(seed: int, step: int, micro_step: int, device="cpu") -> torch.Generator:
    """The generator of one micro-step: sigmas, noise and prompt dropout are a function of (seed, step, micro-step)
    only, so a resumed run draws exactly what the uninterrupted one drew, on any number of processes (StepDraws)."""
    # the 0 stands where each process's rank stood before StepDraws: one process draws as it always did
    state = np.random.SeedSequence([seed, step, micro_step, 0]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


class StepDraws:
    """The random draws of one micro-step, made for the GLOBAL batch on every process; each process keeps its own
    samples, ``rank::world_size`` (the ones :class:`ShardedBatches` gives it). So N processes draw for every sample
    what one process with the same global batch draws (``train.global_batch_size``): how many processes train a run
    does not change its randomness, only the rounding of the gradient average. One process (rank 0 of 1) draws
    exactly what the plain generator does. The cost: each process draws N times its own noise (for the 14B at 8
    GPUs about 2 x 9M normal numbers a micro-step on the CPU, against a step of seconds).
    """

    def __init__(self, generator: torch.Generator, rank: int = 0, world_size: int = 1):
        self.generator, self.rank, self.world_size = generator, rank, world_size

    def _mine(self, drawn: torch.Tensor) -> torch.Tensor:
        return drawn[self.rank :: self.world_size]

    def rand(self, count: int) -> torch.Tensor:
        """(count,) uniform numbers of this process's samples."""
        return self._mine(torch.rand(count * self.world_size, generator=self.generator, device=self.generator.device))

    def randn(self, shape) -> torch.Tensor:
        """Standard normal noise of ``shape`` (its first axis: this process's samples)."""
        shape = tuple(shape)
        global_shape = (shape[0] * self.world_size, *shape[1:])
        return self._mine(torch.randn(global_shape, generator=self.generator, device=self.generator.device))

    def sigmas(self, objective, count: int) -> torch.Tensor:
        """(count,) noise levels of ``objective`` (``FlowMatchingObjective.sample_sigmas``) for this process's samples."""
        return self._mine(objective.sample_sigmas(count * self.world_size, self.generator))


class ShardedBatches:
    """The data order: one seeded permutation per epoch, split across processes, cut into batches.

    Resuming needs only the number of batches consumed: the order is a function of (seed, epoch).
    """

    def __init__(self, num_samples: int, batch_size: int, rank: int, world_size: int, seed: int):
        per_epoch = num_samples // (batch_size * world_size)
        if per_epoch < 1:
            raise ValueError(
                f"the dataset has {num_samples} samples, fewer than one step needs "
                f"(batch size {batch_size} x {world_size} processes)"
            )
        self.num_samples, self.batch_size, self.rank, self.world_size, self.seed = num_samples, batch_size, rank, world_size, seed
        self.batches_per_epoch = per_epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of sample indices for ``epoch`` (incomplete tail dropped)."""
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch)).tolist()
        order = order[: self.batches_per_epoch * self.batch_size * self.world_size]
        mine = order[self.rank :: self.world_size]
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
