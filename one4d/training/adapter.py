"""The adapter between the trainer and a joint RGB+XYZ model (STYLE item 4, finetrainers' ModelSpecification).

The trainer calls ``prepare_batch`` (data -> latents and embeddings), ``forward`` (-> predictions,
targets, weights) and ``trainable_state_dict``; it never learns which architecture it trains. DLC
and the two concatenation baselines share the forward signature, so one adapter serves all three.

A batch comes either from raw clips (``ClipDataset``: rgb, xyz, observed, caption), encoded here
with the frozen VAE / UMT5 / CLIP, or from the latent cache (already encoded). Both produce the
same prepared dict, so everything after ``prepare_batch`` is shared.

:class:`BaseFlowAdapter` is the same interface for the plain Wan I2V base (RGB only, full fine-tuning):
the "pretrained video prior" stage of the shipped tiny model trains through the same trainer and objective.
"""

from __future__ import annotations

import torch

from one4d.conditioning import UNOBSERVED_FILL
from one4d.encoding import Encoders, condition_latents, encode_prompt, encode_video, first_observed_image_embeds

from .builders import StepDraws
from .objective import FlowMatchingObjective


class JointFlowAdapter:
    """Turns batches into the model's inputs and the flow-matching targets.

    prompt_dropout: probability, per sample, of replacing the text embedding by the empty
        prompt's (classifier-free guidance). The CLIP image context is kept, as Wan I2V does.
    sample_posterior: sample the VAE posterior for the target latents (True) or take its mode.
    condition_fill: value of unobserved frames in the UMC condition video (``model.condition_fill``).
    """

    def __init__(self, objective: FlowMatchingObjective, encoders: Encoders | None = None,
                 empty_prompt: torch.Tensor | None = None, prompt_dropout: float = 0.1,
                 sample_posterior: bool = False, condition_fill: float = UNOBSERVED_FILL):
        if not 0 <= prompt_dropout <= 1:
            raise ValueError(f"prompt_dropout must be in [0, 1], got {prompt_dropout}")
        self.objective, self.encoders = objective, encoders or Encoders()
        self.prompt_dropout, self.sample_posterior, self.condition_fill = prompt_dropout, sample_posterior, condition_fill
        if empty_prompt is None and self.encoders.text_encoder is not None:
            empty_prompt = encode_prompt(self.encoders.tokenizer, self.encoders.text_encoder, [""])[0]
        self.empty_prompt = empty_prompt  # (512, text_dim) or None (then no dropout possible)
        if prompt_dropout > 0 and self.empty_prompt is None:
            raise ValueError("prompt_dropout > 0 needs the empty prompt's embedding: load a text encoder or use a cache that stores it")

    # ------------------------------------------------------------------ the trainer's interface

    def prepare_batch(self, batch: dict, device, draws: StepDraws | None = None) -> dict:
        """Latents and embeddings of a batch, on ``device``: from the cache as they are, from raw clips encoded now."""
        if "rgb_latents" not in batch:
            batch = self.encode_batch(batch, draws)
        keys = ("rgb_latents", "xyz_latents", "condition", "text_embeds", "image_embeds")
        return {key: batch[key].to(device) if batch.get(key) is not None else None for key in keys}

    def forward(self, model, prepared: dict, draws: StepDraws) -> tuple[dict, dict, dict]:
        """One noisy forward pass: (predictions, targets, weights), each keyed by "rgb" and "xyz"."""
        rgb_latents, xyz_latents = prepared["rgb_latents"], prepared["xyz_latents"]  # (B, 16, f, h, w) each
        batch_size, device = rgb_latents.shape[0], rgb_latents.device
        sigma = draws.sigmas(self.objective, batch_size).to(device)  # (B,): shared by both modalities
        rgb_noise = draws.randn(rgb_latents.shape).to(device)
        xyz_noise = draws.randn(xyz_latents.shape).to(device)
        text = self.drop_prompts(prepared["text_embeds"], draws)  # (B, 512, text_dim)

        rgb_input = torch.cat([self.objective.noisy(rgb_latents, rgb_noise, sigma), prepared["condition"]], dim=1)  # (B, 36, f, h, w)
        xyz_input = self.objective.noisy(xyz_latents, xyz_noise, sigma)  # (B, 16, f, h, w)
        rgb_pred, xyz_pred = model(rgb_input, xyz_input, self.objective.timesteps(sigma), text, prepared["image_embeds"])
        targets = {"rgb": self.objective.target(rgb_latents, rgb_noise), "xyz": self.objective.target(xyz_latents, xyz_noise)}
        return {"rgb": rgb_pred, "xyz": xyz_pred}, targets, self.objective.weights

    @staticmethod
    def trainable_state_dict(model) -> dict[str, torch.Tensor]:
        return model.trainable_state_dict()

    # ------------------------------------------------------------------ steps of the above

    def drop_prompts(self, text: torch.Tensor, draws: StepDraws) -> torch.Tensor:
        """Replace each sample's text embedding by the empty prompt's with probability ``prompt_dropout``."""
        if self.prompt_dropout <= 0:
            return text
        drop = draws.rand(text.shape[0]).to(text.device) < self.prompt_dropout
        empty = self.empty_prompt.to(text.device, text.dtype).expand_as(text)
        return torch.where(drop[:, None, None], empty, text)

    def encode_batch(self, batch: dict, draws: StepDraws | None = None) -> dict:
        """Raw clips -> latents: RGB, XYZ, the UMC condition (mask 4 + condition latents 16), text and CLIP context."""
        encoders = self.encoders
        if encoders.vae is None or encoders.text_encoder is None:
            raise ValueError("raw clips need the VAE and the text encoder; they were not loaded (cache mode?)")
        rgb, xyz, observed = batch["rgb"], batch["xyz"], batch["observed"]  # (B, 3, F, H, W) x2, (B, F) bool
        noise = draws.randn if self.sample_posterior else None  # the posterior's sample, else its mode
        rgb_latents = encode_video(encoders.vae, rgb, noise)  # (B, 16, f, h, w)
        xyz_latents = encode_video(encoders.vae, xyz, noise)  # (B, 16, f, h, w)
        return {
            "rgb_latents": rgb_latents,
            "xyz_latents": xyz_latents,
            "condition": condition_latents(encoders, rgb, observed, self.condition_fill),  # (B, 20, f, h, w)
            "text_embeds": encode_prompt(encoders.tokenizer, encoders.text_encoder, list(batch["caption"])),
            "image_embeds": first_observed_image_embeds(encoders, rgb, observed),
        }


