"""Installs for people who only sample (issue 16 item 7): DeepSpeed is the optional extra ``.[train]``; sampling,
evaluation and the demo never import it, run where it is absent, and training under a DeepSpeed launcher says
in one line which extra to install.

"Absent" is simulated in a subprocess by a ``sitecustomize.py`` on PYTHONPATH that puts ``None`` in
``sys.modules["deepspeed"]``: ``import deepspeed`` (and any ``deepspeed.*``) then raises ImportError and
``importlib.util.find_spec("deepspeed")`` returns None, which is what accelerate's and transformers'
``is_deepspeed_available`` see when it is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIDE = """import sys
sys.modules["deepspeed"] = None  # written by tests/test_install_extras.py: DeepSpeed is not installed here
"""


def run(args: list[str], tmp_path: Path, hide_deepspeed: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if hide_deepspeed:
        (tmp_path / "site").mkdir(exist_ok=True)
        (tmp_path / "site" / "sitecustomize.py").write_text(HIDE)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path / "site"), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_deepspeed_is_only_in_the_train_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(dependency.startswith("deepspeed") for dependency in project["dependencies"])
    assert any(dependency.startswith("deepspeed") for dependency in project["optional-dependencies"]["train"])


def test_sampling_evaluation_and_demo_modules_do_not_import_deepspeed(tmp_path):
    """With DeepSpeed installed (this venv has it), importing the whole sampling path must not load it."""
    code = ("import sys, one4d.pipeline, one4d.pipeline.cli, one4d.pipeline.step_cache, one4d.eval.driver, one4d.demo, "
            "one4d.models.state, one4d.pipeline.evaluation\n"
            "loaded = [m for m, v in sys.modules.items() if v is not None and (m == 'deepspeed' or m.startswith('deepspeed.'))]\n"
            "print('deepspeed modules:', loaded)")
    result = run(["-c", code], tmp_path, hide_deepspeed=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "deepspeed modules: []" in result.stdout


def test_sample_script_runs_without_deepspeed(tmp_path):
    import imageio.v2 as imageio
    import numpy as np

    imageio.imwrite(tmp_path / "image.png", (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8))
    result = run(["-c", "import deepspeed"], tmp_path)
    assert result.returncode != 0 and "deepspeed" in result.stderr  # the simulation holds
    out = tmp_path / "out"
    result = run(["scripts/sample.py", "task=single", f"input={tmp_path / 'image.png'}", "checkpoint=data/checkpoints/tiny",
                  "steps=2", "num_frames=5", "postopt.iterations=3", "progress=false", f"out={out}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "pointmaps.npz").is_file() and (out / "rgb.mp4").is_file()


def test_deepspeed_launcher_without_deepspeed_names_the_extra(tmp_path):
    result = run(["scripts/train.py", "experiment=tiny_cpu", "launcher=deepspeed_zero2", f"data.roots=[{tmp_path / 'clips'}]",
                  f"run_dir={tmp_path / 'run'}", "train.report_to=null", "train.progress_bar=false"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "pip install -e '.[train]'" in lines[-1], result.stderr[-2000:]
    assert sum(line.startswith("error: ") for line in lines) == 1
