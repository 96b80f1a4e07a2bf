"""Step caching at the DLC level (issue 16 item 5): threshold 0 is bitwise the uncached sampler, a positive
threshold skips whole steps of both branches and changes the sample a little, the two guidance passes keep
their own states, and only the DLC wrapper accepts it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from one4d.pipeline import load_pipeline
from one4d.pipeline.step_cache import StepCache, disable_step_cache, enable_step_cache

FRAMES, SIZE, STEPS = 5, 32, 8


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline()  # tiny preset, random weights


def sample(pipe, guidance_scale=2.0):
    images = (np.random.default_rng(0).random((1, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    output = pipe(images, [0], FRAMES, prompt="a red car drives", negative_prompt="blur", num_inference_steps=STEPS,
                  guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(0), output_type="latent",
                  progress=False)
    return torch.cat([output.rgb_latents, output.xyz_latents], dim=1)


def cached_sample(pipe, threshold, **kwargs):
    cache = enable_step_cache(pipe, threshold)
    try:
        return sample(pipe, **kwargs), cache
    finally:
        disable_step_cache(pipe)


def test_threshold_zero_is_bitwise_the_uncached_sampler(pipe):
    plain = sample(pipe)
    cached, cache = cached_sample(pipe, 0.0)
    assert torch.equal(cached, plain)
    assert cache.stats.computed == [2] * STEPS and cache.stats.skipped_rows == 0  # every step, both guidance passes
    assert "_layer" not in vars(pipe.transformer) and torch.equal(sample(pipe), plain)  # disabled: the plain sampler again


def test_positive_threshold_skips_steps_and_changes_the_sample_a_little(pipe):
    plain = sample(pipe)
    cached, cache = cached_sample(pipe, 0.3)
    assert cache.stats.skipped_rows > 0
    assert cache.stats.computed[0] == 2 and cache.stats.computed[-1] == 2  # the first and last steps always run
    change = (cached - plain).norm() / plain.norm()
    assert 0 < change < 0.5, float(change)


def test_each_guidance_pass_has_its_own_state(pipe):
    cached, cache = cached_sample(pipe, 0.3)
    assert set(cache.rows) == {0, 1}  # conditional and unconditional rows of the batched forward
    assert cache.rows[0].residual[0].shape == cache.rows[1].residual[0].shape
    assert not torch.equal(cache.rows[0].residual[0], cache.rows[1].residual[0])
    single, single_cache = cached_sample(pipe, 0.3, guidance_scale=1.0)  # no unconditional pass: one state
    assert set(single_cache.rows) == {0}


def test_a_split_decision_runs_a_sub_batch_and_fills_the_other_row_from_its_residual(pipe):
    """Row 1 skips step 1 while row 0 runs (as a sub-batch of one): the sample stays close to the uncached one."""
    plain = sample(pipe)
    cache = enable_step_cache(pipe, 0.0)
    decide = cache._decide
    cache._decide = lambda *args: [row for row in decide(*args) if cache.step != 1 or row == 0]
    try:
        split = sample(pipe)
    finally:
        disable_step_cache(pipe)
    assert cache.stats.computed[:3] == [2, 1, 2] and cache.stats.skipped_rows == 1
    assert 0 < float((split - plain).norm() / plain.norm()) < 0.5


def test_only_the_dlc_wrapper_and_non_negative_thresholds():
    with pytest.raises(ValueError, match="architecture dlc"):
        StepCache(load_pipeline(architecture="channel_concat").transformer, 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        StepCache(load_pipeline().transformer, -1.0)


def test_sampler_options_reach_the_loader_and_sequence_parallel_is_refused():
    from omegaconf import OmegaConf

    from one4d.pipeline.cli import acceleration_options

    cfg = OmegaConf.create({"acceleration": {"step_cache_threshold": 0.1, "compile": False, "batched_decode": True},
                            "parallel": {"cfg": 2, "ulysses": 1, "ring": 1}})
    assert acceleration_options(cfg) == {"step_cache_threshold": 0.1, "compile_blocks": False, "batched_decode": True}
    cfg.parallel.ulysses = 2
    with pytest.raises(ValueError, match="parallel.ulysses/ring > 1"):
        acceleration_options(cfg)
    pipe = load_pipeline(step_cache_threshold=0.1)
    assert isinstance(vars(pipe.transformer)["_layer"], StepCache) and pipe.step_cache.threshold == 0.1


@pytest.mark.multicore
def test_cfg_parallel_ranks_keep_the_two_passes_states_apart(tmp_path):
    """parallel.cfg=2 (one guidance pass per rank, batch 1 each) with step caching samples what one process does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import imageio.v2 as imageio

    repo = Path(__file__).resolve().parents[1]
    imageio.imwrite(tmp_path / "image.png", (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8))
    args = ["scripts/sample.py", "task=single", f"input={tmp_path / 'image.png'}", "checkpoint=data/checkpoints/tiny",
            "steps=10", "progress=false", "postopt.enabled=false", "acceleration.step_cache_threshold=0.1",
            "cfg=2",  # guided: the checkpoint's sampling.json says CFG 1 (one pass), and CFG-parallel needs two
            "prompt=a red room"]  # not the negative prompt (""): the two passes, and their cache states, differ
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, *args, f"out={tmp_path / 'one'}"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(29600 + os.getpid() % 100), *args, "parallel.cfg=2", f"out={tmp_path / 'two'}"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = np.load(tmp_path / "one" / "pointmaps.npz"), np.load(tmp_path / "two" / "pointmaps.npz")
    np.testing.assert_allclose(b["normalized_pointmaps"].astype(np.float32), a["normalized_pointmaps"].astype(np.float32),
                               atol=2e-3)  # float16 files: a few ulps; thresholds 0.05 and 0.1 differ by up to 6e-2