class BaseFlowAdapter(JointFlowAdapter):
    """The adapter of a plain Wan I2V base (``WanBaseModel``): RGB latents only, the same objective and inputs.

    The model takes ``(rgb_input (B, 36, f, h, w), timestep, text, image)`` and predicts the RGB flow;
    the XYZ latents of a batch (raw clips or cache) are ignored.
    """

    def forward(self, model, prepared: dict, draws: StepDraws) -> tuple[dict, dict, dict]:
        rgb_latents = prepared["rgb_latents"]  # (B, 16, f, h, w)
        sigma = draws.sigmas(self.objective, rgb_latents.shape[0]).to(rgb_latents.device)  # (B,)
        noise = draws.randn(rgb_latents.shape).to(rgb_latents.device)
        text = self.drop_prompts(prepared["text_embeds"], draws)  # (B, 512, text_dim)
        rgb_input = torch.cat([self.objective.noisy(rgb_latents, noise, sigma), prepared["condition"]], dim=1)  # (B, 36, f, h, w)
        prediction = model(rgb_input, self.objective.timesteps(sigma), text, prepared["image_embeds"])  # (B, 16, f, h, w)
        return {"rgb": prediction}, {"rgb": self.objective.target(rgb_latents, noise)}, {"rgb": self.objective.weights["rgb"]}
