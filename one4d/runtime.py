"""What every entry point does the same way: the error contract, CPU threads, and commands printed so that they
work as printed.

**The error contract** (:func:`run_script`, called by every script in ``scripts/``): bad input or environment is
one line on stderr, ``error: ...``, and exit code 2 (a ValueError or a Hydra/OmegaConf config error: an unknown
key, a missing ``???`` value, an unknown config group option); Ctrl+C (SIGINT) and a scheduler's or ``timeout``'s
SIGTERM unwind the program like an exception, so the code that created a partial output removes it on the way
out, and end with one line and exit code 130 / 143 (128 + the signal's number, the shell's convention). The
signal is also recorded, and the long loops (training and sampler steps, caching, conversion, evaluation,
synthetic data) call :func:`raise_if_stopped`, so a signal whose exception Python dropped inside a finaliser still
stops the job.
Anything else is a bug and keeps its traceback.

**CPU threads.** torch's default (one thread per core) made ``scripts/sample.py`` take 46 s one run and
3.7 s the next on a shared 2-core machine (3.2 s with one thread): OpenMP threads that wait on a core
another job holds stall every operation. So on a CPU every entry point uses half the CPUs this
process may run on (about one per physical core), at least 1 and at most 8, unless told otherwise:
``threads=N`` (Hydra scripts) or ``--threads N`` wins, and a set ``OMP_NUM_THREADS`` is left to torch,
which reads it at start-up (torchrun sets it to 1). With a CUDA device torch's default is kept.
A job that owns every CPU (the tiny-model build) also keeps its OpenMP threads spinning between operations
(:func:`spin_waiting_threads`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import sys
from pathlib import Path
from typing import Callable

BAD_INPUT = 2
INTERRUPTED, TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM  # 130, 143
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


# Spins of an idle libgomp thread before it sleeps (libgomp's default 300,000): ~0.1 s, not OMP_WAIT_POLICY=ACTIVE's
# ~forever, whose idle thread in the parent slowed the build's two cache processes 1.45x (BENCHMARKS.md, "Training").
SPIN_COUNT = 3_000_000
WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def openmp_wait_setting() -> str:
    """How this process's OpenMP threads wait, as set in the environment: ``NAME=value`` or ``default``."""
    return next((f"{name}={os.environ[name]}" for name in WAIT_VARIABLES if name in os.environ), "default")


def spin_waiting_threads() -> str:
    """Let torch's OpenMP threads spin longer between parallel regions before they sleep (``GOMP_SPINCOUNT``, libgomp:
    torch's OpenMP on Linux): for a job that owns every CPU of the machine, such as ``make tiny-model``.

    The tiny models' training steps are thousands of small operations; a worker that has gone to sleep between them
    must be woken for the next, which on a loaded virtual machine is slow: on a 2-core KVM host in a slow hour two
    threads made a VAE training step slower than one (0.52 s against 0.42 s), and spinning made it 0.40 s; an hour
    later, the host faster, spinning changed little (benchmarks/bench_wait_policy.py, BENCHMARKS.md "Training").
    Arithmetic is unchanged. Beside another job it costs that job a core while a thread spins, so only the build
    calls it. OpenMP reads the setting when torch loads it: call this before anything imports torch. A spin count or
    wait policy the user set is left alone. Returns :func:`openmp_wait_setting`.
    """
    if any(name in os.environ for name in WAIT_VARIABLES):
        return openmp_wait_setting()
    if "torch" in sys.modules:  # a bug of the entry point: OpenMP has read its settings already
        raise RuntimeError("spin_waiting_threads() must run before torch is imported")
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return openmp_wait_setting()


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


