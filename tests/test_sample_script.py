"""scripts/sample.py: the whole path on the tiny preset, the output folder, and bad input (exit 2, one line, no model loaded)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from one4d.models import build_model, save_trainable_state
from one4d.pipeline import cli, outputs
from one4d.pipeline.outputs import read_ply, write_movie

ROOT = Path(__file__).resolve().parents[1]
FAST = ["steps=2", "num_frames=5", "height=32", "width=32", "progress=false", "postopt.iterations=3"]


def config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("sample", overrides=list(overrides))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    imageio.imwrite(folder / "image.png", (rng.random((40, 56, 3)) * 255).astype(np.uint8))
    writer = imageio.get_writer(folder / "clip.mp4", fps=12, codec="libx264", macro_block_size=1, ffmpeg_log_level="error")
    for _ in range(9):
        writer.append_data((rng.random((36, 36, 3)) * 255).astype(np.uint8))
    writer.close()
    (folder / "notes.txt").write_text("not an image")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 50)
    (folder / "not_a_dir").write_text("a file")
    state = folder / "tiny_state"
    save_trainable_state(build_model("dlc", "tiny", lora_rank=8), state)
    (folder / "components").mkdir()
    return folder


def test_full_task_writes_a_complete_output_folder(tmp_path, inputs):
    out = tmp_path / "out"
    code = cli.sample(config("task=full", f"input={inputs / 'clip.mp4'}", f"out={out}", "ply_stride=2", *FAST))
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"rgb.mp4", "xyz.mp4", "depth.mp4", "pointmaps.npz", "cameras.json", "trajectory.txt", "depth.npz", "ply", "summary.json"} <= names
    with np.load(out / "pointmaps.npz") as archive:
        assert archive["pointmaps"].shape == (5, 32, 32, 3) and archive["rgb"].shape == (5, 32, 32, 3)
        assert archive["observed"].all()
        assert archive["source_frames"].tolist() == [0, 2, 4, 6, 8]  # 9 input frames -> 5 model frames
        assert archive["input_to_model"].tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "full" and summary["fps"] == 12.0 and summary["settings"]["steps"] == 2
    points, colours = read_ply(out / "ply" / "frame_000004.ply")
    assert points.shape == colours.shape == (16 * 16, 3)
    assert len((out / "trajectory.txt").read_text().split("\n")) >= 5
    assert len(imageio.mimread(out / "rgb.mp4")) == 5
    # Running again into a previous One4D output replaces it; nothing half-written is left beside it.
    assert cli.sample(config("task=single", f"input={inputs / 'image.png'}", f"out={out}", "postopt.enabled=false", *FAST)) == 0
    assert json.loads((out / "summary.json").read_text())["task"] == "single" and not (out / "cameras.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_while_sampling_leaves_no_output_folder(tmp_path, inputs, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cli, "write_outputs", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        cli.sample(config("task=single", f"input={inputs / 'image.png'}", f"out={tmp_path / 'out'}", *FAST))
    assert list(tmp_path.iterdir()) == []


BAD = {
    "missing input": (["task=single", "input={inputs}/nope.png"], "does not exist"),
    "text file as image": (["task=single", "input={inputs}/notes.txt"], "cannot be read as an image"),
    "corrupt video": (["task=full", "input={inputs}/corrupt.mp4"], "cannot be decoded"),
    "sparse with one frame": (["task=sparse", "input={inputs}/image.png"], "at least 2 frames"),
    "unknown task": (["task=dense", "input={inputs}/image.png"], "unknown task"),
    "steps <= 0": (["task=single", "input={inputs}/image.png", "steps=0"], "steps must be positive"),
    "negative cfg": (["task=single", "input={inputs}/image.png", "cfg=-2"], "cfg"),
    "frame count not 4k+1": (["task=full", "input={inputs}/clip.mp4", "num_frames=6"], "4k \\+ 1"),
    "checkpoint of another preset": (
        ["task=single", "input={inputs}/image.png", "model=wan2.1-fun-1.3b-inp", "model.components={inputs}/components",
         "model.transformer_from_components=true",
         "checkpoint={inputs}/tiny_state"], "another base model"),
    "unwritable output": (["task=single", "input={inputs}/image.png", "out={inputs}/not_a_dir/out"], "cannot be written"),
    "output folder holding other files": (["task=single", "input={inputs}/image.png", "out={inputs}"], "not a One4D output"),
    "no input": (["task=single"], "input"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2_before_any_model_loads(case, inputs, tmp_path, monkeypatch, capsys):
    overrides, message = BAD[case]
    overrides = [o.format(inputs=inputs) for o in overrides]
    if not any(o.startswith("out=") for o in overrides):
        overrides.append(f"out={tmp_path / 'out'}")

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr("one4d.pipeline.loading.load_pipeline", no_loading)
    assert cli.sample(config(*overrides)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ")
    assert __import__("re").search(message, error[0]), error[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_script_reports_bad_input_without_a_traceback(tmp_path, inputs):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sample.py"), "task=sparse", f"input={inputs / 'image.png'}", f"out={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: task=sparse needs a video or frame folder with at least 2 frames, {inputs / 'image.png'} has 1"
    assert list(tmp_path.iterdir()) == []  # hydra writes nothing into the working directory either


def test_gif_fallback_without_ffmpeg(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(outputs, "ffmpeg_available", lambda: False)
    path = write_movie(tmp_path / "rgb.mp4", np.zeros((3, 16, 16, 3), dtype=np.uint8), fps=8)
    assert path.name == "rgb.gif" and path.is_file() and not (tmp_path / "rgb.mp4").exists()
    assert "ffmpeg is not available" in capsys.readouterr().out


@pytest.mark.parametrize("overrides, message", [
    (["num_frames=abc"], "num_frames must be a whole number or null, got 'abc'"),
    (["num_frames=1"], "post-optimisation needs a video .* or postopt.enabled=false"),
    (["height=1.5"], "height must be a whole number or null"),
])
def test_frame_counts_and_sizes_that_cannot_run_are_one_line_before_loading(tmp_path, inputs, overrides, message, capsys):
    code = cli.sample(config("task=single", f"input={inputs / 'image.png'}", f"out={tmp_path / 'out'}", *overrides))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "out").exists()


def test_eval_predictor_device_defaults_to_what_is_there():
    from hydra import compose as compose_eval

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        assert compose_eval("eval", overrides=["root=x"]).model_predictor.device == "auto"
    assert str(cli.resolve_device("auto")) == ("cuda" if __import__("torch").cuda.is_available() else "cpu")
