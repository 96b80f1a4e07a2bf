"""The process layout of a multi-process sample: data parallel x CFG-parallel x ring x Ulysses.

``torchrun --nproc_per_node N scripts/sample.py parallel.cfg=C parallel.ulysses=U parallel.ring=R ...`` gives
``N = D x C x R x U`` processes: D data-parallel groups (each samples its share of an ``inputs=`` jobs file),
each of C x R x U ranks that sample ONE clip together. Rank order is (dp, cfg, ring, ulysses), ulysses fastest,
so a Ulysses group sits on neighbouring GPUs of one node (its all-to-all is the most frequent communication).

Everything here is checked from the config and the environment torchrun sets (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``) before any model is loaded; :func:`start` then starts the process group (NCCL on
``cuda:<LOCAL_RANK>``, gloo on the CPU) and the device mesh diffusers' context parallelism slices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

MESH_DIMS = ("dp", "cfg", "ring", "ulysses")
# Backends of diffusers' attention dispatcher (models/attention_dispatch.py, diffusers 0.42.1) by what their context
# parallel path can do. Ulysses needs supports_context_parallel=True; ring also needs the backend to return the
# log-sum-exp (native SDPA and the NPU backend raise on return_lse); padded keys need an attention mask, which the
# flash and sage kernels refuse ("attn_mask is not yet supported"). All but "native" need CUDA (or an NPU).
ULYSSES_BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_npu", "flash", "flash_hub", "flash_varlen_hub",
                    "_flash_3_hub", "_flash_3_varlen_hub", "sage", "sage_hub")
RING_BACKENDS = tuple(name for name in ULYSSES_BACKENDS if name not in ("native", "_native_npu"))
MASK_BACKENDS = ("native", "_native_cudnn")


@dataclass(frozen=True)
class ParallelLayout:
    """Degrees of each parallel dimension and this process's rank; ``dp`` is what is left of the world."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    cfg: int = 1
    ring: int = 1
    ulysses: int = 1

    @property
    def group_size(self) -> int:
        """Processes that sample one clip together."""
        return self.cfg * self.ring * self.ulysses

    @property
    def dp(self) -> int:
        return self.world_size // self.group_size

    @property
    def dp_rank(self) -> int:
        """Which data-parallel group this process belongs to."""
        return self.rank // self.group_size

    @property
    def writes(self) -> bool:
        """Only the first rank of each group decodes and writes outputs."""
        return self.rank % self.group_size == 0

    @property
    def sequence_parallel(self) -> int:
        return self.ring * self.ulysses

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def layout_from_config(parallel, environ=os.environ) -> ParallelLayout:
    """The layout the ``parallel`` config block asks for, in the world torchrun started (1 process without it)."""
    degrees = {}
    for key in ("cfg", "ring", "ulysses"):
        value = (parallel or {}).get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"parallel.{key} must be a positive whole number, got {value!r}")
        degrees[key] = value
    return ParallelLayout(int(environ.get("WORLD_SIZE", 1)), int(environ.get("RANK", 0)), int(environ.get("LOCAL_RANK", 0)), **degrees)


def check_layout(layout: ParallelLayout, *, heads: int, backend: str | None, jobs_file: bool, guidance: bool) -> None:
    """One ValueError per layout that cannot run; nothing is loaded yet.

    heads: the preset's attention heads (Ulysses gives each rank heads / ulysses of them); backend: the
    model's ``attention_backend`` (None: diffusers' default, native SDPA); jobs_file: whether ``inputs=`` gives
    many clips (only then can data-parallel groups have work); guidance: whether ``cfg != 1``.
    """
    if layout.cfg > 2:
        raise ValueError(f"parallel.cfg must be 1 or 2 (the conditional and unconditional passes), got {layout.cfg}")
    if layout.world_size % layout.group_size:
        raise ValueError(f"parallel.cfg x parallel.ring x parallel.ulysses = {layout.cfg} x {layout.ring} x {layout.ulysses} = "
                         f"{layout.group_size} does not divide the {layout.world_size} processes started; start a multiple of "
                         f"{layout.group_size} (torchrun --nproc_per_node) or change the degrees")
    if layout.dp > 1 and not jobs_file:
        raise ValueError(f"{layout.world_size} processes but parallel.cfg x ring x ulysses = {layout.group_size}: the other "
                         f"processes would sample the same clip; give inputs=FILE (a jobs file) or raise the degrees")
    if layout.cfg == 2 and not guidance:
        raise ValueError("parallel.cfg=2 splits the guided and unguided passes, but cfg=1 runs only one; use parallel.cfg=1")
    if heads % layout.ulysses:
        raise ValueError(f"parallel.ulysses={layout.ulysses} must divide the model's {heads} attention heads "
                         f"(each rank takes heads / ulysses); use a divisor of {heads}")
    name = backend or "native"
    if layout.ulysses > 1 and name not in ULYSSES_BACKENDS:
        raise ValueError(f"attention backend {name!r} has no sequence parallel support in diffusers; use one of {', '.join(ULYSSES_BACKENDS)}")
    if layout.ring > 1 and name not in RING_BACKENDS:
        raise ValueError(f"parallel.ring needs an attention backend that returns the log-sum-exp, {name!r} does not; "
                         f"use one of {', '.join(RING_BACKENDS)} (CUDA), or parallel.ulysses")
    if layout.ring > 1 and layout.ulysses > 1:
        raise ValueError("parallel.ring and parallel.ulysses together (diffusers' unified attention) are not supported; use one")


