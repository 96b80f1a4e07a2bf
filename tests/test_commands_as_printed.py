"""Issue 15, "Commands as printed": a checkpoint folder carries its settings, a far size is warned about before
loading, printed commands work in a fresh shell, training and resuming connect, CPU threads have a sane default,
and the docs cite nothing users lack."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from fresh_layout import make_layout, run_shell
from one4d import runtime
from one4d.demo import DemoSettings, verify_checkpoint
from one4d.pipeline import cli
from one4d.pipeline.cost import format_duration, step_flops
from one4d.models import preset_config
from one4d.sampling_file import SAMPLING_FILE, read_sampling_file
from one4d.training import checkpointing
from one4d.training.testing import compose_train_config, write_synthetic_clips
from one4d.training.tiny_model import default_settings, write_sampling_metadata

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "checkpoints" / "tiny"
SHIPPED_PRESET = compose_train_config(["experiment=tiny_one4d"]).model.preset  # what make tiny-model trains: demo_patch1
FAST = ["steps=2", "postopt.iterations=2", "progress=false", "ply_stride=0"]


def config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("sample", overrides=list(overrides))


def sample(*overrides) -> int:
    """``scripts/sample.py`` in process: the overrides are both the config and the command line."""
    return cli.sample(config(*overrides), list(overrides))


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("layout") / "one4d")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_synthetic_clips(tmp_path_factory.mktemp("clips"), count=2, num_frames=5, size=32)


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(cli, "load", refuse)  # the one place sample() loads a model


# ----------------------------------------------------------------------------- checkpoint= carries its settings


def test_shipped_sampling_file_is_what_make_tiny_model_writes_and_what_the_demo_runs(tmp_path):
    assert write_sampling_metadata(tmp_path, default_settings(), SHIPPED_PRESET).read_bytes() == (SHIPPED / SAMPLING_FILE).read_bytes()
    verify_checkpoint(SHIPPED)  # MANIFEST.json records it too
    metadata = read_sampling_file(SHIPPED)
    demo = DemoSettings()
    assert metadata["trained_at"] == {"num_frames": demo.num_frames, "height": demo.height, "width": demo.width}
    assert metadata["sampler"] == {"steps": demo.steps, "cfg": demo.guidance_scale, "shift": demo.flow_shift,
                                   "scheduler": "unipc", "negative_prompt": ""}
    assert metadata["model"]["preset"] == SHIPPED_PRESET == "demo_patch1" and Path(metadata["model"]["components"]) == SHIPPED / "base"


def test_the_checkpoint_folder_is_the_whole_command(layout, tmp_path, capsys):
    out = tmp_path / "full"
    assert sample("task=full", f"input={layout / 'clip.mp4'}", f"checkpoint={SHIPPED}", f"out={out}", *FAST) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["num_frames"], summary["height"], summary["width"]) == (9, 48, 64)  # its training size
    settings = summary["settings"]
    assert settings["model"]["preset"] == SHIPPED_PRESET and settings["cfg"] == 1.0 and settings["shift"] == DemoSettings().flow_shift == 30.0  # sample.yaml: 6.0, 3.0
    assert settings["negative_prompt"] == "" and settings["steps"] == 2  # the command line's steps win
    printed = capsys.readouterr().out
    assert "from its sampling.json" in printed and "view it in 4D:" in printed


def test_command_line_values_win_over_the_checkpoint():
    given = ["task=full", "input=x.mp4", f"checkpoint={SHIPPED}", "cfg=4", "max_area=4096", "model=tiny", "shift=1"]
    cfg = config(*given)
    cli.apply_checkpoint_settings(cfg, cli.given_keys(given))
    assert cfg.cfg == 4 and cfg.shift == 1 and cfg.model.preset == "tiny"  # given: kept
    assert cfg.height is None and cfg.width is None  # a size was asked for (max_area): the training size is not imposed
    assert cfg.steps == DemoSettings().steps == 4 and cfg.negative_prompt == ""  # not given: the checkpoint's
    assert cli.given_keys(["+model.base_overrides.num_layers=2", "~fps", "task=full"]) == ["model.base_overrides.num_layers", "fps", "task"]


def test_a_preset_mismatch_names_the_preset_that_matches(layout, tmp_path, capsys, no_loading):
    code = sample("task=full", f"input={layout / 'clip.mp4'}", "prompt=a room", f"checkpoint={SHIPPED}", "model.preset=tiny",
                  "model.components=tiny", f"out={tmp_path / 'out'}")
    assert code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert len(error) == 1 and "another base model" in error[0] and f"matches preset '{SHIPPED_PRESET}'" in error[0], error
    assert f"model.preset={SHIPPED_PRESET}" in error[0]


def test_training_prints_its_run_and_checkpoints_and_its_checkpoints_sample_alone(clips, layout, tmp_path, capsys):
    from one4d.training import run

    run_dir = tmp_path / "run"
    overrides = ["experiment=tiny_cpu", f"data.roots=[{clips}]", f"run_dir={run_dir}", "train.steps=2",
                 "train.checkpoint_every=1", "train.report_to=null", "train.progress_bar=false", "train.log_every=0"]
    run(compose_train_config(overrides), overrides)
    printed = capsys.readouterr().out
    assert f"run directory: {run_dir}\n" in printed
    assert f"checkpoint: {run_dir / 'checkpoints' / 'step-0000001'}\n" in printed
    assert f"checkpoint: {run_dir / 'checkpoints' / 'step-0000002'}\n" in printed
    continued = re.search(r"continue this run.*: (.*)\n", printed).group(1)
    assert continued.endswith(f"run_dir={run_dir} train.resume=latest") and "train.steps=2" in continued
    metadata = read_sampling_file(run_dir / "checkpoints" / "step-0000002")
    assert metadata["trained_at"] == {"num_frames": 5, "height": 32, "width": 32}
    assert metadata["model"]["preset"] == "tiny" and metadata["model"]["components"] == "tiny"

    out = tmp_path / "sampled"  # the run folder alone: its newest checkpoint, its preset and size
    assert sample("task=full", f"input={layout / 'clip.mp4'}", f"checkpoint={run_dir}", f"out={out}", *FAST) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["num_frames"], summary["height"], summary["width"]) == (5, 32, 32)


# ----------------------------------------------------------------------------- far from the training size


def test_a_size_far_from_training_is_warned_about_before_loading_with_the_estimated_time(layout, tmp_path, capsys, no_loading):
    with pytest.raises(AssertionError, match="a model was loaded"):
        sample("task=full", f"input={layout / 'clip.mp4'}", f"checkpoint={SHIPPED}", "num_frames=81", "height=352",
               "width=624", "steps=50", f"out={tmp_path / 'out'}")
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: 81 frames")]
    assert len(warning) == 1, warning
    assert "far from the size" in warning[0] and "9 frames at 48x64" in warning[0]
    assert re.search(r"estimated [\d.]+ (s|min|h) a step on cpu, about [\d.]+ (s|min|h) for 50 steps", warning[0]), warning[0]
    assert "num_frames=9 height=48 width=64" in warning[0]


def test_no_warning_at_the_training_size(layout, tmp_path, capsys, no_loading):
    with pytest.raises(AssertionError, match="a model was loaded"):
        sample("task=full", f"input={layout / 'clip.mp4'}", f"checkpoint={SHIPPED}", f"out={tmp_path / 'out'}")
    assert "far from the size" not in capsys.readouterr().err


def test_step_cost_grows_with_the_size():
    config = preset_config("demo")
    small, large = sum(step_flops(config, 9, 48, 64, True)), sum(step_flops(config, 81, 352, 624, True))
    assert large > 400 * small  # 500x the tokens, attention quadratic in them
    assert sum(step_flops(config, 9, 48, 64, False)) == pytest.approx(small / 2)
    assert [format_duration(s) for s in (3.21, 41, 2040, 9000)] == ["3.2 s", "41 s", "34 min", "2.5 h"]


# ----------------------------------------------------------------------------- printed commands


def test_printed_commands_work_in_a_fresh_shell(layout):
    printed = run_shell(".venv/bin/python -c 'from pathlib import Path; from one4d.demo import view_command; "
                        "print(view_command(Path(\"outputs/demo/full\")))'", layout)
    assert printed.returncode == 0, printed.stderr[-2000:]
    command = printed.stdout.strip()
    assert command == ".venv/bin/python scripts/view.py outputs/demo/full"
    assert run_shell(command.replace("outputs/demo/full", "--help"), layout).returncode == 0  # works as printed, nothing activated
    dry = run_shell("make -n -o .venv/.installed view", layout)
    assert dry.returncode == 0 and dry.stdout.strip() == ".venv/bin/python scripts/view.py outputs/demo/full", dry.stdout + dry.stderr
    dry = run_shell("make -n -o .venv/.installed view FOLDER=outputs/full VIEW_ARGS=--port=9000", layout)
    assert dry.stdout.strip() == ".venv/bin/python scripts/view.py outputs/full --port=9000"


# ----------------------------------------------------------------------------- train, then resume


def test_resume_latest_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(ValueError, match=r"no checkpoint in .*train\.resume=latest_or_new"):
        checkpointing.resolve_resume("latest", tmp_path / "checkpoints")
    assert checkpointing.resolve_resume("latest_or_new", tmp_path / "checkpoints") is None


def test_train_script_refuses_resume_latest_on_an_empty_run_dir_and_writes_nothing(clips, tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "experiment=tiny_cpu", f"data.roots=[{clips}]",
               "run_dir=outputs/train/tiny", "train.resume=latest"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "no checkpoint in outputs/train/tiny/checkpoints" in lines[0] and "latest_or_new" in lines[0]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder, no Hydra folder


# ----------------------------------------------------------------------------- CPU threads


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cpus, expected", [(1, 1), (2, 1), (3, 1), (8, 4), (16, 8), (64, 8)])
def test_default_threads_are_half_the_cpus(cpus, expected, monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: cpus)
    assert runtime.default_cpu_threads() == expected


def test_threads_rule(monkeypatch, restore_threads):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert runtime.configure_cpu_threads(None, cpu=True) == 1  # the default on a 2-core CPU
    torch.set_num_threads(2)
    assert runtime.configure_cpu_threads(None, cpu=False) == 2  # CUDA runs keep torch's default
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.configure_cpu_threads(None, cpu=True) == 2  # OMP_NUM_THREADS is left to torch
    assert runtime.configure_cpu_threads(3, cpu=True) == 3  # an explicit count wins
    for bad in (0, -1, "abc", 1.5):
        with pytest.raises(ValueError, match="threads must be a positive whole number"):
            runtime.configure_cpu_threads(bad)


def test_spinning_threads_is_set_before_torch_loads_and_leaves_a_set_policy_alone(monkeypatch):
    for name in runtime.WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="before torch is imported"):  # too late here: OpenMP has read its settings
        runtime.spin_waiting_threads()
    assert runtime.openmp_wait_setting() == "default"
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert runtime.spin_waiting_threads() == "OMP_WAIT_POLICY=PASSIVE" and "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    assert runtime.spin_waiting_threads() == "GOMP_SPINCOUNT=1000"


@pytest.mark.parametrize("setting", [None, "OMP_WAIT_POLICY=PASSIVE", "GOMP_SPINCOUNT=1000"])
def test_the_build_script_spins_its_threads_unless_told(setting):
    """make tiny-model's script sets the spin count before its imports load torch (else spin_waiting_threads raises)."""
    env = {key: value for key, value in os.environ.items() if key not in runtime.WAIT_VARIABLES}
    if setting:
        name, value = setting.split("=")
        env[name] = value
    probe = ("import runpy, sys; from one4d.runtime import openmp_wait_setting; runpy.run_path('scripts/make_tiny_model.py'); "
             "print(openmp_wait_setting(), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [setting or f"GOMP_SPINCOUNT={runtime.SPIN_COUNT}", "True"]


def test_sample_takes_threads_and_records_them(layout, tmp_path, capsys, restore_threads):
    out = tmp_path / "out"
    assert sample("task=single", f"input={layout / 'photo.png'}", "threads=1", "num_frames=5", "height=32", "width=32",
                  f"out={out}", *FAST) == 0
    assert json.loads((out / "summary.json").read_text())["settings"]["threads"] == 1
    assert sample("task=single", f"input={layout / 'photo.png'}", "threads=abc", f"out={tmp_path / 'bad'}") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: threads must be a positive whole number")


def test_argparse_entry_points_take_threads_too(layout, tmp_path, capsys):
    from one4d.demo import main

    assert main(["--threads", "0", "--out", str(tmp_path / "demo")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: threads must be a positive whole number")
    result = run_shell(".venv/bin/python scripts/view.py outputs/none --threads 0", layout)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: threads must be"), result.stderr


# ----------------------------------------------------------------------------- docs and stray folders


OTHER_OWNERS = ()  # every tracked document is scanned


def test_no_document_cites_the_spec_file_users_do_not_have():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    this = str(Path(__file__).relative_to(ROOT))
    citing = []
    for name in files:
        if name == this or name.startswith(OTHER_OWNERS) or not name.endswith((".py", ".md", ".yaml", ".txt", ".sh")):
            continue
        path = ROOT / name
        if path.is_file() and re.search(r"\bSPEC\b", path.read_text(errors="ignore")):
            citing.append(name)
    assert citing == []


def test_the_generated_dataset_folder_is_ignored_by_git():
    result = subprocess.run(["git", "check-ignore", "-q", "data/synthetic/clip_0000/meta.json"], cwd=ROOT)
    assert result.returncode == 0


def test_cache_latents_writes_the_cache_and_nothing_else(clips, tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "cache_latents.py"), f"data.roots=[{clips}]", "+cache_dir=cache",
               "+cache_sparse_counts=[2]"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no empty outputs/train/<timestamp>
