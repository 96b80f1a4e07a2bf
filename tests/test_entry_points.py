"""The error contract of every script in scripts/ (one4d.runtime): bad input is one line and exit 2; SIGINT and
SIGTERM remove partial outputs and exit 130 / 143 with one line. Each script runs as a user runs it, in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "checkpoints" / "tiny"

# script -> bad command lines, each with a phrase its one line must hold ({tmp}: a fresh temporary folder).
BAD_INPUTS = {
    "ablation.py": [(["--checkpoint", "{tmp}/nope"], "MANIFEST.json is missing"), (["--steps", "x"], "invalid int value")],
    "cache_latents.py": [([], "+cache_dir"), (["nonsense=1"], "Could not override 'nonsense'")],
    "caption_clips.py": [(["clips={tmp}", "captioner.model={tmp}/no_model"], "no_model")],
    "demo.py": [(["--out", "/proc/nope"], "cannot be written"), (["--threads", "0"], "threads must be a positive"),
                (["--bad"], "unrecognized arguments")],
    "eval.py": [(["benchmark=nope"], "available: bonn, sintel, tum"), (["benchmark=sintel", "root={tmp}/nope"], "not a directory")],
    "export_lora.py": [(["checkpoint={tmp}/nope", "out={tmp}/lora.safetensors"], "nope")],
    "inspect_model.py": [(["--architecture", "nope"], "invalid choice")],
    "make_dataset.py": [(["--out", "{tmp}/d", "--num-clips", "0"], "num_clips must be at least 1"), ([], "--out")],
    "make_tiny_components.py": [([str(ROOT / "scripts")], "is not empty")],
    "make_tiny_model.py": [(["--stages", "nope"], "unknown stages")],
    "postopt.py": [([], "input="), (["input={tmp}/nope"], "no such file"), (["input={tmp}", "fps=abc"], "fps must be")],
    "prepare_data.py": [(["source=nope", "root={tmp}", "out={tmp}/out"], "nope")],
    "sample.py": [(["input={tmp}/nope.png"], "does not exist"), (["input={tmp}/nope.png", "num_frames=abc"], "num_frames"),
                  (["nonsense=1"], "Could not override 'nonsense'")],
    "train.py": [([], "data.roots is empty"), (["experiment=nope"], "available:")],
    "view.py": [(["{tmp}", "--port", "99999"], "--port must be"), (["{tmp}"], "not a One4D output folder"), ([], "required")],
}


def run(script: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("HYDRA_FULL_ERROR", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run([sys.executable, f"scripts/{script}", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_every_script_has_a_bad_input_list():
    assert sorted(path.name for path in (ROOT / "scripts").glob("*.py")) == sorted(BAD_INPUTS)


@pytest.mark.parametrize("script, args, phrase", [(script, args, phrase) for script, cases in BAD_INPUTS.items()
                                                  for args, phrase in cases])
def test_bad_input_is_one_line_and_exit_2(script, args, phrase, tmp_path):
    result = run(script, [arg.replace("{tmp}", str(tmp_path)) for arg in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert phrase in lines[0]


def _start_and_signal(command: list[str], partial_glob: Path, signum: int, delay: float = 1.0) -> subprocess.CompletedProcess:
    """Start a script, wait until its partial output exists, send ``signum`` ``delay`` seconds later and collect what
    it printed."""
    env = {key: value for key, value in os.environ.items() if key not in ("HYDRA_FULL_ERROR", "MAKEFLAGS", "MAKELEVEL")}
    # A shell without job control starts background jobs with SIGINT ignored, and the child would inherit that
    # (then Python installs no KeyboardInterrupt handler): give it the default disposition, as a terminal would.
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list(partial_glob.parent.glob(partial_glob.name)):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no partial output appeared"
        time.sleep(0.01)
    time.sleep(delay)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_sample_stopped_by_a_signal_removes_its_partial_output(signum, code, word, tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "out"
    result = _start_and_signal(["scripts/sample.py", "task=single", f"input={image}", f"checkpoint={TINY}", "steps=400",
                                "cfg=2", "shift=2",  # two passes a step, no repeated UniPC timesteps: still sampling 1 s later
                                f"out={out}", "progress=false"], tmp_path / ".out.partial-*", signum)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr[-2000:]
    assert lines and lines[-1].startswith(word), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["photo.png"]  # neither out nor its partial folder


def test_demo_stopped_by_sigterm_leaves_nothing(tmp_path):
    out = tmp_path / "demo"
    result = _start_and_signal(["scripts/demo.py", "--out", str(out)], tmp_path / ".demo.partial-*", signal.SIGTERM)
    assert result.returncode == 143, result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_training_stopped_by_sigterm_leaves_only_complete_checkpoints(tmp_path):
    from one4d.data.synthetic import write_synthetic_dataset
    from one4d.training.checkpointing import list_checkpoints, verify

    write_synthetic_dataset(tmp_path / "data", num_clips=2, num_frames=5, height=32, width=32)
    run_dir = tmp_path / "run"
    result = _start_and_signal(["scripts/train.py", "experiment=tiny_cpu", f"data.roots=[{tmp_path / 'data'}]", f"run_dir={run_dir}",
                                "train.steps=100000", "train.checkpoint_every=1", "train.progress_bar=false", "train.log_every=0"],
                               run_dir / "checkpoints" / ".tmp-*", signal.SIGTERM, delay=0)  # while it writes a checkpoint
    assert result.returncode == 143, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if line.strip()][-1].startswith("terminated")
    checkpoints = run_dir / "checkpoints"
    assert not [path.name for path in checkpoints.iterdir() if path.name.startswith(".tmp-")]
    assert all(verify(folder) is None for folder in list_checkpoints(checkpoints))  # those published are complete


def test_steps_the_scheduler_cannot_step_through_are_one_line(tmp_path):
    """400 UniPC steps at flow shift 30 (the shipped checkpoint's) repeat integer timesteps, and diffusers' UniPC then
    failed an internal assert mid-sampling with a traceback; the pipeline refuses them before the first step."""
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(image)
    result = run("sample.py", ["task=single", f"input={image}", f"checkpoint={TINY}", "steps=400", f"out={tmp_path / 'out'}",
                               "progress=false"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # after the weights' loading bars
    assert result.returncode == 2 and len(errors) == 1 and "repeated integer timesteps" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
