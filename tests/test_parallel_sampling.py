"""Sampling across CPU processes (torchrun, gloo, the shipped tiny model): CFG-parallel, Ulysses sequence parallel
(also with a token count the degree does not divide), their combination and data parallel over a jobs file give
the output of one process; layouts that cannot run are one line before any model loads.

How equal: the latents are not written, so the test compares what is: the float32 pointmaps (post-optimisation off,
so they are the XYZ latents decoded and un-normalised, nothing else) within 1e-5 relative to their range, and the
uint8 RGB within one level. Not bitwise, because the same sums are cut differently: CFG-parallel runs the DLC
forward at batch 1 instead of 2, Ulysses runs the linears on half the rows and attention on half the heads (CPU
GEMM and SDPA kernels block the work by shape), and padding adds masked keys (exp(-inf) = 0 terms) to the
softmax. Measured differences are about 5e-7; dropping the padding mask gives about 5e-2, so the test sees it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from one4d.parallel import ParallelLayout, check_token_count
from one4d.parallel.sequence import TokenPadding
from one4d.pipeline import cli

ROOT = Path(__file__).resolve().parents[1]
FAST = ["checkpoint=data/checkpoints/tiny", "steps=2", "num_frames=5", "height=32", "width=32", "progress=false",
        "postopt.enabled=false", "ply_stride=0",  # x4 VAE: 2 x 8 x 8 latents, 32 tokens a branch
        "cfg=2",  # guided (the checkpoint's sampling.json says CFG 1, one pass): CFG-parallel needs two passes
        "prompt=a red room"]  # not the checkpoint's negative prompt (""): the two guidance passes differ, so a swap shows
# The shipped tiny VAE is x4 in space, so its token counts at sizes in multiples of 16 are even; the random tiny
# model (x8 VAE) at 16 x 16 has 3 x 2 x 2 latents, patch 2: 3 tokens, padded to 4 on 2 ranks.
ODD = ["checkpoint=null", "num_frames=9", "height=16", "width=16"]


def sample(*overrides: str) -> int:
    """``scripts/sample.py`` in this process; the overrides are passed as given, so they win over the checkpoint's sampling.json."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("sample", overrides=list(overrides))
    return cli.sample(cfg, list(overrides))


def torchrun(processes: int, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(ROOT / "scripts" / "sample.py"), *FAST, *overrides]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    return result


def assert_same_clip(folder: Path, reference: Path) -> None:
    with np.load(folder / "pointmaps.npz") as got, np.load(reference / "pointmaps.npz") as want:
        scale = float(np.abs(want["pointmaps"]).max())
        np.testing.assert_allclose(got["pointmaps"], want["pointmaps"], rtol=1e-5, atol=1e-5 * scale)
        assert np.abs(got["rgb"].astype(int) - want["rgb"].astype(int)).max() <= 1


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "image.png"
    imageio.imwrite(path, (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8))
    return path


def one_process(out: Path, image: Path, *overrides: str) -> Path:
    assert sample(f"input={image}", f"out={out}", *FAST, *overrides) == 0
    return out


# ----------------------------------------------------------------------------- several processes


@pytest.mark.multicore
def test_data_parallel_times_cfg_parallel_over_a_jobs_file_equals_one_process(tmp_path, image):
    """4 processes = 2 data-parallel groups x CFG-parallel 2; a finished job is skipped, a bad line named."""
    lines = [json.dumps({"task": "single", "input": str(image), "prompt": p, "out": str(tmp_path / "par" / p), "seed": s})
             for p, s in (("a", 1), ("b", 2), ("c", 3))]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join([lines[0], "single\tonly three\tcolumns", *lines[1:]]) + "\n")
    (tmp_path / "par" / "c").mkdir(parents=True)
    (tmp_path / "par" / "c" / "summary.json").write_text("{}")  # finished before: left alone
    result = torchrun(4, f"inputs={jobs}", "parallel.cfg=2")
    assert result.returncode != 0 and f"error: {jobs} line 2: 3 tab-separated columns" in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("error: ") == 1  # one line, from one rank
    assert "jobs: 2 sampled, 1 already finished, 1 failed" in result.stdout, result.stdout[-2000:]
    assert (tmp_path / "par" / "c" / "summary.json").read_text() == "{}"
    for prompt, seed in (("a", 1), ("b", 2)):
        reference = one_process(tmp_path / "ref" / prompt, image, f"prompt={prompt}", f"seed={seed}")
        assert_same_clip(tmp_path / "par" / prompt, reference)
    assert sorted(p.name for p in (tmp_path / "par").iterdir()) == ["a", "b", "c"]  # nothing half-written beside them


