"""Exact resume: a run killed (SIGKILL) after a checkpoint and resumed equals the uninterrupted run bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from one4d.training import Trainer
from one4d.training.checkpointing import latest_valid, list_checkpoints
from one4d.training.testing import compose_train_config, write_synthetic_clips

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6


def overrides(clips, run_dir):
    return [
        "experiment=tiny_cpu", f"data.roots=[{clips}]", f"run_dir={run_dir}", "train.report_to=null", "train.progress_bar=false",
        f"train.steps={STEPS}", "train.checkpoint_every=2", "train.keep_last=2", "train.log_every=0",
        "+model.base_overrides.num_layers=2", "train.grad_accum=2",
    ]


def train_command(clips, run_dir, *extra):
    return [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides(clips, run_dir), *extra]


def final_weights(run_dir):
    return load_file(list_checkpoints(Path(run_dir) / "checkpoints")[-1] / "trainable" / "trainable_state.safetensors")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_synthetic_clips(tmp_path_factory.mktemp("clips"), count=3, num_frames=5, size=32)


def test_killed_and_resumed_run_equals_uninterrupted_run(clips, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = subprocess.run(train_command(clips, tmp_path / "reference"), env=env, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(train_command(clips, killed_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed_dir / "checkpoints" / "step-0000002").is_dir():  # kill mid-run, right after the first checkpoint
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert int(list_checkpoints(killed_dir / "checkpoints")[-1].name.split("-")[1]) < STEPS

    resumed = subprocess.run(train_command(clips, killed_dir, "train.resume=latest"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, found = final_weights(tmp_path / "reference"), final_weights(killed_dir)
    assert expected.keys() == found.keys()
    assert all(torch.equal(expected[name], found[name]) for name in expected)
    assert len(list_checkpoints(killed_dir / "checkpoints")) == 2  # keep_last
    # the loss curve travels with the checkpoints: the resumed run's holds every step, the uninterrupted run's values
    curves = [json.loads((list_checkpoints(run / "checkpoints")[-1] / "losses.json").read_text()) for run in (tmp_path / "reference", killed_dir)]
    assert len(curves[0]) == STEPS and curves[1] == curves[0]


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(clips, tmp_path, caplog):
    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    Trainer(compose_train_config(overrides(clips, run_dir) + ["train.steps=4"])).setup().train()
    older, latest = list_checkpoints(run_dir / "checkpoints")
    weights = latest / "trainable" / "trainable_state.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])  # a torn write
    assert latest_valid(run_dir / "checkpoints") == older
    assert "damaged" in caplog.text
    resumed = Trainer(compose_train_config(overrides(clips, run_dir) + ["train.steps=4", "train.resume=latest"])).setup()
    assert resumed.step == 2

    with pytest.raises(ValueError, match="not a usable checkpoint"):
        Trainer(compose_train_config(overrides(clips, tmp_path / "other") + [f"train.resume={latest}"])).setup()


def test_unfinished_checkpoint_is_never_picked(tmp_path):
    root = tmp_path / "checkpoints"
    (root / ".tmp-step-0000008").mkdir(parents=True)
    (root / "step-0000010").mkdir()  # renamed folder without manifest: not trusted either
    assert latest_valid(root) is None


def test_a_checkpoint_continues_on_any_process_count_with_its_global_batch_accumulation_and_seed(tmp_path):
    from one4d.training.checkpointing import convert_to_universal
    from one4d.training.trainer import check_resumable

    state = {"world_size": 2, "batch_size": 4, "grad_accum": 2, "seed": 0, "zero_stage": None}

    def run(world_size, batch_size, grad_accum=2, seed=0, zero_stage=None):
        return {"world_size": world_size, "batch_size": batch_size, "grad_accum": grad_accum, "seed": seed, "zero_stage": zero_stage}

    check_resumable(tmp_path, state, run(1, 8))  # DDP's 2 x 4 continues as one process of 8, or 4 x 2
    check_resumable(tmp_path, state, run(4, 2))
    with pytest.raises(ValueError, match=r"global batch of 2 processes x 4; this run has 1 x 4.*train.global_batch_size=8"):
        check_resumable(tmp_path, state, run(1, 4))
    with pytest.raises(ValueError, match=r"train.grad_accum=2; this run has 4: .*\(set train.grad_accum=2\)"):
        check_resumable(tmp_path, state, run(2, 4, grad_accum=4))
    with pytest.raises(ValueError, match=r"train.seed=0; this run has 1"):
        check_resumable(tmp_path, state, run(2, 4, seed=1))
    check_resumable(tmp_path, {"world_size": 2, "batch_size": 4, "seed": 0}, run(2, 4, grad_accum=4))  # older: no grad_accum
    with pytest.raises(ValueError, match="written without DeepSpeed; resume it with launcher=single or ddp"):
        check_resumable(tmp_path, state, run(2, 4, zero_stage=2))
    (tmp_path / "deepspeed" / "state").mkdir(parents=True)  # ZeRO's partitioned optimizer state
    state["zero_stage"] = 2
    check_resumable(tmp_path, state, run(1, 8, zero_stage=2))  # as a universal checkpoint
    with pytest.raises(ValueError, match="written under ZeRO-2; resume it with launcher=deepspeed_zero2"):
        check_resumable(tmp_path, state, run(2, 4, zero_stage=3))
    with pytest.raises(ValueError, match="written under DeepSpeed; resume it with launcher=deepspeed_zero2 or deepspeed_zero3"):
        check_resumable(tmp_path, state, run(2, 4))
    with pytest.raises(ValueError, match=r"converting .*state to a universal checkpoint failed: .*can't find \*_optim_states.pt files"):
        convert_to_universal(tmp_path / "deepspeed" / "state", tmp_path / "universal")  # no partitions in it
    assert not (tmp_path / "universal").exists()


def test_a_failed_or_interrupted_conversion_leaves_no_universal_copy(tmp_path, monkeypatch):
    """``convert_to_universal``: the converter's last line on failure, and nothing half-written left behind."""
    import subprocess

    from one4d.training import checkpointing

    out = tmp_path / "universal"

    def fails(command, **kwargs):
        (out / "zero").mkdir(parents=True)  # the converter got halfway
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="*** 1. Extracting ZeRO fragments\nMemoryError: out of RAM\n")

    monkeypatch.setattr(checkpointing.subprocess, "run", fails)
    with pytest.raises(ValueError, match=r"converting .* to a universal checkpoint failed: MemoryError: out of RAM$"):
        checkpointing.convert_to_universal(tmp_path / "state", out)
    assert not out.exists()

    def interrupted(command, **kwargs):
        (out / "zero").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing.subprocess, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpointing.convert_to_universal(tmp_path / "state", out)
    assert not out.exists()
