"""make test runs the one-core tests two at a time (pytest-xdist), then the tests marked multicore alone: in the
parallel run, a test that launches torchrun without the mark fails with one line saying so (tests/conftest.py)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAUNCHES = """
import subprocess, sys
from pathlib import Path

import pytest

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--help"]


def test_unmarked():
    subprocess.run(TORCHRUN, capture_output=True, check=True)


def test_unmarked_console_script():
    subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--help"], capture_output=True, check=True)


@pytest.mark.multicore
def test_marked():
    subprocess.run(TORCHRUN, capture_output=True, check=True)
"""


def test_an_unmarked_torchrun_launch_fails_in_the_parallel_run_only(tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path)
    (tmp_path / "test_launches.py").write_text(LAUNCHES)
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\nmarkers = multicore: two cores\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}  # not this run's worker

    def run(*options):
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    parallel = run("-n", "1")
    assert "2 failed, 1 passed" in parallel.stdout, parallel.stdout[-3000:]
    for name in ("test_unmarked", "test_unmarked_console_script"):
        assert f"test_launches.py::{name} launches torchrun: mark it @pytest.mark.multicore" in parallel.stdout
    alone = run()
    assert "3 passed" in alone.stdout, alone.stdout[-3000:]
