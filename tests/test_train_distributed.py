"""Two CPU processes (torchrun, gloo): DeepSpeed ZeRO-2, ZeRO-3 and plain DDP end with identical weights on both ranks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from one4d.training.testing import write_synthetic_clips

ROOT = Path(__file__).resolve().parents[1]

# Each rank writes its own trainable weights after training, so the test compares what every process holds.
RANK_DUMP = """
import sys, torch
from safetensors.torch import save_file
from one4d.training import Trainer
from one4d.training.testing import compose_train_config
trainer = Trainer(compose_train_config(sys.argv[2:])).setup()
before = {k: v.detach().clone() for k, v in trainer.trainable_weights().items()}
trainer.train()
after = trainer.trainable_weights()
changed = sum(not torch.equal(before[k], after[k]) for k in after)
compiled = str(all(block._compiled_call_impl is not None for block in trainer.unwrapped_model().base.blocks))
import weakref, torch.distributed as dist
model = weakref.ref(trainer.unwrapped_model())
trainer.close()
zero3 = sys.modules.get("deepspeed.runtime.zero.parameter_offload")
# close ended the group and took the model off ZeRO-3's module-level stack
ended = str(not dist.is_initialized() and not (zero3 and zero3.FWD_MODULE_STACK))
released = str(model() is None)
save_file({k: v.contiguous() for k, v in after.items()}, f"{sys.argv[1]}/rank{trainer.rank}.safetensors", metadata={"changed": str(changed), "world": str(trainer.world_size), "compiled": compiled, "ended": ended, "released": released})
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_synthetic_clips(tmp_path_factory.mktemp("clips"), count=4, num_frames=5, size=32)


@pytest.mark.slow
@pytest.mark.parametrize("launcher, options", [
    ("ddp", []), ("deepspeed_zero2", []), ("deepspeed_zero3", []),
    # the paper recipe's launcher with regional compile (traced by dynamo; inductor needs a compiler and minutes)
    ("deepspeed_zero2", ["train.compile=true", "train.compile_options={backend: eager}"]),
], ids=["ddp", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero2_compiled"])
def test_two_processes_end_with_identical_weights(launcher, options, clips, tmp_path):
    script = tmp_path / "rank_dump.py"
    script.write_text(RANK_DUMP)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
        str(script), str(tmp_path), "experiment=tiny_cpu", f"launcher={launcher}", f"data.roots=[{clips}]", f"run_dir={tmp_path / 'run'}",
        "train.report_to=null", "train.progress_bar=false", "train.steps=2", "train.grad_accum=2", "train.checkpoint_every=2",
        "train.log_every=1", "+model.base_overrides.num_layers=2", *options,
    ]
    # PYTHONFAULTHANDLER: a rank that aborts (SIGABRT) prints where every thread of it was
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]
    ranks = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) > 0
    assert all(torch.equal(ranks[0][name], ranks[1][name]) for name in ranks[0])
    from safetensors import safe_open

    for rank in (0, 1):
        with safe_open(tmp_path / f"rank{rank}.safetensors", "pt") as handle:
            metadata = handle.metadata()
        assert metadata["world"] == "2" and int(metadata["changed"]) > 0  # really two processes, and training moved weights
        assert metadata["compiled"] == str(bool(options))
        assert metadata["ended"] == "True"  # an orderly end: the process group and ZeRO-3's hold on the model gone
        # and the model freed before exit (not asserted under ZeRO-3: with gradient accumulation DeepSpeed's C++
        # autograd hooks still hold its engine, Trainer.close)
        assert metadata["released"] == "True" or launcher == "deepspeed_zero3"
    assert (tmp_path / "run" / "checkpoints" / "step-0000002" / "manifest.json").is_file()
