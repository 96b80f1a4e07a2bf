"""A folder laid out like a fresh checkout, for running documented commands exactly as a new user types them.

It links the repository's scripts, configs, shipped checkpoints, Makefile and ``.venv`` (or, where the tests run
outside the project's virtual environment, a ``.venv/bin`` pointing at this interpreter), and holds the small
inputs the docs name (``photo.png``, ``clip.mp4``, ``frames_folder/``). Commands run in a shell whose PATH does
not hold the virtual environment, so a printed ``python ...`` that needs an activated environment fails here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("scripts", "configs", "benchmarks", "Makefile", "pyproject.toml")


def make_layout(folder: Path) -> Path:
    """Populate ``folder`` (links to the repository, the virtual environment, the documented inputs); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        (folder / name).symlink_to(ROOT / name)
    (folder / "data").mkdir()
    (folder / "data" / "checkpoints").symlink_to(ROOT / "data" / "checkpoints")
    if (ROOT / ".venv" / "bin" / "python").exists():
        (folder / ".venv").symlink_to(ROOT / ".venv")
    else:  # tests run by another interpreter: the same layout, pointing at it
        bin_dir = folder / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").symlink_to(sys.executable)
        for tool in ("torchrun", "hf"):
            if (Path(sys.executable).parent / tool).exists():
                (bin_dir / tool).symlink_to(Path(sys.executable).parent / tool)
        (folder / ".venv" / ".installed").touch()
    write_inputs(folder)
    return folder


def write_inputs(folder: Path) -> None:
    """photo.png (60 x 80), clip.mp4 (12 frames at 40 x 56) and frames_folder/ (6 PNG frames)."""
    rng = np.random.default_rng(0)
    imageio.imwrite(folder / "photo.png", (rng.random((60, 80, 3)) * 255).astype(np.uint8))
    writer = imageio.get_writer(folder / "clip.mp4", fps=12, codec="libx264", macro_block_size=1, ffmpeg_log_level="error")
    for _ in range(12):
        writer.append_data((rng.random((40, 56, 3)) * 255).astype(np.uint8))
    writer.close()
    (folder / "frames_folder").mkdir()
    for index in range(6):
        imageio.imwrite(folder / "frames_folder" / f"{index:04d}.png", (rng.random((40, 56, 3)) * 255).astype(np.uint8))


def fresh_env() -> dict:
    """The environment of a fresh shell: no virtual environment on PATH or activated, not inside a make (``make test``
    exports MAKEFLAGS / MAKELEVEL, which turn a user's ``make`` into a chatty sub-make); one CPU thread (shared CI)."""
    venv_bins = {str(ROOT / ".venv" / "bin")}
    if sys.prefix != sys.base_prefix:  # this interpreter is itself a virtual environment's
        venv_bins.add(str(Path(sys.executable).parent))
    if os.environ.get("VIRTUAL_ENV"):
        venv_bins.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    path = [entry for entry in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if entry not in venv_bins]
    inherited = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "MAKE_TERMOUT",
                 "MAKE_TERMERR")
    env = {key: value for key, value in os.environ.items() if key not in inherited}
    env.update(PATH=os.pathsep.join(path), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_shell(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``command`` as a user types it into bash in ``cwd``."""
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=fresh_env(), capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
