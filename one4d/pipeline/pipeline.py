"""One4DPipeline: joint RGB + pointmap sampling from an image, sparse frames or a video (paper sections 3.4, 4.1).

The shape is diffusers' ``WanImageToVideoPipeline``: ``check_inputs``, ``encode_prompt``,
``encode_image``, ``prepare_condition``, ``prepare_latents``, then numbered steps in one ``__call__``
with the scheduler kept separate. Differences, each for a reason:

* Two modalities: RGB and XYZ latents share the scheduler's sigmas and one DLC forward per step.
  They are stepped as ONE tensor (channels concatenated): UniPC and Euler are element-wise in the
  latents, so this equals stepping two schedulers, with one scheduler state to keep.
* Conditional and unconditional passes are one batched forward (diffusers runs two). Guidance
  applies whenever ``guidance_scale != 1``; at 1 the unconditional pass is skipped.
* The condition (UMC mask + condition latents) and the CLIP context come from the SAME functions
  the trainer calls (``one4d.training.adapter``), so sampling sees exactly what training saw.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from one4d.conditioning import UNOBSERVED_FILL, observed_mask
from one4d.encoding import Encoders, clean_prompt, condition_latents, decode_latents, encode_prompt, first_observed_image_embeds
from one4d.geometry import denormalize_pointmaps, invert_pose, relative_to_first, transform_points
from one4d.models.presets import TEXT_TOKENS
from one4d.runtime import raise_if_stopped

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("np", "pt", "latent")

# Wan's standard negative prompt: ``sample_neg_prompt`` of the Wan2.1 repository's shared config
# (Wan-Video/Wan2.1, wan/configs/shared_config.py, ``wan_shared_cfg.sample_neg_prompt``), which Wan's
# I2V sampler (wan/image2video.py, ``WanI2V.generate``) uses when no negative prompt is given. The one
# default of the sampler (configs/sample.yaml ``negative_prompt: null``) and of evaluation
# (configs/eval.yaml ``model_predictor.negative_prompt: null``); "" still means the empty prompt.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass
class One4DPipelineOutput:
    """What one call returns (B = 1 sample per call).

    rgb (B, F, H, W, 3) in [0, 1]; pointmaps (B, F, H, W, 3) un-normalised (see ``__call__``);
    normalized_pointmaps (B, F, H, W, 3) in [-1, 1] as decoded; observed (B, F) bool;
    cameras: one ``one4d.postopt.CameraRecovery`` per sample when post-optimisation ran (then the
    pointmaps are expressed in frame 0's recovered camera); depth (B, F, H, W) from it.
    rgb_latents / xyz_latents (B, 16, f, h, w): always returned (the only output for "latent").
    numpy arrays for output_type "np", tensors for "pt". model: the wrapper as loaded (its architecture_config).
    """

    rgb: np.ndarray | torch.Tensor | None
    pointmaps: np.ndarray | torch.Tensor | None
    normalized_pointmaps: np.ndarray | torch.Tensor | None
    observed: np.ndarray | torch.Tensor
    rgb_latents: torch.Tensor
    xyz_latents: torch.Tensor
    cameras: list | None = None
    depth: np.ndarray | torch.Tensor | None = None
    model: dict | None = None


class One4DPipeline:
    """Joint RGB + XYZ sampling with a One4D model (DLC or a baseline) and the frozen Wan components."""

    def __init__(self, transformer, vae, text_encoder, tokenizer, image_encoder, image_processor, scheduler,
                 condition_fill: float = UNOBSERVED_FILL):
        self.transformer = transformer.eval()  # requires_grad untouched: it marks the trainable state
        self.condition_fill = condition_fill  # unobserved frames of the condition video: the value training used
        self.encoders = Encoders(vae, tokenizer, text_encoder, image_encoder, image_processor)
        for module in (vae, text_encoder, image_encoder):
            module.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.vae_scale_factor_temporal = int(getattr(vae.config, "scale_factor_temporal", 4))
        self.vae_scale_factor_spatial = int(getattr(vae.config, "scale_factor_spatial", 8))
        self._offload_device: torch.device | None = None
        self._transformer_placed = False  # True once group offloading manages where the transformer's weights are
        self.batched_decode = False  # True: RGB and XYZ latents in one VAE call (equal within float rounding, ~1e-6)

    # ------------------------------------------------------------------ memory options

    @property
    def vae(self):
        return self.encoders.vae

    @property
    def device(self) -> torch.device:
        """Where the computation runs: the offload target, else the transformer's device."""
        return self._offload_device or next(self.transformer.parameters()).device

    def to(self, device) -> "One4DPipeline":
        if self._transformer_placed:
            raise ValueError("the transformer is group-offloaded: its blocks move by themselves; do not call .to()")
        self.transformer.to(device)
        self.encoders.to(device)
        return self

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep every model on the CPU and move each to ``device`` only while it runs (text -> image -> DiT -> VAE).

        Peak accelerator memory is then the largest single model plus activations, not their sum.
        """
        self._offload_device = torch.device(device)
        self.to("cpu")

    def enable_group_offload(self, device: str | torch.device = "cuda") -> None:
        """Offload the frozen base block by block (``one4d.storage.enable_base_group_offload``) and the encoders
        model by model (as :meth:`enable_model_cpu_offload`): the 14B base then needs one block on the GPU, not 40."""
        from one4d.storage import enable_base_group_offload

        self.enable_model_cpu_offload(device)
        enable_base_group_offload(self.transformer, device)
        self._transformer_placed = True

    def enable_vae_tiling(self) -> None:
        """Decode/encode the VAE in overlapping spatial tiles (less memory at 480p and above)."""
        self.vae.enable_tiling()

    def enable_vae_slicing(self) -> None:
        """Run the VAE one sample at a time."""
        self.vae.enable_slicing()

    @contextmanager
    def _on_device(self, module):
        """Move ``module`` to the execution device for the block when offloading; a no-op otherwise."""
        if self._offload_device is None or (module is self.transformer and self._transformer_placed):
            yield
            return
        module.to(self._offload_device)
        try:
            yield
        finally:
            module.to("cpu")
            if self._offload_device.type == "cuda":
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ steps

    def check_inputs(self, images, observed, num_frames, height, width, prompt, negative_prompt, num_inference_steps, guidance_scale, output_type) -> None:
        """Raise a ValueError naming the problem; nothing is encoded before these pass."""
        if (num_frames - 1) % self.vae_scale_factor_temporal:
            raise ValueError(f"num_frames must be 4k + 1 for the Wan VAE, got {num_frames}")
        step = self.vae_scale_factor_spatial * 2  # VAE x8, patch x2
        if height % step or width % step:
            raise ValueError(f"height and width must be multiples of {step}, got {height} x {width}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (K, H, W, 3), got {tuple(images.shape)}")
        if len(observed) != images.shape[0]:
            raise ValueError(f"{len(observed)} observed frame indices for {images.shape[0]} images")
        if sorted(set(observed)) != list(observed) or min(observed) < 0 or max(observed) >= num_frames:
            raise ValueError(f"observed must be increasing distinct indices in 0..{num_frames - 1}, got {list(observed)}")
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise ValueError("prompt and negative_prompt must be strings")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")

    def encode_prompt(self, prompt: str, negative_prompt: str, do_classifier_free_guidance: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """UMT5 embeddings (1, 512, text_dim) of the prompt and, with guidance, of the negative prompt.

        A prompt over 512 tokens is truncated (as every Wan pipeline does) with a warning.
        """
        tokenizer = self.encoders.tokenizer
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            length = len(tokenizer(clean_prompt(text), add_special_tokens=True).input_ids)
            if length > TEXT_TOKENS:
                logger.warning("%s has %d tokens; truncated to %d", name, length, TEXT_TOKENS)
        prompts = [prompt, negative_prompt] if do_classifier_free_guidance else [prompt]
        with self._on_device(self.encoders.text_encoder):
            embeds = encode_prompt(tokenizer, self.encoders.text_encoder, prompts)  # (1 or 2, 512, D)
        return embeds[:1], (embeds[1:] if do_classifier_free_guidance else None)

    def encode_image(self, video: torch.Tensor, observed: torch.Tensor) -> torch.Tensor | None:
        """CLIP penultimate states (1, tokens, image_dim) of the first observed frame (the trainer's function)."""
        with self._on_device(self.encoders.image_encoder):
            return first_observed_image_embeds(self.encoders, video, observed)

    def prepare_condition(self, video: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """UMC: mask (1, 4, f, h, w) + condition latents (1, 16, f, h, w), from the trainer's function."""
        with self._on_device(self.vae):
            return condition_latents(self.encoders, video, observed, self.condition_fill)  # (1, 20, f, h, w)

    def prepare_latents(self, num_frames, height, width, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian RGB then XYZ latents (1, 16, f, h, w) each, float32, drawn from ``generator`` in that order."""
        shape = (
            1, self.vae.config.z_dim, (num_frames - 1) // self.vae_scale_factor_temporal + 1,
            height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial,
        )
        rgb = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        xyz = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        return rgb, xyz

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, f, h, w) -> (B, F, H, W, 3) in [-1, 1] with the Wan VAE."""
        with self._on_device(self.vae):
            video = decode_latents(self.vae, latents)  # (B, 3, F, H, W)
        return video.permute(0, 2, 3, 4, 1).cpu()  # (B, F, H, W, 3)

    # ------------------------------------------------------------------ the call

    @torch.no_grad()
    def __call__(
        self,
        images,
        observed: list[int],
        num_frames: int,
        prompt: str = "",
        negative_prompt: str = WAN_NEGATIVE_PROMPT,
        num_inference_steps: int = 50,
        guidance_scale: float = 6.0,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        recover_cameras: bool = True,
        pointmap_centre=(0.0, 0.0, 0.0),
        pointmap_scale: float = 1.0,
        postopt_kwargs: dict | None = None,
        progress: bool = True,
    ) -> One4DPipelineOutput:
        """Sample one 4D clip.

        images (K, H, W, 3) uint8 (or float in [0, 1]): the observed frames, at model size, in the order
        of ``observed`` (K increasing model-frame indices: [0] single image, a few sparse frames, or all).
        ``pointmap_centre`` / ``pointmap_scale`` undo the per-clip normalisation; the model cannot know a
        clip's metric scale, so the defaults keep its normalised units (pass the clip's stored
        ``norm_centre`` / ``norm_scale`` when they are known, e.g. to compare with ground truth).
        ``recover_cameras``: run post-optimisation (``one4d.postopt.recover_cameras`` with ``postopt_kwargs``).
        """
        images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        height, width = int(images.shape[1]), int(images.shape[2])
        observed = [int(i) for i in observed]

        # 1. Check inputs
        self.check_inputs(images, observed, num_frames, height, width, prompt, negative_prompt, num_inference_steps, guidance_scale, output_type)
        device = self.device
        do_cfg = guidance_scale != 1.0

        # 2. Encode the prompt (and the negative prompt, batched)
        prompt_embeds, negative_embeds = self.encode_prompt(prompt, negative_prompt, do_cfg)

        # 3. Build the condition video (observed frames in place, others 0) and encode it with UMC
        frames = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        video = torch.zeros(1, 3, num_frames, height, width)  # (1, 3, F, H, W): 0 is mid-grey
        video[0, :, observed] = frames.permute(3, 0, 1, 2) * 2 - 1
        mask = observed_mask(observed, num_frames)[None]  # (1, F)
        image_embeds = self.encode_image(video, mask)  # (1, tokens, image_dim)
        condition = self.prepare_condition(video, mask).to(device)  # (1, 20, f, h, w)

        # 4. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if len(torch.unique(timesteps)) < len(timesteps):  # diffusers' UniPC then fails an internal assert mid-sampling
            raise ValueError(f"{num_inference_steps} steps at flow shift {getattr(self.scheduler.config, 'flow_shift', '?')} give "
                             f"{len(timesteps) - len(torch.unique(timesteps))} repeated integer timesteps, which "
                             f"{type(self.scheduler).__name__} cannot step through; use fewer steps or a smaller shift")

        # 5. Latents
        rgb_latents, xyz_latents = self.prepare_latents(num_frames, height, width, generator, device)
        rgb_channels = rgb_latents.shape[1]
        latents = torch.cat([rgb_latents, xyz_latents], dim=1)  # (1, 32, f, h, w): stepped as one

        # 6. Denoising loop: one DLC forward per step, conditional and unconditional batched
        dtype = self.transformer.base.dtype
        text = torch.cat([prompt_embeds, negative_embeds]) if do_cfg else prompt_embeds  # (1 or 2, 512, D)
        copies = text.shape[0]
        text = text.to(device, dtype)
        image_context = None if image_embeds is None else image_embeds.to(device, dtype).expand(copies, -1, -1)
        condition = condition.expand(copies, -1, -1, -1, -1)
        with self._on_device(self.transformer):
            for t in tqdm(timesteps, desc="denoising", disable=not progress):
                raise_if_stopped()
                model_latents = latents.expand(copies, -1, -1, -1, -1)
                rgb_input = torch.cat([model_latents[:, :rgb_channels], condition], dim=1).to(dtype)  # (copies, 36, f, h, w)
                xyz_input = model_latents[:, rgb_channels:].to(dtype)  # (copies, 16, f, h, w)
                rgb_flow, xyz_flow = self.transformer(rgb_input, xyz_input, t.expand(copies), text, image_context)
                flow = torch.cat([rgb_flow, xyz_flow], dim=1).float()  # (copies, 32, f, h, w)
                if do_cfg:
                    conditional, unconditional = flow.chunk(2)
                    flow = unconditional + guidance_scale * (conditional - unconditional)
                latents = self.scheduler.step(flow, t, latents, return_dict=False)[0]
        rgb_latents, xyz_latents = latents[:, :rgb_channels], latents[:, rgb_channels:]

        observed_out = mask.numpy() if output_type == "np" else mask
        if output_type == "latent":
            return One4DPipelineOutput(None, None, None, observed_out, rgb_latents, xyz_latents)

        # 7. Decode both modalities with the Wan VAE (one batched call if batched_decode) and undo the pointmap normalisation
        if self.batched_decode:
            rgb, normalized = self.decode(torch.cat([rgb_latents, xyz_latents])).chunk(2)  # (1, F, H, W, 3) each
        else:
            rgb, normalized = self.decode(rgb_latents), self.decode(xyz_latents)
        rgb = (rgb + 1) / 2  # (1, F, H, W, 3) in [0, 1]; normalized in [-1, 1]
        centre = torch.as_tensor(pointmap_centre, dtype=torch.float32)
        pointmaps = denormalize_pointmaps(normalized, centre, torch.as_tensor(float(pointmap_scale)))

        # 8. Post-optimisation: cameras and depth; pointmaps re-expressed in frame 0's camera
        cameras = depth = None
        if recover_cameras:
            cameras, pointmaps, depth = self.recover_cameras(pointmaps, postopt_kwargs or {})

        if output_type == "np":
            rgb, pointmaps, normalized = rgb.numpy(), pointmaps.numpy(), normalized.numpy()
            depth = None if depth is None else depth.numpy()
        model = self.transformer.architecture_config() if hasattr(self.transformer, "architecture_config") else None
        return One4DPipelineOutput(rgb, pointmaps, normalized, observed_out, rgb_latents, xyz_latents, cameras, depth, model)

    @staticmethod
    def recover_cameras(pointmaps: torch.Tensor, postopt_kwargs: dict) -> tuple[list, torch.Tensor, torch.Tensor]:
        """Per sample: post-optimised cameras, then everything moved into frame 0's recovered camera.

        Pointmaps are in frame 0's camera (paper section 3.1); the decoded pointmaps are in it only up to the
        normalisation's shift, so the recovered camera 0 defines it. Depth is per camera and unchanged.
        """
        from one4d.postopt import recover_cameras

        results, moved, depths = [], [], []
        for points in pointmaps:  # (F, H, W, 3)
            result = recover_cameras(points, **postopt_kwargs)
            first = result.world_to_camera[0].to(torch.float64)  # (4, 4)
            frames = points.shape[0]
            moved_points = transform_points(points.double().reshape(1, -1, 3), first[None]).reshape(points.shape)
            result.world_to_camera = relative_to_first(result.world_to_camera)
            result.camera_to_world = invert_pose(result.world_to_camera)
            result.camera_centers = result.camera_to_world[:, :3, 3]
            results.append(result)
            moved.append(moved_points.to(points.dtype))
            depths.append(result.depth.float().reshape(frames, *points.shape[1:3]))
        return results, torch.stack(moved), torch.stack(depths)
