"""The demo: the shipped checkpoint is checked file by file, the controls are what they say, and the inference path
runs end to end at reduced size with every control landing in summary.json and metrics.md."""

import json
from pathlib import Path
from types import SimpleNamespace

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from one4d import demo
from one4d.demo import (CHECKPOINT, ENTRIES, MANIFEST, DemoSettings, checkpoint_settings, main, run_demo, run_task,
                        static_camera_ate, verify_checkpoint, vae_ceiling, write_manifest)
from one4d.demo_controls import flat_colour, mean_camera_path, motion, psnr, training_prior

SHIPPED = Path(__file__).resolve().parents[1] / CHECKPOINT


def fake_checkpoint(root: Path) -> Path:
    folder = root / "tiny"
    (folder / "one4d").mkdir(parents=True)
    (folder / "one4d" / "trainable_state.safetensors").write_bytes(b"weights" * 100)
    (folder / "one4d" / "architecture.json").write_text("{}")
    write_manifest(folder)
    return folder


def test_verify_checkpoint_accepts_an_intact_folder(tmp_path):
    verify_checkpoint(fake_checkpoint(tmp_path))


def test_missing_file_names_the_file_and_the_rebuild_command(tmp_path):
    folder = fake_checkpoint(tmp_path)
    (folder / "one4d" / "architecture.json").unlink()
    with pytest.raises(ValueError, match=r"architecture\.json is missing.*make tiny-model") as error:
        verify_checkpoint(folder)
    assert "\n" not in str(error.value)


def test_corrupted_file_names_the_file_and_the_rebuild_command(tmp_path):
    folder = fake_checkpoint(tmp_path)
    path = folder / "one4d" / "trainable_state.safetensors"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"trainable_state\.safetensors is corrupted.*make tiny-model"):
        verify_checkpoint(folder)


def test_missing_manifest_and_the_entry_point_exit_code(tmp_path, capsys):
    with pytest.raises(ValueError, match=f"{MANIFEST} is missing.*make tiny-model"):
        verify_checkpoint(tmp_path / "nothing")
    assert main(["--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: shipped checkpoint file") and len(err.splitlines()) == 1


def test_more_or_other_held_out_scenes_from_the_command_line(tmp_path, capsys, monkeypatch):
    """--scenes / --first-seed reach run_demo as the settings' seeds (the checkpoint's sampler kept); a training seed or
    no scene is one line and exit 2; the defaults leave the demo's own settings alone."""
    calls = []

    def recorded(out, checkpoint, settings=None, log=print):
        calls.append(settings)
        raise ValueError("stop here")

    from one4d.sampling_file import write_sampling_file

    monkeypatch.setattr(demo, "run_demo", recorded)
    checkpoint = fake_checkpoint(tmp_path)
    write_sampling_file(checkpoint, "one4d", {"preset": "demo"}, {"num_frames": 13, "height": 32, "width": 48},
                        {"steps": 7, "cfg": 3.0, "shift": 4.0})
    write_manifest(checkpoint)
    assert main(["--scenes", "20", "--first-seed", "1000010", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "a")]) == 2
    assert calls[-1].seeds == tuple(range(1_000_010, 1_000_030))
    assert (calls[-1].steps, calls[-1].num_frames, calls[-1].flow_shift) == (7, 13, 4.0)  # the checkpoint's sampler kept
    main(["--out", str(tmp_path / "b")])
    assert calls[-1] is None  # run_demo picks the checkpoint's settings with the demo's seeds
    capsys.readouterr()
    for argv, message in ((["--first-seed", "5"], "training scenes"), (["--scenes", "0"], "at least 1"),
                          (["--first-seed", str(2**64)], "last seed")):
        assert main(argv + ["--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert len(calls) == 2  # refused before the model loads
    (checkpoint / "sampling.json").write_text("{")  # corrupted: the manifest names it before the file is parsed
    assert main(["--scenes", "2", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "d")]) == 2
    assert "make tiny-model" in capsys.readouterr().err and len(calls) == 2


def test_static_camera_ate_is_the_spread_around_the_centroid():
    poses = torch.eye(4).repeat(3, 1, 1)
    poses[:, 0, 3] = torch.tensor([0.0, 1.0, 2.0])
    assert static_camera_ate(poses) == pytest.approx((2 / 3) ** 0.5)


def test_shipped_checkpoint_is_intact_and_small():
    verify_checkpoint(SHIPPED)
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < 20 * 2**20


def test_settings_follow_the_checkpoints_sampling_file(tmp_path):
    from one4d.sampling_file import write_sampling_file

    write_sampling_file(tmp_path, "one4d", {"preset": "demo"}, {"num_frames": 13, "height": 32, "width": 48},
                        {"steps": 7, "cfg": 3.0, "shift": 4.0})
    settings = checkpoint_settings(tmp_path)
    assert (settings.num_frames, settings.height, settings.width, settings.steps) == (13, 32, 48, 7)
    assert (settings.guidance_scale, settings.flow_shift) == (3.0, 4.0)
    assert checkpoint_settings(tmp_path / "none") == DemoSettings()


# ----------------------------------------------------------------------------- the controls


def test_no_input_prior_is_the_mean_of_the_training_scenes():
    from one4d.data.synthetic import render_scene
    from one4d.geometry import invert_pose

    prior = training_prior(3, 16, 16, count=3)
    scenes = [render_scene(seed, 3, 16, 16) for seed in range(3)]
    assert prior.seeds == (0, 1, 2)
    torch.testing.assert_close(prior.depth, torch.stack([scene.depth for scene in scenes]).mean(0))
    paths = torch.stack([invert_pose(scene.world_to_camera.double()) for scene in scenes])  # (3, F, 4, 4)
    torch.testing.assert_close(prior.camera_to_world[:, :3, 3], paths[:, :, :3, 3].mean(0))
    rotations = prior.camera_to_world[:, :3, :3]
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3))


