"""train.ray_loss: the decoded XYZ estimate's point-to-ray angles under the decoded target's cameras (one4d.training.ray_objective)."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from one4d.data.synthetic import render_scene
from one4d.encoding import encode_video, load_encoders
from one4d.geometry import normalize_pointmaps, pointmap_normalization
from one4d.training import Trainer
from one4d.training.ray_objective import RayConsistency
from one4d.training.testing import compose_train_config, write_synthetic_clips

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_BASE = ROOT / "data" / "checkpoints" / "tiny" / "base"


@pytest.fixture(scope="module")
def vae():
    """The shipped tiny model's VAE: it reconstructs pointmaps (depth Abs Rel ~0.02), so its decoded targets have cameras."""
    return load_encoders(str(SHIPPED_BASE)).vae.eval().requires_grad_(False)


def scene_latents(vae, seeds) -> torch.Tensor:
    """Normalised-pointmap latents (B, 16, 3, 12, 16) of synthetic scenes at the tiny model's 9 x 48 x 64."""
    videos = []
    for seed in seeds:
        scene = render_scene(seed, 9, 48, 64)
        norm = pointmap_normalization(scene.pointmaps, scene.depth > 0, 0.02)
        videos.append(normalize_pointmaps(scene.pointmaps, *norm).permute(3, 0, 1, 2))  # (3, F, H, W)
    return encode_video(vae, torch.stack(videos))


def flows_giving(estimate, noise, sigma, noisy):
    """The flow whose clean-latent estimate x_sigma - sigma v is ``estimate``."""
    return (noisy - estimate) / sigma.view(-1, 1, 1, 1, 1)


def test_angles_are_small_on_the_targets_rays_and_large_for_another_scene(vae):
    latents = scene_latents(vae, [1_000_000, 1_000_003])
    noise, sigma = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)), torch.tensor([0.9, 0.5])
    noisy = (1 - sigma.view(-1, 1, 1, 1, 1)) * latents + sigma.view(-1, 1, 1, 1, 1) * noise
    term = RayConsistency(vae, weight=1.0)
    exact = term(noise - latents, noisy, sigma, latents, torch.Generator().manual_seed(1))  # (2, 9, 256, 3)
    swapped = flows_giving(latents.flip(0), noise, sigma, noisy)  # each sample predicts the other scene
    wrong = term(swapped, noisy, sigma, latents, torch.Generator().manual_seed(1))
    exact_rms, wrong_rms = exact.norm(dim=-1).pow(2).mean().sqrt(), wrong.norm(dim=-1).pow(2).mean().sqrt()
    print(f"rms angle: exact prediction {exact_rms:.4f} rad, the other scene {wrong_rms:.4f} rad")
    assert exact.shape == (2, 9, 256, 3) and term.skipped == 0
    assert exact_rms < 0.05 and wrong_rms > 5 * exact_rms


def test_gradient_moves_the_estimate_onto_the_rays_and_only_for_the_first_samples(vae):
    latents = scene_latents(vae, [1_000_001, 1_000_002, 1_000_004])
    sigma = torch.full((3,), 0.5)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2))
    noisy = (1 - sigma.view(-1, 1, 1, 1, 1)) * latents + sigma.view(-1, 1, 1, 1, 1) * noise
    start = latents + 0.3 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(3))  # off the rays
    term = RayConsistency(vae, weight=1.0, samples=2)
    estimate = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([estimate], lr=0.02)
    history = []
    for step in range(15):
        angles = term(flows_giving(estimate, noise, sigma, noisy), noisy, sigma, latents, torch.Generator().manual_seed(4))
        loss = angles.pow(2).mean()
        history.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        assert angles.shape[0] == 2 and torch.all(estimate.grad[2] == 0) and estimate.grad[:2].abs().sum() > 0
        optimizer.step()
    print(f"ray loss from {history[0]:.5f} to {history[-1]:.5f}")
    assert history[-1] < 0.5 * history[0]


def test_bad_settings_are_refused(vae):
    with pytest.raises(ValueError, match="weight must be positive"):
        RayConsistency(vae, weight=0.0)
    with pytest.raises(ValueError, match="ray_loss.pixels"):
        RayConsistency(vae, weight=1.0, pixels=3)
    with pytest.raises(ValueError, match="ray_loss.samples"):
        RayConsistency(vae, weight=1.0, samples=0)


def test_trainer_adds_the_weighted_term_from_a_cache_and_leaves_it_out_by_default(tmp_path):
    """The recipe as trained: cache mode (no VAE loaded for the MSE), the term's VAE loaded for it, its loss in the sum."""
    from one4d.training.cache import cache_from_config

    clips = write_synthetic_clips(tmp_path / "clips", count=2, num_frames=5, size=32)
    base = ["experiment=tiny_cpu", "train.report_to=null", "train.progress_bar=false", "train.checkpoint_every=0",
            "train.log_every=0", "+model.base_overrides.num_layers=2", "train.prompt_dropout=0.0"]
    cache = cache_from_config(compose_train_config([*base, f"run_dir={tmp_path / 'c'}", f"data.roots=[{clips}]",
                                                     f"+cache_dir={tmp_path / 'latents'}"]))
    plain = Trainer(compose_train_config([*base, f"run_dir={tmp_path / 'a'}", f"data.cache={cache}"])).setup()
    assert plain.adapter.ray_term is None and plain.adapter.encoders.vae is None
    trainer = Trainer(compose_train_config([*base, f"run_dir={tmp_path / 'b'}", f"data.cache={cache}",
                                            "train.ray_loss.weight=3.0", "train.ray_loss.pixels=64"])).setup()
    assert trainer.adapter.ray_term is not None and not any(p.requires_grad for p in trainer.adapter.ray_term.vae.parameters())
    losses = trainer.forward_backward_step(next(trainer.batches()), 0)
    assert {"loss_rgb", "loss_xyz", "loss_ray"} <= set(losses)
    assert torch.isclose(losses["loss"], losses["loss_rgb"] + losses["loss_xyz"] + 3.0 * losses["loss_ray"])
    assert float(losses["loss_ray"]) > 0 and torch.isfinite(losses["loss"])
    assert all(torch.isfinite(p.grad).all() for p in trainer.model.trainable_parameters() if p.grad is not None)


def test_train_script_with_the_term_under_the_papers_bf16_precision(tmp_path):
    """scripts/train.py as users run it, with the paper's precision (bf16 base weights, bf16 autocast) from raw clips:
    the decode and the camera solve run inside autocast, and the logged term is finite and positive."""
    clips = write_synthetic_clips(tmp_path / "clips", count=2, num_frames=5, size=32)
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "experiment=tiny_cpu", f"run_dir={tmp_path / 'run'}",
               f"data.roots=[{clips}]", "train.steps=2", "train.log_every=1", "train.report_to=null", "train.progress_bar=false",
               "train.checkpoint_every=0", "+model.base_overrides.num_layers=2", "model.dtype=bfloat16",
               "train.mixed_precision=bf16", "train.ray_loss.weight=2.0", "train.ray_loss.pixels=64"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [float(value) for value in re.findall(r"loss_ray=([0-9.eE+-]+)", result.stderr + result.stdout)]
    assert len(logged) == 2 and all(math.isfinite(value) and value > 0 for value in logged), logged
