"""The demo's controls: what a model that ignores its input, and a perfect transformer on the same VAE, would score.

``make demo`` (:mod:`one4d.demo`) scores the model against these, each scored exactly as the model is:

* **no-input prior** (:func:`training_prior`): the per-pixel mean depth map and the mean camera path of
  training scenes (seeds 0, 1, ... as ``make tiny-model`` renders them). It sees no input at all, so a model
  that uses its input must beat it.
* **VAE ceiling** (:func:`vae_roundtrip`): the VAE's own encode -> decode of the TRUE RGB and of the TRUE
  normalised pointmaps: what a transformer that predicted the true scene's latents exactly would score.
* RGB references: :func:`psnr` of a frame-wise flat mean-colour image (:func:`flat_colour`, the floor), and
  :func:`motion`, how far frames move away from frame 0 (a frozen copy of the first frame scores 0).

The wrong-input control (the model fed another scene's frames and caption) needs the model; it lives in
:func:`one4d.demo.run_task` (``input_seed``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

PRIOR_SCENES = 64  # training scenes averaged by the no-input prior (seeds 0 .. 63, a subset of make tiny-model's)


@dataclass(frozen=True)
class Prior:
    """The no-input prior at one clip size."""

    depth: torch.Tensor  # (F, H, W) per-pixel mean of the training scenes' valid depth
    camera_to_world: torch.Tensor  # (F, 4, 4) float64, the mean camera path (frame 0 is the identity)
    seeds: tuple  # the training seeds averaged


def mean_camera_path(camera_to_world: torch.Tensor) -> torch.Tensor:
    """(N, F, 4, 4) camera paths -> (F, 4, 4): mean centres, and the rotation nearest the mean rotation matrix."""
    poses = camera_to_world.double()
    mean = poses.mean(0)  # (F, 4, 4), its rotation block is not a rotation yet
    u, _, vt = torch.linalg.svd(mean[:, :3, :3])  # (F, 3, 3) each
    sign = torch.sign(torch.linalg.det(u @ vt))  # (F,) keep det +1
    fix = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1))
    path = torch.eye(4, dtype=torch.float64).repeat(poses.shape[1], 1, 1)
    path[:, :3, :3] = u @ fix @ vt
    path[:, :3, 3] = mean[:, :3, 3]
    return path


@functools.lru_cache(maxsize=4)
def training_prior(num_frames: int, height: int, width: int, count: int = PRIOR_SCENES, first_seed: int = 0) -> Prior:
    """Render ``count`` training scenes at the demo's size (about 0.05 s each) and average them; cached per size."""
    from one4d.data.synthetic import render_scene
    from one4d.geometry import invert_pose

    seeds = tuple(range(first_seed, first_seed + count))
    depth_sum = torch.zeros(num_frames, height, width, dtype=torch.float64)
    depth_count = torch.zeros(num_frames, height, width, dtype=torch.float64)
    paths = []
    for seed in seeds:
        scene = render_scene(seed, num_frames, height, width)
        valid = scene.depth > 0
        depth_sum += torch.where(valid, scene.depth.double(), 0.0)
        depth_count += valid.double()
        paths.append(invert_pose(scene.world_to_camera.double()))  # (F, 4, 4) camera to world
    depth = (depth_sum / depth_count.clamp_min(1)).float()  # (F, H, W); a pixel never valid stays 0
    return Prior(depth, mean_camera_path(torch.stack(paths)), seeds)


@torch.no_grad()
def vae_roundtrip(vae, frames: torch.Tensor) -> torch.Tensor:
    """(F, H, W, 3) in [-1, 1] -> the VAE's encode (posterior mode) then decode, (F, H, W, 3) in [-1, 1]."""
    from one4d.encoding import decode_latents, encode_video

    video = frames.permute(3, 0, 1, 2)[None].float()  # (1, 3, F, H, W)
    decoded = decode_latents(vae, encode_video(vae, video))  # (1, 3, F, H, W)
    return decoded[0].permute(1, 2, 3, 0).cpu()  # (F, H, W, 3)


def psnr(pred, true) -> float:
    """PSNR in dB of RGB in [0, 1] (any matching shapes), over all pixels and channels."""
    pred, true = torch.as_tensor(pred).double(), torch.as_tensor(true).double()
    mse = (pred.clamp(0, 1) - true).pow(2).mean().clamp_min(1e-12)
    return float(-10 * torch.log10(mse))


def flat_colour(rgb: torch.Tensor) -> torch.Tensor:
    """(F, H, W, 3) -> each frame filled with its own mean colour: the floor a reconstruction must beat."""
    return rgb.mean(dim=(1, 2), keepdim=True).expand_as(rgb).clone()


def motion(rgb) -> float:
    """Mean absolute RGB difference (in [0, 1]) between each later frame and frame 0, averaged over frames 1 .. F-1.

    0 for a clip that is a frozen copy of its first frame; compare a generated clip's with the true clip's.
    """
    rgb = torch.as_tensor(rgb).double()  # (F, H, W, 3)
    return float((rgb[1:] - rgb[:1]).abs().mean())