@pytest.mark.multicore
def test_cfg_parallel_times_ulysses_on_four_processes_equals_one_process(tmp_path, image):
    result = torchrun(4, f"input={image}", f"out={tmp_path / 'par'}", "parallel.cfg=2", "parallel.ulysses=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # only the group's first rank writes
    assert_same_clip(tmp_path / "par", one_process(tmp_path / "ref", image))


@pytest.mark.multicore
def test_cfg_parallel_alone_on_two_processes_equals_one_process(tmp_path, image):
    result = torchrun(2, f"input={image}", f"out={tmp_path / 'par'}", "parallel.cfg=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1
    assert_same_clip(tmp_path / "par", one_process(tmp_path / "ref", image))


@pytest.mark.multicore
def test_data_parallel_alone_shares_a_jobs_file_and_equals_one_process(tmp_path, image):
    """2 processes, no CFG or sequence split: each samples its own jobs, each as one process would."""
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"task": "single", "input": str(image), "prompt": p, "out": str(tmp_path / "par" / p),
                                        "seed": s}) + "\n" for p, s in (("a", 1), ("b", 2))))
    result = torchrun(2, f"inputs={jobs}")
    assert result.returncode == 0, result.stderr[-3000:]
    for prompt, seed in (("a", 1), ("b", 2)):
        assert_same_clip(tmp_path / "par" / prompt, one_process(tmp_path / "ref" / prompt, image, f"prompt={prompt}", f"seed={seed}"))


@pytest.mark.multicore
def test_ulysses_with_a_token_count_the_degree_does_not_divide_equals_one_process(tmp_path, image):
    result = torchrun(2, f"input={image}", f"out={tmp_path / 'par'}", "parallel.ulysses=2", *ODD)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "par" / "summary.json").read_text())
    assert (summary["num_frames"], summary["height"], summary["width"]) == (9, 16, 16)  # 3 tokens on 2 ranks
    assert_same_clip(tmp_path / "par", one_process(tmp_path / "ref", image, *ODD))


# ----------------------------------------------------------------------------- layouts that cannot run


def test_padding_masks_exactly_the_padded_keys():
    padding = TokenPadding(4)
    padding.update(18018, torch.float32, "cpu")
    assert padding.padded == 18020 and padding.mask.shape == (1, 1, 1, 18020)
    assert (padding.mask[..., :18018] == 0).all() and padding.mask[..., 18018:].isinf().all()
    padding.update(18016, torch.float32, "cpu")
    assert padding.padded == 18016 and padding.mask is None  # divisible: no mask, the kernels run unchanged