def test_mean_camera_path_of_one_path_is_that_path():
    from one4d.geometry import look_at

    path = torch.linalg.inv(look_at(torch.tensor([[0.0, 0, 0], [0.3, 0, 0.1], [0.6, 0.1, 0.3]], dtype=torch.float64),
                                    torch.tensor([[0.0, 0, 5], [1.0, 0, 5], [2.0, 0.5, 5]], dtype=torch.float64)))
    torch.testing.assert_close(mean_camera_path(path[None].repeat(4, 1, 1, 1)), path)


def test_rgb_measures():
    rgb = torch.rand(3, 8, 8, 3)
    assert psnr(rgb, rgb) > 100 and psnr(flat_colour(rgb), rgb) < 20
    assert motion(rgb[:1].repeat(3, 1, 1, 1)) == 0 and motion(rgb) > 0.1


class IdentityVAE(torch.nn.Module):
    """A VAE stand-in that reconstructs perfectly: latents are the video itself."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(z_dim=3, latents_mean=[0.0] * 3, latents_std=[1.0] * 3)

    def encode(self, video):
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: video))

    def decode(self, latents):
        return SimpleNamespace(sample=latents)


def test_vae_ceiling_of_a_perfect_vae_is_near_perfect():
    """The ceiling path (VAE round trip, the pipeline's post-optimisation, the demo's scoring) on an identity VAE:
    RGB far above the flat-colour floor and the true geometry back within the normalisation's clamping."""
    from one4d.data.synthetic import render_scene
    from one4d.geometry import pointmap_normalization
    from one4d.pipeline import One4DPipeline

    scene = render_scene(1_000_000, 5, 32, 32)
    norm = pointmap_normalization(scene.pointmaps, scene.depth > 0, 0.02)
    pipe = SimpleNamespace(vae=IdentityVAE(), recover_cameras=One4DPipeline.recover_cameras)
    ceiling = vae_ceiling(pipe, scene, norm, DemoSettings(postopt_iterations=5))
    assert psnr(ceiling.rgb, scene.rgb) > psnr(flat_colour(scene.rgb), scene.rgb) + 30
    assert ceiling.xyz_l1 == 0
    scores = demo.score_geometry(ceiling.depth, ceiling.camera_to_world, scene, list(range(5)))
    assert scores["abs_rel"] < 0.005 and scores["ate"] < 0.005  # measured 1e-4 and below


