"""make tiny-model at micro size: every stage runs through the real trainer and writes loadable checkpoints."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from one4d.demo import checkpoint_preset
from one4d.runtime import openmp_wait_setting
from one4d.training.testing import compose_train_config
from one4d.training.tiny_model import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
# Three tests build on two threads (two processes); the rest share one micro build, made once in the multicore run.
pytestmark = pytest.mark.multicore
MICRO = dict(num_clips=4, num_frames=5, height=32, width=32, vae_clips=3, vae_steps=2, vae_batch=2, vae_crop=[32, 32],
             decoder_steps=2, decoder_batch=2, vae_frames=5)
# The shipped recipe compiles its blocks (tiny_base / tiny_one4d: train.compile); dynamo traces them here as it does
# there, but the eager backend skips inductor's minutes of C++ compilation (tests/test_training.py runs inductor).
TRAINER = ["data.num_frames=5", "data.height=32", "data.width=32", "train.steps=3", "train.global_batch_size=2",
           "train.checkpoint_every=0", "train.warmup_steps=0", "cache_sparse_counts=[2]", "train.compile_options={backend: eager}"]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    log = make_tiny_model(out=root / "out", work=root / "work", settings=MICRO, overrides=TRAINER)
    return root, log


def test_every_stage_is_recorded_with_time_and_loss(micro_run):
    root, log = micro_run
    assert list(log["stages"]) == ["data", "vae", "decoder", "cache", "base", "one4d"]
    assert json.loads((root / "out" / "training_log.json").read_text()) == json.loads(json.dumps(log))
    for stage in ("base", "one4d"):
        record = log["stages"][stage]
        assert record["steps"] == 3 and torch.isfinite(torch.tensor(record["final_loss"]))
        assert record["wall_s"] >= 0 and stage in record["command"]
    assert all(record["threads"] == torch.get_num_threads() for record in log["stages"].values())
    assert all(record["openmp_wait"] == openmp_wait_setting() for record in log["stages"].values())
    assert f"s ({torch.get_num_threads()} thread" in (root / "out" / "README.md").read_text()  # threads per stage, not per log
    assert set(log["stages"]["vae"]["held_out_l1"]) == {"rgb", "xyz"}


def test_data_and_cache_stages_on_two_threads_write_the_same_files_in_two_processes(micro_run, tmp_path):
    """On two threads the build renders its clips and encodes its cache in two processes; the files are the
    one-process build's, byte for byte."""
    from one4d.training.tiny_model import default_settings, stage_cache, stage_data

    root, _ = micro_run
    settings, work = dict(default_settings(), **MICRO), tmp_path / "work"
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert stage_data(settings, root / "out", work, list(TRAINER))["processes"] == 2
        assert stage_cache(settings, root / "out", work, list(TRAINER))["processes"] == 2
    finally:
        torch.set_num_threads(previous)
    for name in ("clips", "cache"):
        files = sorted(path.relative_to(root / "work" / name) for path in (root / "work" / name).rglob("*") if path.is_file())
        assert files == sorted(path.relative_to(work / name) for path in (work / name).rglob("*") if path.is_file())
        assert all((root / "work" / name / file).read_bytes() == (work / name / file).read_bytes() for file in files), name


def copy_of_the_build(root, folder):
    """The micro build's components, clips and cache under ``folder`` (out, work): trainer stages can rerun there."""
    out, work = folder / "out", folder / "work"
    shutil.copytree(root / "out" / "base", out / "base")
    for name in ("clips", "cache"):
        shutil.copytree(root / "work" / name, work / name)
    return out, work


