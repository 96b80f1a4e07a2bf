"""Ranks whose share of jobs or sequences ends first wait for the others at the end of a run (the jobs file's
counts, evaluation's gather). That wait can be a whole clip long (minutes to an hour with the 14B model on one
GPU), more than a collective's default timeout (NCCL's 10 minutes): those waits go through a gloo group with
a long timeout (``one4d.parallel.layout.wait_group``). Here the default group's timeout is 2 s and one rank
arrives 5 s late."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys, time
    from datetime import timedelta
    import torch, torch.distributed as dist
    from one4d.parallel.layout import start_process_group, wait_group

    dist.init_process_group("gloo", timeout=timedelta(seconds=2))
    start_process_group(torch.device("cpu"))  # already started: adds only the waiting group
    if dist.get_rank() == 1:
        time.sleep(5)  # a longer share
    counts = [None] * dist.get_world_size()
    dist.all_gather_object(counts, dist.get_rank(), group=wait_group())
    assert counts == [0, 1], counts
    print("gathered", counts)
    dist.destroy_process_group()
""")


def test_a_rank_arriving_after_the_default_timeout_is_still_waited_for(tmp_path):
    script = tmp_path / "late.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.count("gathered [0, 1]") == 2, result.stderr[-3000:]
