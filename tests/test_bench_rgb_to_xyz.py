"""benchmarks/bench_rgb_to_xyz.py scores a regressor's depth and cameras the demo's way: one that returns each scene's
TRUE XYZ latents scores the shipped VAE's ceiling, far below the no-input prior; one that returns the same latent for
every scene does not; a scene whose post-optimisation diverges is counted, not fatal."""

import pytest
import torch
from bench_scenes import CHECKPOINT, SETTINGS, SEEDS


@pytest.fixture(scope="module")
def bench(benchmarks_importable):
    import bench_rgb_to_xyz
    import bench_tiny_vae

    return bench_rgb_to_xyz, bench_tiny_vae


class Lookup(torch.nn.Module):
    """Returns the XYZ latents stored for whichever scene's RGB latents come in."""

    def __init__(self, pairs):
        super().__init__()
        self.pairs = pairs

    def forward(self, rgb):
        return next(xyz for key, xyz in self.pairs if torch.equal(key, rgb))


@torch.no_grad()
def test_depth_scores_follow_what_the_regressor_returns(bench):
    from one4d.encoding import encode_video, load_encoders

    rgb_to_xyz, tiny_vae = bench
    vae = load_encoders(str(CHECKPOINT / "base")).vae
    pairs = []
    for seed in SEEDS:
        _, rgb, xyz, _ = tiny_vae.held_out_scene(seed, SETTINGS)
        pairs.append((encode_video(vae, rgb), encode_video(vae, xyz)))
    truth = rgb_to_xyz.depth_scores(Lookup(pairs), vae, SETTINGS, SEEDS)
    swapped = rgb_to_xyz.depth_scores(Lookup([(pairs[0][0], pairs[1][1]), (pairs[1][0], pairs[0][1])]), vae, SETTINGS, SEEDS)
    assert truth["prior_abs_rel"] == swapped["prior_abs_rel"]  # the prior does not depend on the regressor
    assert truth["regressor_abs_rel"] < 0.03 and truth["regressor_frame0_z_abs_rel"] < 0.03  # the VAE's ceiling
    assert truth["regressor_abs_rel"] < 0.5 * truth["prior_abs_rel"]
    assert swapped["regressor_abs_rel"] > 2 * truth["regressor_abs_rel"]  # another scene's geometry scores worse
    assert truth["mean_path_ate"] == swapped["mean_path_ate"] > 0  # the mean path does not depend on the regressor
    assert truth["regressor_ate"] < 0.05 and swapped["regressor_ate"] > 2 * truth["regressor_ate"]  # the cameras too


class Negate(torch.nn.Module):
    """A regressor that has learnt nothing useful: its pointmaps are no camera's view for some scenes."""

    def forward(self, rgb):
        return -rgb


@torch.no_grad()
def test_a_diverged_scene_is_counted_not_fatal(bench):
    from one4d.encoding import load_encoders

    rgb_to_xyz, _ = bench
    seeds = (1_000_000, 1_000_003)
    scores = rgb_to_xyz.depth_scores(Negate(), load_encoders(str(CHECKPOINT / "base")).vae, SETTINGS, seeds)
    assert scores["diverged"] == 1  # seed 1,000,003's pointmaps fit no pinhole camera; 1,000,000 is still scored
    assert scores["regressor_abs_rel"] > 0.2 and scores["prior_abs_rel"] > 0  # finite: half its depths are 0


def test_what_the_regressor_knows_of_pixel_positions(bench):
    """``none`` cannot tell one column or row from another (a circular shift of the input shifts its output alike);
    ``borders`` and ``coordinates`` can, through the zero padding and the coordinate channels."""
    rgb_to_xyz, _ = bench
    torch.manual_seed(0)
    latents = torch.randn(2, 16, 3, 6, 8)
    for positions in ("none", "borders", "coordinates"):
        net = rgb_to_xyz.regressor(width=8, layers=3, positions=positions)
        with torch.no_grad():
            shifted_output = torch.roll(net(latents), shifts=(2, 3), dims=(3, 4))
            output_of_shifted = net(torch.roll(latents, shifts=(2, 3), dims=(3, 4)))
        assert output_of_shifted.shape == latents.shape
        equivariant = torch.allclose(shifted_output, output_of_shifted, atol=1e-5)
        assert equivariant == (positions == "none"), positions
    with pytest.raises(ValueError, match="positions must be one of"):
        rgb_to_xyz.regressor(positions="absolute")
