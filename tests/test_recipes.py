"""Every recipe in configs/experiment/ run the way its users run it, at tiny width and depth on the CPU.

Each keeps its recipe's precision, launcher, gradient checkpointing, checkpoints and validation; only the
sizes (model preset, frames, resolution, steps) shrink. ``one4d_14b`` is the paper's: bf16 base, DeepSpeed
ZeRO-2 on 2 processes (torchrun, gloo), from raw clips and from a latent cache written by
``scripts/cache_latents.py``, then ``scripts/sample.py`` in bf16 on its checkpoint. A recipe whose real
caller hands the model something the model cannot take (fp32 embeddings to a bf16 base) fails here.
The tiny-model stages (``tiny_base``, ``tiny_one4d``) run in tests/test_tiny_model.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from one4d.training.testing import write_synthetic_clips

ROOT = Path(__file__).resolve().parents[1]
# The recipe at tiny width and depth: everything else (dtype, launcher, checkpointing, grad_accum, LoRA rank) as shipped.
TINY = [
    "model.preset=tiny", "model.components=tiny", "data.num_frames=5",
    "data.height=32", "data.width=32", "data.num_workers=1", "train.report_to=null", "train.progress_bar=false",
    "train.log_every=1", "train.validation.num_steps=2",
]
COVERED_HERE = {"one4d_14b", "one4d_1.3b", "tiny_cpu"}
COVERED_ELSEWHERE = {"tiny_base", "tiny_one4d"}  # tests/test_tiny_model.py runs both through make_tiny_model


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_synthetic_clips(tmp_path_factory.mktemp("clips"), count=4, num_frames=5, size=32)


def run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def torchrun(script: str, *overrides: str, port: int) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                str(ROOT / "scripts" / script), *overrides])


def sample_bf16(checkpoint: Path, out: Path, *overrides: str) -> dict:
    """``scripts/sample.py`` on a tiny-preset checkpoint in bf16, at the training size; returns its summary.json."""
    run([sys.executable, str(ROOT / "scripts" / "sample.py"), f"checkpoint={checkpoint}", "model.preset=tiny", "model.dtype=bfloat16",
         "num_frames=5", "height=32", "width=32", "steps=2", "cfg=2", "progress=false", f"out={out}", *overrides])
    return json.loads((out / "summary.json").read_text())


def check_run(run_dir: Path, steps: int, validated: bool) -> dict:
    """The run wrote its final checkpoint (trained weights) and, if asked, its validation videos; returns the config."""
    checkpoint = run_dir / "checkpoints" / f"step-{steps:07d}"
    assert (checkpoint / "manifest.json").is_file()
    weights = load_file(checkpoint / "trainable" / "trainable_state.safetensors")
    assert any("lora_B" in name and weights[name].abs().sum() > 0 for name in weights), "training moved no LoRA weight"
    assert all(torch.isfinite(value).all() for value in weights.values())
    videos = sorted(path.name for path in (run_dir / "validation").glob(f"step-{steps:07d}_*.mp4")) if validated else []
    assert videos == ([f"step-{steps:07d}_depth.mp4", f"step-{steps:07d}_rgb.mp4"] if validated else [])
    return OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))


def test_every_experiment_has_a_recipe_test():
    shipped = {path.stem for path in (ROOT / "configs" / "experiment").glob("*.yaml")}
    assert shipped == COVERED_HERE | COVERED_ELSEWHERE


@pytest.mark.multicore
def test_paper_recipe_bf16_zero2_two_processes_with_validation_then_sample_in_bf16(clips, tmp_path):
    run_dir = tmp_path / "run"
    torchrun("train.py", "experiment=one4d_14b", *TINY, f"data.roots=[{clips}]", f"run_dir={run_dir}", "train.steps=2",
             "train.checkpoint_every=2", "train.validate_every=2", port=29600 + os.getpid() % 200)
    cfg = check_run(run_dir, steps=2, validated=True)
    assert cfg["model"]["dtype"] == "bfloat16" and cfg["model"]["encoder_dtype"] == "bfloat16"
    assert cfg["launcher"]["kind"] == "deepspeed" and cfg["launcher"]["deepspeed"]["zero_optimization"]["stage"] == 2
    assert cfg["train"]["gradient_checkpointing"] and cfg["train"]["grad_accum"] == 4 and cfg["model"]["lora_rank"] == 64

    summary = sample_bf16(run_dir / "checkpoints" / "step-0000002", tmp_path / "sample", "task=sparse",
                          f"input={clips / 'clip000' / 'rgb'}", "postopt.iterations=3")
    assert summary["settings"]["model"]["dtype"] == "bfloat16" and (tmp_path / "sample" / "pointmaps.npz").is_file()


@pytest.mark.multicore
def test_paper_recipe_with_fp8_base_from_a_latent_cache_then_sample_fp8_group_offloaded(clips, tmp_path):
    """The 48 GB variant: the frozen base stored in fp8 (bf16 compute), trained on ``scripts/cache_latents.py``'s cache,
    checkpointed, and resumed on another process count (DeepSpeed's universal checkpoint, the global batch kept); then
    the 24 GB sampling variant: fp8 base, blocks group-offloaded."""
    cache = tmp_path / "cache"
    recipe = ["experiment=one4d_14b", *TINY, f"data.roots=[{clips}]", "model.base_storage_dtype=float8_e4m3fn"]
    run([sys.executable, str(ROOT / "scripts" / "cache_latents.py"), *recipe, f"+cache_dir={cache}", f"run_dir={tmp_path / 'unused'}"])
    run_dir = tmp_path / "run"
    train = [*recipe, f"data.cache={cache}", f"run_dir={run_dir}", "train.checkpoint_every=1", "train.validate_every=1",
             "train.global_batch_size=2"]
    torchrun("train.py", *train, "train.steps=1", port=29800 + os.getpid() % 150)
    check_run(run_dir, steps=1, validated=True)
    step1 = load_file(run_dir / "checkpoints" / "step-0000001" / "trainable" / "trainable_state.safetensors")
    # resume the fp8 run's checkpoint (DeepSpeed state without the frozen fp8 base) on one process, one more step
    run([sys.executable, str(ROOT / "scripts" / "train.py"), *train, "train.steps=2", "train.resume=latest"])
    check_run(run_dir, steps=2, validated=True)
    step2 = load_file(run_dir / "checkpoints" / "step-0000002" / "trainable" / "trainable_state.safetensors")
    assert step1.keys() == step2.keys() and any(not torch.equal(step1[k], step2[k]) for k in step1)
    # the optimizer continued (Adam's step 2, not a fresh optimizer's 1): its partitions were loaded
    partition = run_dir / "checkpoints" / "step-0000002" / "deepspeed" / "state" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    with torch.serialization.safe_globals([LossScaler, ZeroStageEnum, fragment_address]):  # DeepSpeed's own types only
        optimizer = torch.load(partition, map_location="cpu", weights_only=True)["optimizer_state_dict"]["base_optimizer_state"]
    assert {int(state["step"]) for state in optimizer["state"].values()} == {2}

    summary = sample_bf16(run_dir / "checkpoints" / "step-0000001", tmp_path / "sample", "task=single",
                          f"input={clips / 'clip000' / 'rgb' / '000000.png'}", "model.base_storage_dtype=float8_e4m3fn",
                          "memory.group_offload=true", "postopt.enabled=false")
    assert summary["settings"]["memory"]["group_offload"] is True


@pytest.mark.multicore
def test_1_3b_recipe_bf16_ddp_two_processes_with_validation(clips, tmp_path):
    run_dir = tmp_path / "run"
    torchrun("train.py", "experiment=one4d_1.3b", *TINY, f"data.roots=[{clips}]", f"run_dir={run_dir}", "train.steps=1",
             "train.checkpoint_every=1", "train.validate_every=1", port=29950 + os.getpid() % 40)
    cfg = check_run(run_dir, steps=1, validated=True)
    assert cfg["model"]["dtype"] == "bfloat16" and cfg["train"]["mixed_precision"] == "bf16" and cfg["launcher"]["kind"] == "ddp"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_tiny_cpu_recipe(clips, tmp_path, dtype):
    run_dir = tmp_path / "run"
    run([sys.executable, str(ROOT / "scripts" / "train.py"), "experiment=tiny_cpu", *TINY, f"data.roots=[{clips}]",
         f"run_dir={run_dir}", "train.steps=2", "train.checkpoint_every=2", "train.validate_every=2", f"model.dtype={dtype}"])
    check_run(run_dir, steps=2, validated=True)


def test_deepspeed_start_up_names_the_extension_build_and_a_stale_lock(tmp_path, monkeypatch, caplog):
    from one4d.training.trainer import announce_extension_build

    assert os.environ["TORCH_EXTENSIONS_DIR"].endswith(os.path.join(".pytest_cache", "torch_extensions"))  # tests' own folder
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    with caplog.at_level("INFO", logger="one4d.training.trainer"):
        announce_extension_build("deepspeed_shm_comm")
    assert "the first run compiles it" in caplog.text and str(tmp_path) in caplog.text
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.write_text("")
    caplog.clear()
    with caplog.at_level("INFO", logger="one4d.training.trainer"):
        announce_extension_build("deepspeed_shm_comm")
    assert "an earlier build was killed" in caplog.text and str(lock) in caplog.text
