"""The memory model (``one4d/memory.py``) against the memory a real training step on the CPU holds.

How the peak is measured: the bytes of live tensor storages. At the start of the window every storage of the
model's parameters, buffers and AdamW states is counted; inside it a ``TorchDispatchMode`` sees the outputs of
every op (forward, checkpoint recomputation, backward and optimizer step alike) and counts each new storage once;
a weakref callback on the storage subtracts it when torch frees it. The batch is encoded before the window (the
frozen VAE / UMT5 / CLIP and the data are not the model's memory, and the model does not count them), and one
warm-up step creates AdamW's states, so the window is one steady-state forward + backward + optimizer step of
the real ``Trainer``. Not seen: kernels' internal scratch buffers, which are not tensors.

Size: the tiny preset widened to 4 heads x 32 (dim 128, ffn 512), 17 frames at 128 x 128 (320 tokens per branch),
so that frozen weights, trainables with their AdamW states, and activations all weigh in.
"""

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from one4d.memory import (
    count_image_tokens, count_parameters, estimate_sampling_memory, estimate_training_memory, layer_saved_bytes, shapes,
)
from one4d.training import StepDraws, Trainer
from one4d.training.builders import build_joint_model
from one4d.training.testing import compose_train_config, write_synthetic_clips

FRAMES, SIZE = 17, 128
WIDER = ["+model.base_overrides.num_attention_heads=4", "+model.base_overrides.attention_head_dim=32",
         "+model.base_overrides.ffn_dim=512", "+model.base_overrides.added_kv_proj_dim=128"]


class LiveStorageBytes(TorchDispatchMode):
    """Bytes of live tensor storages and their peak: ``existing`` tensors plus every op output inside the mode."""

    def __init__(self, existing):
        super().__init__()
        self.live = self.peak = 0
        self._storages = {}  # StorageImpl address -> weakref whose callback subtracts the storage when it is freed
        for tensor in existing:
            self._add(tensor)

    def _add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, nbytes = storage._cdata, storage.nbytes()
        if key in self._storages or nbytes == 0:  # a view of a counted storage, or nothing
            return
        self._storages[key] = weakref.ref(storage, lambda _, key=key, nbytes=nbytes: self._free(key, nbytes))
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def _free(self, key: int, nbytes: int) -> None:
        del self._storages[key]
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._add(leaf)
        return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_synthetic_clips(tmp_path_factory.mktemp("clips"), count=2, num_frames=FRAMES, size=SIZE)


def config(tmp_path, *overrides):
    return compose_train_config([
        "experiment=tiny_cpu", f"run_dir={tmp_path / 'run'}", "train.report_to=null", "train.progress_bar=false",
        "train.checkpoint_every=0", "train.log_every=0", f"data.num_frames={FRAMES}", f"data.height={SIZE}",
        f"data.width={SIZE}", *WIDER, *overrides,
    ])


def measure_training_step(trainer: Trainer) -> tuple[int, dict]:
    """Peak live bytes of one steady-state ``train_step``, with its batch encoded beforehand; returns it and the batch."""
    batch = next(trainer.batches())
    prepared = trainer.adapter.prepare_batch(batch, trainer.accelerator.device, StepDraws(torch.Generator().manual_seed(0)))
    trainer.adapter.prepare_batch = lambda *args, **kwargs: prepared
    trainer.train_step(iter([batch]))  # warm-up: AdamW's states exist from here on
    model, optimizer = trainer.model, trainer.optimizer
    states = [value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value)]
    with LiveStorageBytes([*model.parameters(), *model.buffers(), *states]) as tracker:
        trainer.train_step(iter([batch]))
    return tracker.peak, prepared


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_saved_bytes_are_what_autograd_saves(tmp_path, dtype):
    """The derivation itself: every storage autograd saves in one DLC layer with a link (parameters and the layer's
    inputs excluded, each storage once) adds up to ``layer_saved_bytes`` exactly, on the CPU."""
    cfg = config(tmp_path, f"model.dtype={str(dtype).removeprefix('torch.')}")
    model = build_joint_model(cfg.model)
    rgb, xyz = torch.randn(1, 36, 2, 8, 8), torch.randn(1, 16, 2, 8, 8)
    rotary = model.base.rope(rgb)
    _, timestep_proj, context = model.embed_conditions(torch.tensor([500.0]), torch.randn(1, 512, 32, dtype=dtype),
                                                       torch.randn(1, 17, 32, dtype=dtype))
    streams = [model.to_tokens(model.embed_patches(embedding, x)).to(dtype).detach().requires_grad_()
               for embedding, x in ((model.base.patch_embedding, rgb), (model.xyz_patch_embedding, xyz))]
    known = {t.untyped_storage()._cdata for t in [*model.parameters(), *streams, context, timestep_proj, *rotary]}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage._cdata not in known:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model._layer(model.link_layers[0], *streams, context, timestep_proj, rotary)
    s = shapes(model, 1, 5, 64, 64, int(cfg.model.lora_rank), 17, dtype.itemsize, device="cpu")
    assert sum(saved.values()) == layer_saved_bytes(s, has_link=True)


