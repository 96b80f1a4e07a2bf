"""benchmarks/bench_camera_sensitivity.py degrades true latents by known amounts and scores them the demo's way: level 0
is the VAE ceiling (no latent error), ``towards_mean`` at 1 is the mean latent itself, noise is seeded and scales with
the level, and a worse latent scores a worse depth on the same scenes."""

import pytest
import torch
from bench_scenes import CHECKPOINT, SETTINGS, SEEDS


@pytest.fixture(scope="module")
def bench(benchmarks_importable):
    import bench_camera_sensitivity

    return bench_camera_sensitivity


@pytest.fixture(scope="module")
def held_out(bench):
    """The shipped VAE, two held-out scenes, their normalisations, true XYZ latents and the VAE's decoded truth."""
    from one4d.encoding import decode_latents, encode_video, load_encoders

    vae = load_encoders(str(CHECKPOINT / "base")).vae.eval()
    rendered = [bench.held_out_scene(seed, SETTINGS) for seed in SEEDS]
    truth = encode_video(vae, torch.cat([item[2] for item in rendered]))  # (2, 16, 2, 12, 16)
    return vae, [item[0] for item in rendered], [item[3] for item in rendered], truth, decode_latents(vae, truth)


def test_degradations_are_what_their_names_say(bench):
    latents, mean = torch.randn(2, 16, 2, 3, 4), torch.randn(1, 16, 2, 3, 4)
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(bench.degrade(latents, mean, "towards_mean", 0.0, generator()), latents)
    assert torch.allclose(bench.degrade(latents, mean, "towards_mean", 1.0, generator()), mean.expand_as(latents), atol=1e-6)
    small, large = (bench.degrade(latents, mean, "noise", level, generator()) - latents for level in (0.1, 0.5))
    assert torch.allclose(large, 5 * small, atol=1e-6)  # the same seeded draw, scaled


def test_true_latents_score_the_vae_ceiling_and_the_mean_latent_scores_worse(bench, held_out):
    vae, scenes, norms, truth, true_xyz = held_out
    exact = bench.score_latents(vae, truth, truth, true_xyz, scenes, norms, iterations=5)
    blurred = bench.score_latents(vae, truth.mean(0, keepdim=True).expand_as(truth), truth, true_xyz, scenes, norms, iterations=5)
    print(exact, blurred)
    assert exact["latent_mse"] == 0 and exact["xyz_l1_vs_vae_roundtrip"] == 0 and exact["abs_rel"] < 0.03
    assert exact["ate"] < 0.05  # the VAE ceiling's cameras (0.032 on these two 5-frame scenes; 0.026 on the demo's 10)
    assert blurred["latent_mse"] > 0 and blurred["abs_rel"] > 2 * exact["abs_rel"]


def test_substitute_takes_only_the_named_part(bench):
    truth, estimate = torch.zeros(2, 3, 4, 2, 2), torch.ones(2, 3, 4, 2, 2)
    mixed = bench.substitute(truth, estimate, 1, [0, 1])  # channels x and y
    assert mixed[:, :2].eq(1).all() and mixed[:, 2].eq(0).all() and truth.eq(0).all()
    mixed = bench.substitute(truth, estimate, 2, [3])  # the last frame
    assert mixed[:, :, 3].eq(1).all() and mixed[:, :, :3].eq(0).all()


def test_error_parts_each_carry_part_of_the_error(bench, held_out):
    vae, scenes, norms, truth, true_xyz = held_out
    estimate = truth.mean(0, keepdim=True).expand_as(truth)  # a model that ignores its input
    whole = bench.score_latents(vae, estimate, truth, true_xyz, scenes, norms, iterations=5)
    parts = dict(bench.error_parts(vae, truth, true_xyz, estimate, torch.zeros_like(truth[:1]), scenes, norms, iterations=5))
    assert sorted(parts) == sorted(["estimate_minus_training_bias", "truth_with_estimated_latent_frame_0", "truth_with_estimated_latent_frame_1",
                                    "truth_with_estimated_x", "truth_with_estimated_y", "truth_with_estimated_z", "truth_with_estimated_xy",
                                    "truth_with_estimated_frame_0", "truth_with_estimated_frames_1_to_4",
                                    "truth_with_estimated_along_ray", "truth_with_estimated_across_ray"])
    assert parts["estimate_minus_training_bias"] == whole  # a zero bias leaves the estimate
    for name, scores in parts.items():
        if name != "estimate_minus_training_bias":
            assert 0 < scores["xyz_l1_vs_vae_roundtrip"] < whole["xyz_l1_vs_vae_roundtrip"], name
    assert parts["truth_with_estimated_z"]["abs_rel"] > 2 * parts["truth_with_estimated_xy"]["abs_rel"]  # depth is the z channel
    assert parts["truth_with_estimated_along_ray"]["ate"] < 0.05  # moving points along their rays leaves the cameras


def test_ray_split_separates_depth_from_off_ray_error(bench):
    points = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 1.0]]).T.reshape(3, 1, 1, 2)  # (3, F=1, H=1, W=2)
    centres = torch.zeros(1, 3)
    along, across = bench.ray_split(torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 1.0]]).T.reshape(3, 1, 1, 2), points, centres)
    assert torch.allclose(along[:, 0, 0, 0], torch.tensor([0.0, 0.0, 0.5])) and torch.allclose(across[:, 0, 0, 0], torch.zeros(3))
    assert torch.allclose(along[:, 0, 0, 1], torch.tensor([0.5, 0.0, 0.5])) and torch.allclose(across[:, 0, 0, 1], torch.tensor([-0.5, 0.0, 0.5]))


def test_change_fraction_is_how_far_each_frame_moves_from_frame_0(bench):
    truth = torch.randn(2, 3, 4, 5, 6)
    half = truth[:, :, :1] + 0.5 * (truth - truth[:, :, :1])  # every frame moved half as far as the truth
    lam, leftover = bench.change_fraction(half, truth)
    assert lam.shape == (2, 3) and torch.allclose(lam, torch.full((2, 3), 0.5)) and leftover.abs().max() < 1e-10
    lam, _ = bench.change_fraction(truth[:, :, :1].expand_as(truth), truth)  # frozen at frame 0
    assert lam.abs().max() < 1e-6
    lam, leftover = bench.change_fraction(truth, truth)
    assert torch.allclose(lam, torch.ones(2, 3)) and leftover.abs().max() < 1e-10
    lam, leftover = bench.change_fraction(truth + torch.randn_like(truth), truth)  # error off the change: leftover
    assert leftover.min() > 0.1