BAD_LAYOUTS = {
    "product does not divide the world": (3, ["parallel.cfg=2"], "does not divide the 3 processes"),
    "spare ranks without a jobs file": (4, ["parallel.cfg=2"], "would sample the same clip; give inputs=FILE"),
    "cfg degree above 2": (3, ["parallel.cfg=3"], "parallel.cfg must be 1 or 2"),
    "cfg-parallel without guidance": (2, ["parallel.cfg=2", "cfg=1"], "cfg=1 runs only one"),
    "ulysses not dividing the heads": (3, ["parallel.ulysses=3"], "must divide the model's 4 attention heads"),
    "backend without context parallel": (2, ["parallel.ulysses=2", "model.attention_backend=flex"], "no sequence parallel support"),
    "ring on native SDPA": (2, ["parallel.ring=2"], "log-sum-exp, 'native' does not"),
    "padding on a backend without masks": (2, ["parallel.ulysses=2", "model.attention_backend=flash", *ODD], "3 tokens per branch do not divide"),
    "padding with ring": (2, ["parallel.ring=2", "model.attention_backend=flash", *ODD], "ring attention takes no padding mask"),
    "degree not a number": (2, ["parallel.ulysses=two"], "parallel.ulysses must be a positive whole number"),
    "sequence parallel on spatial_concat": (2, ["parallel.ulysses=2", "checkpoint=null", "model.architecture=spatial_concat"],
                                            "spatial_concat mixes both in one grid"),
    "step cache on a concat baseline": (1, ["acceleration.step_cache_threshold=0.1", "checkpoint=null", "model.architecture=spatial_concat"],
                                        "step caching needs the DLC wrapper"),
}


@pytest.mark.parametrize("case", sorted(BAD_LAYOUTS))
def test_a_layout_that_cannot_run_is_one_line_before_any_model_loads(case, image, tmp_path, monkeypatch, capsys):
    world, overrides, message = BAD_LAYOUTS[case]
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr("one4d.pipeline.loading.load_pipeline", lambda *a, **k: pytest.fail("a model was loaded"))
    assert sample(f"input={image}", f"out={tmp_path / 'out'}", *FAST, *overrides) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and message in error[0], error
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_token_counts_that_divide_need_no_mask():
    check_token_count(ParallelLayout(world_size=8, cfg=2, ulysses=4), 18020, "flash")  # divisible: any backend
    check_token_count(ParallelLayout(world_size=8, cfg=2, ulysses=4), 18018, "native")  # padded, masked
    with pytest.raises(ValueError, match="18018 tokens per branch do not divide by parallel.ulysses=4"):
        check_token_count(ParallelLayout(world_size=8, cfg=2, ulysses=4), 18018, "flash")


def test_the_gpu_benchmark_says_what_it_needs_in_one_line_without_cuda():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_parallel.py"), "--gpu"], cwd=ROOT,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip() == "error: --gpu needs CUDA; without it run the CPU benchmark (no --gpu)"


def test_each_rank_takes_its_own_gpu_and_too_many_processes_are_one_line(monkeypatch):
    from one4d.parallel import rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    layout = ParallelLayout(world_size=4, rank=3, local_rank=1, cfg=2, ulysses=2)
    assert rank_device(layout, torch.device("cuda")) == torch.device("cuda", 1)
    assert rank_device(layout, torch.device("cpu")) == torch.device("cpu")  # gloo ranks share the CPU
    with pytest.raises(ValueError, match="process 2 of this node has no GPU of its own \\(2 visible\\)"):
        rank_device(ParallelLayout(world_size=4, rank=2, local_rank=2, cfg=2, ulysses=2), torch.device("cuda"))


def test_the_token_count_checked_before_loading_reads_the_checkpoints_vae():
    """The layout check counts tokens before any weight is read: with the shipped tiny VAE (x4 in space) 9 x 48 x 64
    is 3 x 12 x 16 latents, 3 x 6 x 8 tokens; an x8 count (3 x 3 x 4) would misjudge which degrees need padding."""
    from one4d.models import preset_config
    from one4d.pipeline.cost import latent_tokens, vae_spatial_factor

    assert vae_spatial_factor(ROOT / "data/checkpoints/tiny/base") == 4 and vae_spatial_factor("tiny") == 8
    assert latent_tokens(preset_config("demo"), 9, 48, 64, vae_spatial_factor(ROOT / "data/checkpoints/tiny/base")) == 144
    assert latent_tokens(preset_config("demo"), 9, 48, 64) == 36
