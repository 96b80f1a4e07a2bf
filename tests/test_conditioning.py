"""Unified Masked Conditioning: task sets, the condition video, and the mask against diffusers' Wan I2V."""

import pytest
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

from one4d.conditioning import (
    TASKS,
    condition_video,
    latent_mask,
    observed_frames,
    observed_mask,
    sample_observed,
    sample_task,
)


def test_task_frame_sets():
    assert observed_frames("single", 17) == [0]
    assert observed_frames("full", 9) == list(range(9))
    # Evaluation rule: max(2, round(r F)) frames, first and last kept, spread uniformly.
    assert observed_frames("sparse", 50, sparsity=0.1) == [0, 12, 25, 37, 49]
    assert observed_frames("sparse", 50, sparsity=0.03) == [0, 49]  # round(1.5) = 2
    assert observed_frames("sparse", 81, sparsity=0.05) == [0, 27, 53, 80]  # round(4.05) = 4
    assert observed_frames("sparse", 10, sparsity=1.0) == list(range(10))


def test_training_sparse_draws_stay_between_single_and_full():
    generator = torch.Generator().manual_seed(0)
    counts = set()
    for _ in range(200):
        frames = observed_frames("sparse", 17, generator=generator)
        assert frames[0] == 0 and frames[-1] == 16 and frames == sorted(set(frames))
        counts.add(len(frames))
    assert counts == set(range(2, 17))


def test_task_probabilities_and_determinism():
    generator = torch.Generator().manual_seed(1)
    draws = [sample_task(generator) for _ in range(4000)]
    for task, expected in zip(TASKS, (0.35, 0.30, 0.35)):
        assert abs(draws.count(task) / len(draws) - expected) < 0.03
    first = [sample_observed(17, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert first[0] == first[1]
    assert sample_task(torch.Generator(), probabilities=(0, 0, 1)) == "full"


@pytest.mark.parametrize("bad", [lambda: observed_frames("dense", 9), lambda: observed_frames("sparse", 9, sparsity=0.0),
                                 lambda: latent_mask([0], 10, 2, 2), lambda: observed_mask([9], 9),
                                 lambda: sample_task(None, probabilities=(1, 1))])
def test_bad_arguments_raise_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_condition_video_zeroes_unobserved_frames_per_sample():
    rgb = torch.rand(2, 3, 9, 4, 4) * 2 - 1
    shared = condition_video(rgb, [0, 8])
    assert torch.equal(shared[:, :, [0, 8]], rgb[:, :, [0, 8]])
    assert (shared[:, :, 1:8] == 0).all()
    per_sample = torch.zeros(2, 9, dtype=torch.bool)
    per_sample[0, 0] = True
    per_sample[1] = True
    out = condition_video(rgb, per_sample)
    assert torch.equal(out[1], rgb[1]) and (out[0, :, 1:] == 0).all() and torch.equal(out[0, :, 0], rgb[0, :, 0])


def test_latent_mask_layout_by_hand():
    mask = latent_mask([0, 4, 8], 9, 2, 3)  # f = 3: [0,0,0,0 | 1,2,3,4 | 5,6,7,8]
    assert mask.shape == (4, 3, 2, 3)
    expected = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.float32)
    assert torch.equal(mask[:, :, 0, 0], expected)
    batched = latent_mask(torch.stack([observed_mask([0], 9), observed_mask(list(range(9)), 9)]), 9, 2, 3)
    assert batched.shape == (2, 4, 3, 2, 3)
    assert torch.equal(batched[0], latent_mask([0], 9, 2, 3)) and (batched[1] == 1).all()


@pytest.fixture(scope="module")
def tiny_wan_i2v():
    """The real diffusers pipeline object with a tiny random Wan VAE (no text or image model needed)."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
                           latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    return WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler())


@pytest.mark.parametrize("with_last", [False, True])
def test_mask_and_condition_match_diffusers_wan_i2v(tiny_wan_i2v, with_last):
    pipe, frames, size = tiny_wan_i2v, 9, 16
    video = torch.rand(1, 3, frames, size, size) * 2 - 1
    with torch.no_grad():
        _, condition = pipe.prepare_latents(
            video[:, :, 0], batch_size=1, num_channels_latents=4, height=size, width=size, num_frames=frames,
            dtype=torch.float32, device=torch.device("cpu"), last_image=video[:, :, -1] if with_last else None,
        )
        observed = [0, frames - 1] if with_last else [0]
        ours = latent_mask(observed, frames, size // 8, size // 8)
        assert torch.equal(condition[0, :4], ours)
        # The condition latents of our condition video equal the pipeline's (same zero fill).
        latents = pipe.vae.encode(condition_video(video, observed)).latent_dist.mode()
    torch.testing.assert_close(condition[:, 4:], latents, atol=1e-5, rtol=1e-5)