def check_token_count(layout: ParallelLayout, tokens: int, backend: str | None) -> None:
    """Padding the sequence to a multiple of the degree needs masked keys: ring and flash/sage kernels cannot."""
    if layout.sequence_parallel == 1 or tokens % layout.sequence_parallel == 0:
        return
    if layout.ring > 1:
        raise ValueError(f"{tokens} tokens per branch do not divide by parallel.ring={layout.ring} and ring attention takes "
                         f"no padding mask; choose a ring degree that divides {tokens}, or parallel.ulysses")
    if (backend or "native") not in MASK_BACKENDS:
        raise ValueError(f"{tokens} tokens per branch do not divide by parallel.ulysses={layout.ulysses}: the padding needs "
                         f"masked keys, which backend {backend!r} does not take; use model.attention_backend=native or "
                         f"_native_cudnn, or a degree that divides {tokens}")


def rank_device(layout: ParallelLayout, requested: torch.device) -> torch.device:
    """Each rank's own GPU (``cuda:<LOCAL_RANK>``) in a multi-process CUDA run; otherwise the requested device."""
    if layout.distributed and requested.type == "cuda":
        if layout.local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {layout.local_rank} of this node has no GPU of its own ({torch.cuda.device_count()} visible); "
                             f"start at most {torch.cuda.device_count()} processes a node (torchrun --nproc_per_node)")
        return torch.device("cuda", layout.local_rank)
    return requested


# How long a rank that finished its share waits for the others (see wait_group): a whole clip or sequence of the
# 14B model on one GPU, or more with offloading, is far over NCCL's default 10-minute collective timeout.
WAIT_TIMEOUT = timedelta(hours=24)
_wait_group = _sampling_wait_group = None


def start_process_group(device: torch.device) -> None:
    """Start torch.distributed once per process (torchrun's environment): NCCL on this rank's GPU, gloo on the CPU.
    Shared by multi-process sampling and evaluation. Also starts :func:`wait_group` (every rank calls this once)."""
    import torch.distributed as dist

    global _wait_group
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # "auto" / "cuda" is then this rank's GPU
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if _wait_group is None:
        _wait_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)


def sampling_wait_group():
    """The gloo group (WAIT_TIMEOUT) of this rank's sampling group (cfg x ring x ulysses ranks of one clip), None for
    one-rank groups: after each clip of a jobs file its ranks meet here while the first one decodes and writes (the
    VAE, post-optimisation), so the others do not wait for it inside the next clip's first NCCL collective."""
    return _sampling_wait_group


def wait_group():
    """The gloo group (all ranks, WAIT_TIMEOUT) for the waits at the end of uneven shares: the jobs file's counts,
    evaluation's gather. Data-parallel groups and evaluation ranks finish their jobs / sequences at different
    times, a clip or more apart; on the default group such a wait ends the run with a collective timeout after all
    the work is done. None (the default group) before :func:`start_process_group`."""
    return _wait_group


def agreed(world_size: int, step, group=None):
    """Run ``step`` on this rank; if it raised a ValueError on any rank, raise one on every rank (its line), so that
    no process waits forever for one that stopped on bad input. ``group``: where the ranks meet afterwards, e.g.
    :func:`wait_group` (long timeout) when ranks finish ``step`` far apart."""
    import torch.distributed as dist

    result, error = None, None
    try:
        result = step()
    except ValueError as caught:
        error = str(caught)
    if world_size > 1:
        errors = [None] * world_size
        dist.all_gather_object(errors, error, group=group)
        error = next((e for e in errors if e is not None), None)
    if error is not None:
        raise ValueError(error)
    return result


def start(layout: ParallelLayout, device: torch.device):
    """Start the process group (:func:`start_process_group`) and return the (dp, cfg, ring, ulysses) mesh.
    Also starts :func:`sampling_wait_group`."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    global _sampling_wait_group
    start_process_group(device)
    if _sampling_wait_group is None and layout.group_size > 1:
        size = layout.group_size  # rank order (dp, cfg, ring, ulysses): a sampling group is size neighbouring ranks
        groups = [list(range(group * size, (group + 1) * size)) for group in range(layout.dp)]
        _sampling_wait_group, _ = dist.new_subgroups_by_enumeration(groups, timeout=WAIT_TIMEOUT, backend="gloo")
    shape = (layout.dp, layout.cfg, layout.ring, layout.ulysses)
    return init_device_mesh(device.type, shape, mesh_dim_names=MESH_DIMS)


def stop() -> None:
    import torch.distributed as dist

    global _wait_group, _sampling_wait_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _wait_group = _sampling_wait_group = None
