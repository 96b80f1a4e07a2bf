"""Suite-wide settings.

One intra-op thread: the tests run tiny models whose small GEMMs only lose from OpenMP threading, and
on a shared 2-core machine two threads per process oversubscribe the cores (a tiny training step was
measured 16x slower). Subprocesses inherit OMP_NUM_THREADS.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
