"""Ranks whose share of jobs or sequences ends first wait for the others at the end of a run (the jobs file's
counts, evaluation's gather). That wait can be a whole clip long (minutes to an hour with the 14B model on one
GPU), more than a collective's default timeout (NCCL's 10 minutes): those waits go through a gloo group with
a long timeout (``one4d.parallel.layout.wait_group``); so does, after each clip of a jobs file, the wait of a
sampling group's other ranks for its writer's decode and write (``sampling_wait_group``). Here the default group's timeout is 4 s and a rank
arrives 8 s late at each."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# two processes, whose 4 s timeout must not be spent waiting for a core
pytestmark = pytest.mark.multicore

SCRIPT = textwrap.dedent("""
    import sys, time
    from datetime import timedelta
    import torch, torch.distributed as dist
    from one4d.parallel.layout import ParallelLayout, sampling_wait_group, start, wait_group

    dist.init_process_group("gloo", timeout=timedelta(seconds=4))
    rank = dist.get_rank()
    start(ParallelLayout(world_size=2, rank=rank, cfg=2), torch.device("cpu"))  # already started: adds the waiting groups
    if rank == 0:
        time.sleep(8)  # the writer decodes and writes a clip
    dist.barrier(group=sampling_wait_group())
    if rank == 1:
        time.sleep(8)  # a longer share
    counts = [None] * dist.get_world_size()
    dist.all_gather_object(counts, rank, group=wait_group())
    assert counts == [0, 1], counts
    if rank == 0:  # one rank prints: two ranks' lines interleave
        print("gathered", counts)
    dist.destroy_process_group()
""")


def test_a_rank_arriving_after_the_default_timeout_is_still_waited_for(tmp_path):
    script = tmp_path / "late.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "gathered [0, 1]" in result.stdout, (result.stdout + result.stderr)[-3000:]
