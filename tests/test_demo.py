"""The demo: the shipped checkpoint is checked file by file, and the inference path runs end to end at reduced size."""

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from one4d.demo import CHECKPOINT, MANIFEST, DemoSettings, main, run_demo, static_camera_ate, verify_checkpoint, write_manifest

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


def test_static_camera_ate_is_the_spread_around_the_centroid():
    import torch

    poses = torch.eye(4).repeat(3, 1, 1)
    poses[:, 0, 3] = torch.tensor([0.0, 1.0, 2.0])
    assert static_camera_ate(poses) == pytest.approx((2 / 3) ** 0.5)


def test_shipped_checkpoint_is_intact_and_small():
    verify_checkpoint(SHIPPED)
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < 20 * 2**20


def test_demo_inference_path_at_reduced_size(tmp_path):
    """All three tasks through the real pipeline, post-optimisation and scoring, 5 frames at 32 x 32, 2 steps."""
    settings = DemoSettings(num_frames=5, height=32, width=32, steps=2, seeds=(1_000_000,), postopt_iterations=2)
    summary = run_demo(tmp_path / "demo", SHIPPED, settings, log=lambda line: None)

    written = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert set(written["tasks"]) == {"single", "sparse", "full"}
    for task, row in written["tasks"].items():
        for key in ("abs_rel", "delta_1_25", "ate", "baseline_abs_rel", "static_ate"):
            assert np.isfinite(row[key]), (task, key)
        assert 0 <= row["delta_1_25"] <= 1
        sampler = json.loads((tmp_path / "demo" / task / "summary.json").read_text())  # the sampler's own summary
        assert sampler["num_frames"] == 5 and sampler["height"] == 32
        with np.load(tmp_path / "demo" / task / "pointmaps.npz") as arrays:
            assert arrays["pointmaps"].shape == (5, 32, 32, 3)
    assert written["tasks"]["single"]["scored_frames"] == "observed frame 0 only"
    assert written["tasks"]["sparse"]["static_ate"] > 0

    sheet = imageio.imread(tmp_path / "demo" / "contact_sheet.png")
    assert sheet.shape[0] == 3 * 7 * 32 * 2 and sheet.shape[2] == 3  # three tasks x seven rows, zoom 2
    assert "constant depth" in (tmp_path / "demo" / "metrics.md").read_text()