class SpyPipe:
    """Records what the sampler is fed and answers with a fixed plausible sample."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, observed, num_frames, prompt, generator, **_):
        self.calls.append({"images": np.asarray(images), "prompt": prompt, "seed": generator.initial_seed()})
        frames, height, width = num_frames, images.shape[1], images.shape[2]
        camera_to_world = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
        camera_to_world[:, 0, 3] = torch.arange(frames) * 0.1
        camera_to_world[:, 2, 3] = torch.arange(frames) ** 2 * 0.05
        depth = 2 + torch.linspace(0, 1, height)[None, :, None].expand(frames, height, width)
        return SimpleNamespace(rgb=np.full((1, frames, height, width, 3), 0.5), depth=depth[None].numpy(),
                               cameras=[SimpleNamespace(camera_to_world=camera_to_world)])


def test_wrong_input_control_feeds_another_scene_with_the_same_noise():
    from one4d.data.synthetic import render_scene

    settings = DemoSettings(num_frames=5, height=32, width=32)
    pipe = SpyPipe()
    own = run_task(pipe, "full", 1_000_000, settings, None)
    wrong = run_task(pipe, "full", 1_000_000, settings, None, input_seed=1_000_001)
    model_call, wrong_call = pipe.calls
    other = render_scene(1_000_001, 5, 32, 32)
    assert not np.array_equal(model_call["images"], wrong_call["images"]) and model_call["prompt"] != wrong_call["prompt"]
    np.testing.assert_array_equal(wrong_call["images"], (other.rgb * 255).round().to(torch.uint8).numpy())
    assert wrong_call["prompt"] == other.caption and wrong_call["seed"] == model_call["seed"] == 1_000_000
    assert own[0] is wrong[0]  # scored against the TRUE scene: same output, same score
    assert own[3]["abs_rel"] == wrong[3]["abs_rel"]
    assert demo.wrong_input_seed((5, 6, 7), 2) == 5 and demo.wrong_input_seed((5,), 0) == 6


# ----------------------------------------------------------------------------- the whole demo


def test_a_stopped_demo_leaves_no_folder(tmp_path, monkeypatch):
    """run_demo writes into a partial folder and publishes it only when complete."""
    def stopped(out, *args):
        (out / "metrics.md").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_run_demo_into", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "demo", SHIPPED, DemoSettings(), log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_demo_inference_path_and_controls_at_reduced_size(tmp_path):
    """All three tasks and every control through the real pipeline, post-optimisation and scoring: 2 scenes,
    5 frames at 32 x 32, 2 steps, a 4-scene prior; the wrong-input control on two tasks."""
    settings = DemoSettings(num_frames=5, height=32, width=32, steps=2, seeds=(1_000_000, 1_000_001), postopt_iterations=2,
                            wrong_input_tasks=("sparse", "full"), prior_scenes=4)
    summary = run_demo(tmp_path / "demo", SHIPPED, settings, log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # published, no partial folder left

    written = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert set(written["tasks"]) == {"single", "sparse", "full"} and set(written["entries"]) == set(ENTRIES)
    expected = {"model": ("abs_rel", "delta_1_25", "ate", "rgb_psnr", "motion"), "wrong_input": ("abs_rel", "ate", "rgb_psnr"),
                "no_input_prior": ("abs_rel", "delta_1_25", "ate"), "vae_ceiling": ("abs_rel", "ate", "rgb_psnr", "xyz_l1"),
                "constant_plane": ("abs_rel",), "static_camera": ("ate",), "flat_colour": ("rgb_psnr",), "true_clip": ("motion",)}
    for task, row in written["tasks"].items():
        scenes = 2 - row["model"]["failed_scenes"]  # a scene the model fails is dropped for every control (paired)
        for entry, keys in expected.items():
            if entry == "wrong_input" and task == "single":
                assert entry not in row  # not asked for this task
                continue
            for key in keys:
                stats = row[entry].get(key)  # a scene whose post-optimisation diverges is counted, not scored
                assert stats is not None or row[entry]["failed_scenes"] > 0, (task, entry, key)
                if stats is not None and stats["n"]:
                    assert stats["min"] <= stats["mean"] <= stats["max"] and stats["std"] >= 0, (task, entry, key)
                    assert stats["n"] + row[entry]["failed_scenes"] == (2 if entry == "model" else scenes)
        assert row["no_input_prior"]["abs_rel"]["n"] == scenes  # the prior never fails
        sampler = json.loads((tmp_path / "demo" / task / "summary.json").read_text())  # the sampler's own summary
        assert sampler["num_frames"] == 5 and sampler["height"] == 32
        with np.load(tmp_path / "demo" / task / "pointmaps.npz") as arrays:
            assert arrays["pointmaps"].shape == (5, 32, 32, 3)
    assert written["tasks"]["single"]["scored_frames"] == "observed frame 0 only"
    assert written["tasks"]["sparse"]["static_camera"]["ate"]["mean"] > 0
    assert {check["check"].split(":")[0] for check in written["checks"]} == {"VAE", "full", "sparse", "single"}

    table = (tmp_path / "demo" / "metrics.md").read_text()
    for label in ("wrong input", "no-input prior", "VAE ceiling", "VAE reconstruction", "flat mean colour", "constant depth",
                  "static camera", "no-input mean path", "true clip", "Issue 12's criteria"):
        assert label in table, label
    assert "| single | " in table and " - |" in table  # the single task's wrong-input cell is empty

    sheet = imageio.imread(tmp_path / "demo" / "contact_sheet.png")
    rows = 3 * 7 + 7  # seven rows per task, then the full task's controls on the same scene (3 wrong input + 4)
    assert sheet.shape[0] in (rows * 32 * 2, (rows - 3) * 32 * 2) and sheet.shape[2] == 3  # (its wrong input may diverge)
    assert sheet.shape[1] == demo.LABEL_WIDTH + 5 * 32 * 2 + demo.BAR_WIDTH


def test_shipped_vae_meets_issue_12_on_the_demo_scenes():
    """Issue 12's VAE criteria, measured as `make demo` measures them (the demo's vae_ceiling and scoring, its 10
    held-out scenes at the checkpoint's size): held-out RGB at least 8 dB above each frame's flat mean colour, and
    the true pointmaps through the VAE and the post-optimisation at most 0.02 depth Abs Rel (measured +9.00 dB, 0.019 with
    the decoder polished 1600 steps, RESULTS_tiny_model.md section 24; over 200 other held-out scenes +8.24 dB, 0.0194)."""
    from one4d.geometry import pointmap_normalization
    from one4d.pipeline import One4DPipeline

    settings = checkpoint_settings(SHIPPED)
    vae = demo.load_demo_pipeline(SHIPPED, settings).vae
    pipe = SimpleNamespace(vae=vae, recover_cameras=One4DPipeline.recover_cameras)
    gains, abs_rels = [], []
    for seed in settings.seeds:
        scene = demo.held_out_scene(seed, settings.num_frames, settings.height, settings.width)
        norm = pointmap_normalization(scene.pointmaps, scene.depth > 0, 0.02)
        ceiling = vae_ceiling(pipe, scene, norm, settings)
        gains.append(psnr(ceiling.rgb, scene.rgb) - psnr(flat_colour(scene.rgb), scene.rgb))
        frames = list(range(settings.num_frames))
        abs_rels.append(demo.score_geometry(ceiling.depth, ceiling.camera_to_world, scene, frames)["abs_rel"])
    assert len(gains) == 10 and np.mean(gains) >= 8, gains
    assert np.mean(abs_rels) <= 0.02, abs_rels
