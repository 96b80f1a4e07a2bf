"""Two CPU processes (torchrun, gloo): DeepSpeed ZeRO-2, ZeRO-3 and plain DDP end with identical weights on both ranks,
and with the same global batch, where one process ends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from one4d.training.testing import write_synthetic_clips

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.multicore  # two processes in every test

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


def test_two_processes_train_what_one_process_trains_with_the_same_global_batch(clips, tmp_path):
    """train.global_batch_size: the data order and every sample's noise, sigma and prompt dropout (StepDraws) are
    the one-process run's, so two processes end where one does, up to the rounding of the gradient average; and
    the two processes' checkpoint continues on one process to the same end (check_resumable)."""
    script = tmp_path / "rank_dump.py"
    script.write_text(RANK_DUMP)
    common = [
        "experiment=tiny_cpu", f"data.roots=[{clips}]", "train.report_to=null", "train.progress_bar=false", "train.steps=4",
        "train.global_batch_size=2", "train.grad_accum=2", "train.checkpoint_every=2", "train.keep_last=0", "train.log_every=0",
        "+model.base_overrides.num_layers=2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two_processes = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    runs = {}
    for name, launch, extra in (("one", [sys.executable], []), ("two", two_processes, ["launcher=ddp"]),
                                ("two_then_one", [sys.executable], [f"train.resume={tmp_path / 'two' / 'run' / 'checkpoints' / 'step-0000002'}"])):
        folder = tmp_path / name
        folder.mkdir()
        result = subprocess.run([*launch, str(script), str(folder), *common, f"run_dir={folder / 'run'}", *extra],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]
        checkpoint = folder / "run" / "checkpoints" / "step-0000004"
        runs[name] = load_file(folder / "rank0.safetensors"), json.loads((checkpoint / "losses.json").read_text())
    (one, one_losses), (two, two_losses), (resumed, resumed_losses) = runs["one"], runs["two"], runs["two_then_one"]
    assert len(one_losses) == 4 and torch.allclose(torch.tensor(two_losses), torch.tensor(one_losses), rtol=1e-4)
    assert torch.allclose(torch.tensor(resumed_losses), torch.tensor(one_losses), rtol=1e-4)
    assert one.keys() == two.keys() == resumed.keys()
    # measured: 1.1e-6 at most (0.1 % of a step at lr 1e-3); each process drawing its own noise: see the losses
    for other in (two, resumed):
        moved = max(float((one[name] - other[name]).abs().max()) for name in one)
        assert all(torch.allclose(other[name], one[name], rtol=1e-4, atol=2e-5) for name in one), moved


@pytest.mark.parametrize("launcher", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_checkpoint_continues_on_its_own_and_on_another_process_count(launcher, clips, tmp_path):
    """``scripts/train.py`` under torchrun: a two-process ZeRO run's step-2 checkpoint, resumed on two processes and on
    one (DeepSpeed's universal checkpoint), ends where the uninterrupted run ends, and a one-process checkpoint
    continues on two. Without the optimizer's partitions the weights differ by 5e-3 and the last loss by 5 %; ZeRO-3's
    resume failed outright before (its partitioned module could not take the saved trainable state)."""
    common = [
        "experiment=tiny_cpu", f"launcher={launcher}", f"data.roots=[{clips}]", "train.report_to=null", "train.progress_bar=false",
        "train.steps=4", "train.global_batch_size=2", "train.grad_accum=2", "train.checkpoint_every=2", "train.keep_last=0",
        "train.log_every=0", "+model.base_overrides.num_layers=2", "threads=1",
    ]
    two, one = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def train(name, launch, *extra, expect=0):
        result = subprocess.run([*launch, str(ROOT / "scripts" / "train.py"), *common, f"run_dir={tmp_path / name}", *extra],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert result.returncode == expect, result.stdout[-1500:] + result.stderr[-3000:]
        return result

    def halfway(name):
        return f"train.resume={tmp_path / name / 'checkpoints' / 'step-0000002'}"

    train("uninterrupted", two)
    train("first_half_on_one", one)
    runs = {"on_two": (two, halfway("uninterrupted")), "on_one": (one, halfway("uninterrupted")),
            "one_then_two": (two, halfway("first_half_on_one"))}
    if launcher == "deepspeed_zero2":  # the paper's launcher: the architecture checked before the engine loads
        refused = train("other_rank", one, halfway("uninterrupted"), "model.lora_rank=4", expect=2)
        assert "does not fit this model (lora_rank: checkpoint has 8, model has 4)" in refused.stderr.splitlines()[-1]
    for name, (launch, resume) in runs.items():
        train(name, launch, resume)
    final = {name: tmp_path / name / "checkpoints" / "step-0000004" for name in ("uninterrupted", *runs)}
    losses = {name: json.loads((folder / "losses.json").read_text()) for name, folder in final.items()}
    weights = {name: load_file(folder / "trainable" / "trainable_state.safetensors") for name, folder in final.items()}
    expected = weights["uninterrupted"]
    for name in runs:
        assert torch.allclose(torch.tensor(losses[name]), torch.tensor(losses["uninterrupted"]), rtol=1e-5)
        assert weights[name].keys() == expected.keys()
        moved = max(float((weights[name][key] - expected[key]).abs().max()) for key in expected)
        # measured: 0 on two processes, 2e-8 (ZeRO-2) / 6e-8 (ZeRO-3) on one; a first half on one process: 1.1e-6,
        # the rounding of the two processes' gradient average (as with DDP above)
        assert moved < (2e-5 if name == "one_then_two" else 1e-6), (name, moved)
        assert not (tmp_path / name / ".universal").exists()  # the converted partitions are removed after loading