@contextlib.contextmanager
def ordered_in_processes(function: Callable, items, workers: int, initializer: Callable | None = None, initargs=()):
    """``with ordered_in_processes(f, items, n) as results:`` iterates ``f(item)`` in the items' order, computed in ``n``
    spawned processes of one torch thread each: for loops of small CPU work (rendering, tiny encoders) that two
    threads do no faster than one. ``f`` and ``initializer`` must be importable module functions; ``initializer(*initargs)``
    runs once per process (e.g. to receive a dataset). Ctrl+C is left to this process: on any exit queued items are
    cancelled and the running ones finished, so the caller's clean-up runs with no worker left writing; a worker that
    dies is a BrokenProcessPool error, not a wait without end.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a forked child would inherit torch's OpenMP state, which does not survive fork
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(initializer, tuple(initargs)))
    try:
        yield _submit_all(executor, function, items)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _submit_all(executor, function: Callable, items):
    """``executor.map``, which starts the workers, with Ctrl+C ignored meanwhile: they keep that from birth, so
    one in its start-up does not print a traceback of its own (a Ctrl+C in these milliseconds is lost)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return executor.map(function, items)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return executor.map(function, items)
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    import torch

    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def run_child(command: list[str], env: dict | None = None, grace_s: float = 60.0) -> int:
    """Run ``command`` to its end and return its exit code. A stop of this process (Ctrl+C, SIGTERM: run_script's
    exceptions) is passed on to the child as SIGTERM and the child waited for (``grace_s``, then killed), so no
    training process is left running behind a stopped build; torchrun passes the SIGTERM on to its workers."""
    import subprocess

    child = subprocess.Popen(command, env=env)
    try:
        return child.wait()
    except BaseException:
        child.terminate()
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def python_command() -> str:
    """This interpreter as a fresh shell in the current folder can start it: ``.venv/bin/python`` for the
    project's virtual environment (nothing needs activating), else the interpreter's absolute path."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(Path.cwd()))
    except ValueError:
        return str(executable)


# ----------------------------------------------------------------------------- the error contract


class Terminated(BaseException):
    """SIGTERM raised in the main thread, so ``finally`` blocks and ``except BaseException`` clean up as they do
    for Ctrl+C (a BaseException, like KeyboardInterrupt, so ``except Exception`` handlers do not swallow it)."""


STOP_EXCEPTIONS = {signal.SIGTERM: Terminated, signal.SIGINT: KeyboardInterrupt}  # what run_script's handlers raise
_stop_signal: int | None = None  # the signal run_script's handler received, until the script ends


def _record_and_raise(signum, frame):
    global _stop_signal
    _stop_signal = signum
    raise STOP_EXCEPTIONS[signum]()


def raise_if_stopped() -> None:
    """Raise again a SIGTERM or Ctrl+C whose exception was lost; long loops call this once per step.

    A signal's exception raised while Python runs a finaliser (a ``__del__``, a weakref callback: tqdm, tempfile and
    torch have them) is printed as "Exception ignored in ..." and dropped, and the program runs on: a training run
    told to stop would train to its last step. The handler records the signal, so the next step stops it.
    """
    if _stop_signal is not None:
        raise STOP_EXCEPTIONS[_stop_signal]()


def config_error_line(error: BaseException) -> str:
    """One line from a Hydra/OmegaConf error: its first line, with Hydra's hint or list of options appended."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = lines[0]
    if len(lines) > 1 and lines[1].startswith("To append"):  # Could not override 'x'. To append to your config use +x=1
        line += " " + lines[1]
    if any(text.startswith("Available options") for text in lines):
        start = next(i for i, text in enumerate(lines) if text.startswith("Available options")) + 1
        options = [text for text in lines[start:] if not text.startswith("Config search path") and "provider=" not in text]
        line += f"; available: {', '.join(options)}"
    return line


class ArgumentParser(argparse.ArgumentParser):
    """argparse under the error contract: a usage error is one line and exit 2 (argparse printed its usage first)."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def check_required(cfg) -> None:
    """One line naming every required option (``???``) the command left unset, before any heavy import."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"required option{'s' if len(missing) > 1 else ''} not given: "
                         + ", ".join(f"{key}=..." for key in missing))


def _drop_torchvision_fallback_notice(record) -> bool:
    return "requires torchvision (not installed)" not in str(record.msg)


def quiet_known_notices() -> None:
    """Drop transformers' notice that CLIPImageProcessor falls back to its PIL backend without torchvision: the
    project does not install torchvision (its wheels pin a torch build), the PIL backend is what runs,
    and the notice made every one-line error two lines."""
    import logging

    logging.getLogger("transformers.utils.import_utils").addFilter(_drop_torchvision_fallback_notice)


def say(line: str) -> None:
    """One line on stderr in one write, so the lines of several processes sharing it (torchrun) never interleave."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def error_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line_errors(task: Callable) -> Callable:
    """Decorate a Hydra task function (under ``@hydra.main``): bad input, a ValueError or an OmegaConf error such as a
    missing ``???`` value, is one line and exit 2 from inside the task, where Hydra adds no line of its own."""
    from omegaconf.errors import OmegaConfBaseException

    @functools.wraps(task)
    def wrapped(cfg):
        try:
            return task(cfg)
        except (ValueError, OmegaConfBaseException) as error:
            say(f"error: {error_line(error)}")
            sys.exit(BAD_INPUT)

    return wrapped


def run_script(main: Callable[[], int | None]) -> None:
    """Run a script's ``main`` under the error contract above and exit with its code (None: 0).

    Hydra scripts: Hydra is told to re-raise config errors (``HYDRA_FULL_ERROR``) instead of printing several lines
    and exiting 1, and they become one line and exit 2 here.
    """
    from omegaconf.errors import OmegaConfBaseException

    try:
        from hydra.errors import HydraException
    except ImportError:  # pragma: no cover - hydra is a dependency
        HydraException = OmegaConfBaseException
    global _stop_signal
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    _stop_signal = None
    previous = {signum: signal.getsignal(signum) for signum in STOP_EXCEPTIONS}
    signal.signal(signal.SIGTERM, _record_and_raise)
    if previous[signal.SIGINT] is signal.default_int_handler:  # an ignored SIGINT (nohup, a background job) stays ignored
        signal.signal(signal.SIGINT, _record_and_raise)
    try:
        code = main()
    except KeyboardInterrupt:
        say("interrupted (SIGINT): stopped, unfinished outputs removed")
        code = INTERRUPTED
    except Terminated:
        say("terminated (SIGTERM): stopped, unfinished outputs removed")
        code = TERMINATED
    except (HydraException, OmegaConfBaseException) as error:
        say(f"error: {config_error_line(error)}")
        code = BAD_INPUT
    except ValueError as error:  # bad input that reached past the script's own handler
        say(f"error: {error_line(error)}")
        code = BAD_INPUT
    finally:  # a script run in-process (tests) leaves neither its handlers nor a recorded stop behind
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be set back
                signal.signal(signum, handler)
        _stop_signal = None
    sys.exit(code or 0)