def test_trainer_stages_on_two_threads_train_in_two_processes_what_one_process_trains(micro_run, tmp_path, capfd):
    """On two threads the build runs scripts/train.py under torchrun, one process per thread (gloo DDP): the same
    global batch and draws (StepDraws), so its base and One4D weights are the one-process build's up to rounding."""
    from safetensors.torch import load_file

    from one4d.training.tiny_model import default_settings, stage_base, stage_one4d

    root, log = micro_run
    assert [log["stages"][stage]["processes"] for stage in ("base", "one4d")] == [1, 1]  # the fixture's one thread
    out, work = copy_of_the_build(root, tmp_path)
    settings = dict(default_settings(), **MICRO)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        records = [stage(settings, out, work, list(TRAINER)) for stage in (stage_base, stage_one4d)]
    finally:
        torch.set_num_threads(previous)
    assert [record["processes"] for record in records] == [2, 2]
    assert all("torch.distributed.run" in record["training_command"] for record in records)
    continued = [line for line in capfd.readouterr().out.splitlines() if line.startswith("continue this run")]
    assert len(continued) == 2 and all(" -m torch.distributed.run --nproc_per_node 2 scripts/train.py " in line for line in continued)
    for stage, record in zip(("base", "one4d"), records):
        assert abs(record["final_loss"] - log["stages"][stage]["final_loss"]) < 1e-4 * abs(log["stages"][stage]["final_loss"])
    for weights in ("base/transformer/diffusion_pytorch_model.safetensors", "one4d/trainable_state.safetensors"):
        one, two = load_file(root / "out" / weights), load_file(out / weights)
        assert one.keys() == two.keys()
        # measured: 1.3e-5 at most (a zero-initialised control link, a hundredth of one step at lr 1e-3: Adam's first
        # steps magnify the rounding of the gradient average); one process's own noise moves weights a whole step
        assert all(torch.allclose(two[name], one[name], rtol=1e-4, atol=5e-5) for name in one), weights


def test_a_build_stopped_in_a_training_stage_leaves_no_process_and_no_stage_output(micro_run, tmp_path):
    """SIGTERM to the build while torchrun trains: the build passes it on, waits, says one line and exits 143."""
    root, _ = micro_run
    out, work = copy_of_the_build(root, tmp_path)
    command = [sys.executable, str(ROOT / "scripts" / "make_tiny_model.py"), "--stages", "one4d", "--out", str(out),
               "--work", str(work), "--threads", "2", *TRAINER, "train.steps=100000"]
    build = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (work / "one4d" / "config.yaml").is_file():  # the trainer has started
        assert build.poll() is None and time.time() < deadline, "the build ended before its training started"
        time.sleep(0.1)
    time.sleep(3)  # well into the workers' start-up or training
    build.send_signal(signal.SIGTERM)
    output, _ = build.communicate(timeout=180)
    assert build.returncode == 143, output[-3000:]
    assert output.strip().splitlines()[-1] == "terminated (SIGTERM): stopped, unfinished outputs removed"
    left = [path for path in Path("/proc").glob("[0-9]*/cmdline") if str(work).encode() in _read(path)]
    assert not left, [_read(path) for path in left]
    assert not (out / "one4d").exists()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_base_stage_trains_every_weight_and_writes_a_diffusers_folder(micro_run):
    from one4d.models.presets import build_base_transformer
    from one4d.weights import load_base_transformer, load_diffusers_components

    root, _ = micro_run
    preset = checkpoint_preset(root / "out")
    assert preset == compose_train_config(["experiment=tiny_one4d"]).model.preset == "demo_patch1"  # the shipped grid
    trained = load_base_transformer(root / "out" / "base", preset=preset)
    assert tuple(trained.config.patch_size) == (1, 1, 1)
    torch.manual_seed(0)
    initial = build_base_transformer(preset)
    changed = [name for name, p in trained.named_parameters() if not torch.equal(p, dict(initial.named_parameters())[name])]
    assert "blocks.0.attn1.to_q.weight" in changed and "proj_out.weight" in changed  # full fine-tuning, not LoRA
    vae = load_diffusers_components(root / "out" / "base", components=("vae",))["vae"]
    assert len(vae.config.latents_mean) == 16 and all(s > 0 for s in vae.config.latents_std)


def test_one4d_stage_loads_into_the_sampler(micro_run):
    from one4d.pipeline import load_pipeline

    root, _ = micro_run
    pipe = load_pipeline(preset=checkpoint_preset(root / "out"), components=str(root / "out" / "base"), state=str(root / "out" / "one4d"))
    assert pipe.transformer.architecture == "dlc"
    assert any(p.abs().sum() > 0 for name, p in pipe.transformer.links.named_parameters())  # the links trained


