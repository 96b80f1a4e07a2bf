"""What every entry point does the same way: CPU threads, and commands printed so that they work as printed.

**CPU threads.** torch's default (one thread per core) made ``scripts/sample.py`` take 46 s one run and
3.7 s the next on a shared 2-core machine (3.2 s with one thread): OpenMP threads that wait on a core
another job holds stall every operation. So on a CPU every entry point uses half the CPUs this
process may run on (about one per physical core), at least 1 and at most 8, unless told otherwise:
``threads=N`` (Hydra scripts) or ``--threads N`` wins, and a set ``OMP_NUM_THREADS`` is left to torch,
which reads it at start-up (torchrun sets it to 1). With a CUDA device torch's default is kept.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MAX_DEFAULT_THREADS = 8
THREADS_HELP = "torch CPU threads (default: OMP_NUM_THREADS if set, else half the CPUs, 1 to 8; one4d.runtime)"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_cpu_threads() -> int:
    """Half the available CPUs (about one per physical core), at least 1, at most 8."""
    return max(1, min(MAX_DEFAULT_THREADS, available_cpus() // 2))


def configure_cpu_threads(threads=None, cpu: bool | None = None) -> int:
    """Set torch's intra-op threads by the module's rule and return the number in use.

    ``threads``: an explicit count (wins everywhere). ``cpu``: whether the run computes on the CPU
    (None: when no CUDA device is available). A bad count is a one-line ValueError.
    """
    import torch

    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive whole number, got {threads!r}")
        torch.set_num_threads(threads)
    elif not os.environ.get("OMP_NUM_THREADS"):
        if cpu if cpu is not None else not torch.cuda.is_available():
            torch.set_num_threads(default_cpu_threads())
    return torch.get_num_threads()


def python_command() -> str:
    """This interpreter as a fresh shell in the current folder can start it: ``.venv/bin/python`` for the
    project's virtual environment (nothing needs activating), else the interpreter's absolute path."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(Path.cwd()))
    except ValueError:
        return str(executable)
