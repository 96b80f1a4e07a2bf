"""Suite-wide settings.

One intra-op thread: the tests run tiny models whose small GEMMs only lose from OpenMP threading, and
on a shared 2-core machine two threads per process oversubscribe the cores (a tiny training step was
measured 16x slower). Subprocesses inherit OMP_NUM_THREADS.

DeepSpeed compiles its CPU communication extension at first use, under a lock file. The tests build it in
their own folder (TORCH_EXTENSIONS_DIR, inherited by the torchrun subprocesses), never the user's shared
cache, and remove locks left there by an earlier session killed mid-build (older than ten minutes, so a
build in progress in another session keeps its lock): a stale lock would make every DeepSpeed test hang.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

EXTENSIONS = Path(__file__).resolve().parents[1] / ".pytest_cache" / "torch_extensions"
os.environ["TORCH_EXTENSIONS_DIR"] = str(EXTENSIONS)
for lock in EXTENSIONS.glob("*/lock"):  # <TORCH_EXTENSIONS_DIR>/<extension>/lock
    if time.time() - lock.stat().st_mtime > 600:  # a build takes about a minute: an older lock's builder is gone
        lock.unlink()

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one intra-op thread, whatever an in-process entry point before it chose."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_torchrun_unless_multicore(request, monkeypatch):
    """make test runs the one-core tests two at a time (pytest-xdist); a test there that launches torchrun would share
    its cores with another test: it must be marked multicore (run alone, after). Checked in xdist workers only."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or request.node.get_closest_marker("multicore"):
        return
    launch = subprocess.Popen.__init__

    def one_core_launch(self, args, *rest, **options):
        command = os.fsdecode(args) if isinstance(args, (str, bytes, os.PathLike)) else " ".join(map(os.fsdecode, args))
        words = command.split()
        if "torch.distributed.run" in command or (words and Path(words[0]).name == "torchrun"):
            raise AssertionError(f"{request.node.nodeid} launches torchrun: mark it @pytest.mark.multicore")
        launch(self, args, *rest, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", one_core_launch)


@pytest.fixture(scope="module")
def benchmarks_importable():
    """The benchmarks folder on sys.path while a module's tests run: the benchmarks import their siblings by name."""
    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, folder)
    yield
    sys.path.remove(folder)