def test_a_build_of_another_preset_is_demonstrated_ablated_and_probed_with_its_own_base(micro_run, tmp_path, benchmarks_importable):
    """A one-off base grid is a ``model.preset`` override of the base and One4D stages: sampling.json records it, and
    the demo, the ablation and the benchmarks load that base instead of assuming ``demo``."""
    import bench_camera_readability
    from one4d.ablation import train_architecture
    from one4d.demo import DemoSettings, load_demo_pipeline
    from one4d.encoding import load_encoders
    from one4d.sampling_file import read_sampling_file

    root, _ = micro_run
    out, work = tmp_path / "out", tmp_path / "work"
    shutil.copytree(root / "out", out)
    work.mkdir()
    for shared in ("clips", "cache"):
        (work / shared).symlink_to(root / "work" / shared)
    log = make_tiny_model(stages=["base", "one4d"], out=out, work=work, settings=MICRO, overrides=[*TRAINER, "model.preset=tiny"])
    assert log["stages"]["one4d"]["preset"] == "tiny" and read_sampling_file(out)["model"]["preset"] == "tiny"
    assert checkpoint_preset(out) == "tiny" and "preset `tiny`" in (out / "README.md").read_text()
    pipe = load_demo_pipeline(out, DemoSettings(num_frames=5, height=32, width=32))
    assert pipe.transformer.base.config.num_attention_heads == 2  # the tiny preset's, not demo's 4
    folder, _ = train_architecture("channel_concat", out, work / "ablation", 1, TRAINER[:3] + TRAINER[4:])
    assert (folder / "architecture.json").is_file()
    settings = {"num_frames": 5, "height": 32, "width": 32}
    features = bench_camera_readability.branch_features(out, load_encoders(str(out / "base")), [1_000_000], settings, "xyz_branch")
    assert features.shape[:2] == (1, 32)  # the tiny preset's width (2 heads x 16)


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown stages"):
        make_tiny_model(stages=["vae", "distill"], out=tmp_path / "out", work=tmp_path / "work")


def test_ablation_trains_and_scores_all_three_architectures(micro_run, tmp_path):
    from one4d.ablation import ARCHITECTURES, run_ablation, write_report
    from one4d.demo import DemoSettings

    root, _ = micro_run
    settings = DemoSettings(num_frames=5, height=32, width=32, steps=2, postopt_iterations=2)
    trainer = [override for override in TRAINER if not override.startswith("train.steps")]
    results = run_ablation(root / "out", root / "work" / "ablation", steps=2, held_out=2, overrides=trainer,
                           settings=settings, log=lambda line: None)
    assert list(results["architectures"]) == list(ARCHITECTURES)
    for row in results["architectures"].values():
        assert all(torch.isfinite(torch.tensor(row[key])) for key in ("rgb_loss", "final_loss", "train_s"))
        # a 3-step model's pointmaps may be refused by post-optimisation: then the scene is counted, not scored
        assert torch.isfinite(torch.tensor(row["abs_rel"])) or row["failed_scenes"] == 1
    report = write_report(results, tmp_path / "ABLATION.md", "make ablation").read_text()
    assert all(f"| {name} |" in report for name in ARCHITECTURES) and "RGB degradation" in report


def test_build_uses_every_cpu_unless_told_and_refuses_a_bad_thread_count(tmp_path, capsys):
    from one4d.runtime import available_cpus
    from one4d.training.tiny_model import main

    previous = torch.get_num_threads()
    paths = ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--stages", ""]
    try:
        torch.set_num_threads(1)
        assert main(paths) == 0 and torch.get_num_threads() == available_cpus()
        assert main([*paths, "--threads", "1"]) == 0 and torch.get_num_threads() == 1
        assert main([*paths, "--threads", "0"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == ["error: threads must be a positive whole number, got 0"]
    finally:
        torch.set_num_threads(previous)