@pytest.mark.parametrize("checkpointing", [True, False], ids=["checkpointing", "no-checkpointing"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_estimate_is_within_20_percent_of_the_measured_peak(clips, tmp_path, dtype, checkpointing):
    cfg = config(tmp_path, f"data.roots=[{clips}]", f"model.dtype={dtype}", f"train.gradient_checkpointing={checkpointing}")
    trainer = Trainer(cfg).setup()
    measured, prepared = measure_training_step(trainer)
    estimate = estimate_training_memory(cfg, world_size=1, device="cpu")  # image tokens read from the tiny CLIP config
    print(f"\n{estimate.format()}\nmeasured {measured / 2**20:.2f} MiB, estimate / measured = {estimate.total / measured:.3f}")

    # The categories that are plain counts are exact against the real model and optimizer.
    model, optimizer = trainer.model, trainer.optimizer
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    assert estimate.parts["frozen base"] == frozen + sum(b.numel() * b.element_size() for b in model.buffers())
    assert estimate.parts["trainable weights"] == sum(p.numel() * 4 for p in model.trainable_parameters())
    states = [value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value)]
    assert estimate.parts["optimizer states"] == sum(t.numel() * t.element_size() for t in states)
    assert count_parameters(model) == count_parameters(build_joint_model(cfg.model, device="meta"))
    assert count_image_tokens(cfg.model, model) == prepared["image_embeds"].shape[1]

    assert 0.8 <= estimate.total / measured <= 1.2
    # A real test: the activations are most of the peak, so a model that forgot them would fail.
    assert estimate.total - estimate.parts["activations"] < 0.8 * measured


def test_sampling_estimate_is_within_20_percent_of_a_measured_forward(tmp_path):
    """One batched CFG forward (batch 2) without gradients in bf16, as the pipeline's denoising step runs it."""
    cfg = config(tmp_path, "model.dtype=bfloat16")
    model = build_joint_model(cfg.model).eval()
    latent = ((FRAMES - 1) // 4 + 1, SIZE // 8, SIZE // 8)
    rgb, xyz = torch.randn(2, 36, *latent, dtype=torch.bfloat16), torch.randn(2, 16, *latent, dtype=torch.bfloat16)
    text, image = torch.randn(2, 512, 32, dtype=torch.bfloat16), torch.randn(2, 17, 32, dtype=torch.bfloat16)
    with torch.no_grad(), LiveStorageBytes([*model.parameters(), *model.buffers()]) as tracker:
        model(rgb, xyz, torch.full((2,), 500.0), text, image)
    estimate = estimate_sampling_memory(cfg, image_token_count=17, device="cpu")
    print(f"\n{estimate.format()}\nmeasured {tracker.peak / 2**20:.2f} MiB, estimate / measured = {estimate.total / tracker.peak:.3f}")
    assert 0.8 <= estimate.total / tracker.peak <= 1.2
    assert estimate.total - estimate.parts["activations"] < 0.8 * tracker.peak


def test_14b_recipe_counts_and_launchers():
    """The paper's recipe on 8 GPUs: the documented parameter counts, and what ZeRO-3 and fp8 storage change."""
    zero2 = compose_train_config(["experiment=one4d_14b"])
    zero3 = compose_train_config(["experiment=one4d_14b", "launcher=deepspeed_zero3"])
    base = estimate_training_memory(zero2, world_size=8)
    sharded = estimate_training_memory(zero3, world_size=8, fp8=True)
    trainables = 981_130_304  # configs/model/wan2.1-fun-14b-inp.yaml, README
    assert base.parts["trainable weights"] == 4 * trainables + 4 * trainables // 8  # whole + fp32 partition clone
    assert base.parts["optimizer states"] == 2 * 4 * trainables // 8 + 4
    assert 30 * 2**30 < base.parts["frozen base"] < 31 * 2**30  # 16.39B parameters in bf16, norms in fp32
    assert sharded.parts["frozen base"] < base.parts["frozen base"] / 8 / 1.9  # partitioned and fp8
    assert base.parts["activations"] == sharded.parts["activations"] - 5120 * 13824 * 2  # + one upcast Linear
    with pytest.raises(ValueError, match="launcher=single runs one process"):
        estimate_training_memory(compose_train_config(["experiment=one4d_14b", "launcher=single"]), world_size=8)
