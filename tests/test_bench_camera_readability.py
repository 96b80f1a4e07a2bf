"""benchmarks/bench_camera_readability.py scores cameras the demo's way: a regressor that returns each scene's TRUE
relative poses rebuilds its path and scores ATE 0 (the 6-D packing and Gram-Schmidt invert each other), one that returns another scene's
poses scores that path's ATE; the One4D branch features it reads are the (D, f, h/p_h, w/p_w) token grid of the checkpoint's
preset (one token per latent pixel for the shipped demo_patch1), its XYZ estimate the latent grid."""

import pytest
import torch
from bench_scenes import CHECKPOINT, SETTINGS, SEEDS


@pytest.fixture(scope="module")
def bench(benchmarks_importable):
    import bench_camera_readability

    return bench_camera_readability


@pytest.fixture(scope="module")
def encoders():
    from one4d.encoding import load_encoders

    return load_encoders(str(CHECKPOINT / "base"))


class Fixed(torch.nn.Module):
    """Returns the standardised target stored for whichever input comes in."""

    def __init__(self, pairs):
        super().__init__()
        self.pairs = pairs

    def forward(self, inputs):
        return next(target for key, target in self.pairs if torch.equal(key, inputs[0]))[None]


def test_true_poses_score_zero_and_another_scenes_poses_score_their_ate(bench, encoders):
    from one4d.demo import true_camera_path
    from one4d.eval import pose_metrics

    items = bench.encoded_scenes(CHECKPOINT, encoders, SEEDS, SETTINGS, "rgb_latents")
    assert items[0][0].shape == (16, 2, 12, 16) and items[0][1].shape == (4, 9)
    for _, target, scene, scale in items:  # the packing and the Gram-Schmidt invert each other, rotations and scale too
        assert torch.allclose(bench.pose_path(target, scale), true_camera_path(scene), atol=1e-5)
    mean, std = torch.zeros(4, 9), torch.ones(4, 9)
    oracle = Fixed([(latents, target.reshape(-1)) for latents, target, _, _ in items])
    assert bench.mean_ate(oracle, items, mean, std) < 1e-5
    # Each scene given the OTHER scene's path scores what pose_metrics gives those two paths (and clearly more than 0).
    swapped = Fixed([(items[0][0], items[1][1].reshape(-1)), (items[1][0], items[0][1].reshape(-1))])
    paths = [true_camera_path(scene) for _, _, scene, _ in items]
    expected = (pose_metrics(paths[1], paths[0])["ate"] + pose_metrics(paths[0], paths[1])["ate"]) / 2
    assert bench.mean_ate(swapped, items, mean, std) == pytest.approx(expected, rel=1e-4)
    assert expected > 0.01


def test_branch_features_are_the_token_grid_and_differ_between_branches(bench, encoders):
    from one4d.demo import checkpoint_preset
    from one4d.models import preset_config

    _, patch_h, patch_w = preset_config(checkpoint_preset(CHECKPOINT))["patch_size"]
    grid = (2, 12 // patch_h, 16 // patch_w)  # latent frames x the 12 x 16 latent grid in tokens
    xyz = bench.branch_features(CHECKPOINT, encoders, SEEDS, SETTINGS, "xyz_branch")
    rgb = bench.branch_features(CHECKPOINT, encoders, SEEDS, SETTINGS, "rgb_branch")
    assert xyz.shape == rgb.shape == (2, 128, *grid)
    assert not torch.allclose(xyz, rgb) and not torch.allclose(xyz[0], xyz[1])
    net = bench.camera_regressor(128, SETTINGS["num_frames"], grid)
    assert net(xyz).shape == (2, 4 * 9)
    # The one-step XYZ estimate is on the latent grid, near the true latents (the model was trained for it) but not them.
    estimate = bench.branch_features(CHECKPOINT, encoders, SEEDS, SETTINGS, "xyz_estimate")
    true = torch.stack([item[0] for item in bench.encoded_scenes(CHECKPOINT, encoders, SEEDS, SETTINGS, "xyz_latents")])
    assert estimate.shape == true.shape == (2, 16, 2, 12, 16)
    error, spread = (estimate - true).pow(2).mean(), true.pow(2).mean()
    assert 0 < error < spread
