"""Speed options of the plain sampling path (issue 16 item 6): regional torch.compile of the base blocks and one
batched VAE call for RGB and XYZ, each equal to the default path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from one4d.pipeline import load_pipeline
from one4d.models import compile_repeated_blocks

FRAMES, SIZE = 5, 32


def sample(pipe, **kwargs):
    images = (np.random.default_rng(0).random((1, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    return pipe(images, [0], FRAMES, prompt="a red car drives", negative_prompt="blur", num_inference_steps=2,
                guidance_scale=2.0, generator=torch.Generator().manual_seed(0), progress=False, **kwargs)


def test_compile_option_reaches_every_base_block():
    pipe = load_pipeline(compile_blocks=True)
    assert all(block._compiled_call_impl is not None for block in pipe.transformer.base.blocks)
    assert pipe.transformer.xyz_proj_out._compiled_call_impl is None  # only the repeated blocks


def test_compiled_blocks_sample_as_eager():
    """Dynamo traces both branches' blocks (adapter switch, shared-context memo) and gives the eager sample.

    The "eager" backend checks the tracing in seconds; inductor's C++ code generation took 105 s on this 2-core
    CPU for the tiny model (then equal within 1e-6, BENCHMARKS.md "Compiled blocks and batched decode")."""
    pipe = load_pipeline()
    eager = sample(pipe, output_type="latent")
    compile_repeated_blocks(pipe.transformer, backend="eager")
    compiled = sample(pipe, output_type="latent")
    torch._dynamo.reset()
    torch.testing.assert_close(compiled.rgb_latents, eager.rgb_latents, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled.xyz_latents, eager.xyz_latents, rtol=1e-5, atol=1e-6)


def test_batched_decode_equals_two_decodes():
    pipe = load_pipeline(batched_decode=True)
    calls, decode = [], pipe.decode
    pipe.decode = lambda latents: calls.append(latents.shape[0]) or decode(latents)
    batched = sample(pipe, recover_cameras=False)
    pipe.batched_decode = False
    separate = sample(pipe, recover_cameras=False)
    assert calls == [2, 1, 1]  # one VAE call of batch 2, then two of batch 1
    assert torch.equal(batched.rgb_latents, separate.rgb_latents)
    np.testing.assert_allclose(batched.rgb, separate.rgb, atol=1e-5)
    np.testing.assert_allclose(batched.normalized_pointmaps, separate.normalized_pointmaps, atol=1e-5)
    assert batched.rgb.shape == separate.rgb.shape == (1, FRAMES, SIZE, SIZE, 3)


def test_negative_step_cache_threshold_is_refused():
    with pytest.raises(ValueError, match="step_cache_threshold must be >= 0"):
        load_pipeline(step_cache_threshold=-0.1)
