"""One4DPipeline on the tiny preset (5 frames x 32 x 32, a few steps): tasks, UMC, seeds, CFG, weight layouts, inputs."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_weights import to_original_layout  # the inverse of diffusers' Wan key conversion, shared with the weights tests

from one4d.components import build_tiny_components, build_tiny_directory
from one4d.models import save_trainable_state
from one4d.pipeline import One4DPipeline, build_scheduler, load_pipeline
from one4d.pipeline.inputs import (
    InputFrames,
    model_size,
    nearest_model_frames,
    prepare_conditions,
    read_input,
    resample_indices,
)
from one4d.encoding import condition_latents, first_observed_image_embeds

FRAMES, SIZE = 5, 32


def frames(count, seed=0, size=SIZE):
    return (np.random.default_rng(seed).random((count, size, size, 3)) * 255).astype(np.uint8)


def run(pipe, images, observed, seed=0, steps=2, **kwargs):
    kwargs.setdefault("recover_cameras", False)
    return pipe(images, observed, FRAMES, prompt="a red car drives", num_inference_steps=steps,
                generator=torch.Generator().manual_seed(seed), progress=False, **kwargs)


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline()  # tiny preset, random weights, seed 0


class ForwardRecorder:
    """Records the inputs of every transformer forward."""

    def __init__(self, module):
        self.calls = []
        self.handle = module.register_forward_pre_hook(lambda _, args: self.calls.append([a.clone() if isinstance(a, torch.Tensor) else a for a in args]))

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.handle.remove()


@pytest.mark.parametrize("task", ["single", "sparse", "full"])
def test_tasks_give_outputs_of_the_right_shapes(pipe, task):
    source = InputFrames(frames(1 if task == "single" else 9), path=None)
    conditions = prepare_conditions(task, source, num_frames=FRAMES, sparsity=0.4)
    expected_observed = {"single": [0], "sparse": [0, 4], "full": [0, 1, 2, 3, 4]}[task]
    assert conditions.observed == expected_observed
    out = run(pipe, conditions.images, conditions.observed, recover_cameras=task == "sparse")
    assert out.rgb.shape == out.pointmaps.shape == (1, FRAMES, SIZE, SIZE, 3)
    assert out.rgb.min() >= 0 and out.rgb.max() <= 1
    assert np.abs(out.normalized_pointmaps).max() <= 1
    assert out.observed.tolist() == [[j in expected_observed for j in range(FRAMES)]]
    assert out.rgb_latents.shape == out.xyz_latents.shape == (1, 16, 2, 4, 4)
    if task == "sparse":
        assert out.depth.shape == (1, FRAMES, SIZE, SIZE)
        assert torch.allclose(out.cameras[0].world_to_camera[0], torch.eye(4, dtype=torch.float64), atol=1e-9)  # frame 0's camera


def test_observed_frames_reach_the_model_through_the_training_umc(pipe):
    images, observed = frames(2, seed=3), [0, 4]
    with ForwardRecorder(pipe.transformer) as recorder:
        run(pipe, images, observed, steps=1, guidance_scale=1.0)
    rgb_input = recorder.calls[0][0]  # (1, 36, f, h, w)
    video = torch.zeros(1, 3, FRAMES, SIZE, SIZE)
    video[0, :, observed] = torch.from_numpy(images).float().permute(3, 0, 1, 2) / 255 * 2 - 1
    mask = torch.zeros(1, FRAMES, dtype=torch.bool)
    mask[0, observed] = True
    expected = condition_latents(pipe.encoders, video, mask)  # what the trainer feeds for the same clip
    assert torch.equal(rgb_input[:, 16:], expected)
    assert torch.equal(recorder.calls[0][4], first_observed_image_embeds(pipe.encoders, video, mask))
    assert recorder.calls[0][3].shape[1] == 512  # text padded to exactly 512 tokens


def test_same_seed_same_outputs_bitwise(pipe):
    images = frames(1)
    first, second = run(pipe, images, [0], seed=7), run(pipe, images, [0], seed=7)
    other = run(pipe, images, [0], seed=8)
    assert np.array_equal(first.rgb, second.rgb) and np.array_equal(first.pointmaps, second.pointmaps)
    assert not np.array_equal(first.rgb, other.rgb)


def test_cfg_one_skips_the_unconditional_pass_and_cfg_batches_both(pipe):
    images = frames(1)
    for scale, batch in ((1.0, 1), (6.0, 2)):
        with ForwardRecorder(pipe.transformer) as recorder:
            run(pipe, images, [0], steps=2, guidance_scale=scale, output_type="latent")
        assert len(recorder.calls) == 2  # one forward per step, with or without guidance
        assert all(call[0].shape[0] == batch and call[1].shape[0] == batch for call in recorder.calls)


def test_guidance_combines_conditional_and_unconditional_predictions(pipe):
    """One Euler step is linear in the guided flow u + s (c - u): latents(s) = latents(0) + s (latents(1) - latents(0))."""
    euler = One4DPipeline(pipe.transformer, scheduler=build_scheduler("euler", 3.0), **vars(pipe.encoders))
    images = frames(1)
    latents = {}
    for scale in (0.0, 1.0, 4.0):
        out = run(euler, images, [0], steps=1, guidance_scale=scale, output_type="latent")
        latents[scale] = torch.cat([out.rgb_latents, out.xyz_latents], dim=1)
    expected = latents[0.0] + 4.0 * (latents[1.0] - latents[0.0])
    assert not torch.allclose(latents[0.0], latents[1.0])  # the prompt matters
    assert torch.allclose(latents[4.0], expected, atol=1e-4)


def test_long_prompt_is_truncated_with_a_warning(pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="one4d.pipeline.pipeline"):
        embeds, _ = pipe.encode_prompt("red car " * 400, "", do_classifier_free_guidance=False)
    assert embeds.shape[1] == 512
    assert any("truncated to 512" in record.getMessage() for record in caplog.records)


def test_check_inputs_names_the_problem(pipe):
    with pytest.raises(ValueError, match="4k \\+ 1"):
        pipe(frames(1), [0], 6, num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe(frames(1), [0], FRAMES, num_inference_steps=0, progress=False)
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe(frames(1), [0], FRAMES, guidance_scale=-1.0, progress=False)


# ----------------------------------------------------------------------------- loading real-weight layouts


@pytest.fixture(scope="module")
def trained_state(tmp_path_factory, pipe):
    """A trainable state with non-zero LoRA / links, and the reference output of that model loaded directly."""
    folder = tmp_path_factory.mktemp("state")
    model = load_pipeline().transformer
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for parameter in model.trainable_state_dict().values():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    save_trainable_state(model, folder)
    direct = One4DPipeline(model, scheduler=build_scheduler(), **vars(pipe.encoders))
    return folder, run(direct, frames(1), [0])


def test_diffusers_directory_with_state_equals_direct_weights(tmp_path, trained_state):
    folder, reference = trained_state
    build_tiny_directory(tmp_path / "wan", seed=0)
    loaded = load_pipeline(components=str(tmp_path / "wan"), state=str(folder))
    out = run(loaded, frames(1), [0])
    assert np.array_equal(out.rgb, reference.rgb) and np.array_equal(out.pointmaps, reference.pointmaps)


def test_original_wan_layout_shards_with_state_equal_direct_weights(tmp_path, trained_state):
    folder, reference = trained_state
    original = to_original_layout(build_tiny_components(seed=0)["transformer"])
    names = sorted(original)
    shards = tmp_path / "fun-inp"
    shards.mkdir()
    save_file({k: original[k] for k in names[: len(names) // 2]}, shards / "model-00001-of-00002.safetensors")
    save_file({k: original[k] for k in names[len(names) // 2 :]}, shards / "model-00002-of-00002.safetensors")
    build_tiny_directory(tmp_path / "wan", seed=5)  # other random transformer weights: the shards must win
    loaded = load_pipeline(components=str(tmp_path / "wan"), transformer=str(shards), state=str(folder))
    # The VAE / encoders of seed 5 differ from seed 0, so compare against the same encoders with the direct model.
    direct = One4DPipeline(load_pipeline(state=str(folder)).transformer, scheduler=build_scheduler(), **vars(loaded.encoders))
    out, expected = run(loaded, frames(1), [0]), run(direct, frames(1), [0])
    assert np.array_equal(out.rgb, expected.rgb) and np.array_equal(out.pointmaps, expected.pointmaps)
    assert not np.array_equal(out.rgb, reference.rgb)  # sanity: other encoders, other output


def test_checkpoint_for_another_preset_is_refused_before_loading(tmp_path, trained_state):
    folder, _ = trained_state
    with pytest.raises(ValueError, match="another base model"):
        load_pipeline(preset="wan2.1-fun-1.3b-inp", components=str(tmp_path), state=str(folder))


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_pth_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"patch_embedding.weight": _RunsCode()}, handle)
    with pytest.raises(ValueError, match="refusing to load"):
        load_pipeline(transformer=str(path))


# ----------------------------------------------------------------------------- the input fitting rule


def test_resampling_rule_keeps_first_and_last_and_maps_back():
    assert resample_indices(11, 5) == [0, 3, 5, 8, 10]
    assert resample_indices(3, 5) == [0, 1, 1, 2, 2]  # fewer input frames: repeated, nearest in time
    assert nearest_model_frames(11, 5) == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    assert model_size(40, 50, None, None) == (48, 48)  # nearest multiples of 16
    assert model_size(720, 1280, None, None, max_area=352 * 624) == (352, 624)
    assert model_size(720, 1280, 352, None) == (352, 624)  # width from the aspect ratio
    with pytest.raises(ValueError, match="multiple of 16"):
        model_size(720, 1280, 350, 624)


def test_explicit_sparse_frames_and_default_frame_count(tmp_path):
    import imageio.v2 as imageio

    for index, image in enumerate(frames(11, size=40)):
        imageio.imwrite(tmp_path / f"{index:03d}.png", image)
    source = read_input(tmp_path)
    assert source.frames.shape == (11, 40, 40, 3)
    conditions = prepare_conditions("sparse", source, frames=[0, 5, 10], height=32, width=32)
    assert conditions.num_frames == 9 and conditions.observed == [0, 4, 8]
    assert [conditions.source_frames[j] for j in conditions.observed] == [0, 5, 10]  # exactly the chosen input frames
    assert conditions.images.shape == (3, 32, 32, 3)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        prepare_conditions("sparse", source, num_frames=5, frames=[0, 1])  # both map to model frame 0
    with pytest.raises(ValueError, match="4k \\+ 1"):
        prepare_conditions("full", source, num_frames=8)
