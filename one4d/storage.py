"""Where the frozen base's weights live: fp8 storage with bf16 compute, and block-level offloading to the CPU.

Both are diffusers' own mechanisms, applied from outside the model (STYLE item 2) by the trainer and the
pipeline, never inside ``one4d.models``:

* :func:`enable_fp8_base_storage`: ``ModelMixin.enable_layerwise_casting`` on the base transformer. The
  Linear weights of its blocks are stored in fp8 and cast to the compute dtype just before each layer runs
  (the frozen 14B base: 32.8 GB in bf16 -> about 16.5 GB). diffusers' default skips keep the patch
  embedding, condition embedder, norms, modulation and ``proj_out`` in their dtype, and skip every peft
  layer, so the LoRA weights stay fp32; the links and XYZ heads live outside the base and are untouched.
  This is what DiffSynth (``--fp8_models``), musubi-tuner (``--fp8_base``) and finetrainers
  (``--layerwise_upcasting_modules``) ship for LoRA training on a frozen fp8 base.
* :func:`enable_base_group_offload`: ``ModelMixin.enable_group_offload(offload_type="block_level")`` on the
  base: each block stays on the CPU and visits the GPU while it runs, one block resident at a time. No CUDA
  stream prefetch: diffusers learns the order to prefetch in from a first ``base.forward``, which the joint
  model never calls, and DLC runs every block twice per layer (RGB, XYZ), so the hook copies a block for each
  of its two calls, synchronously. (Prefetching a whole DLC layer at once would need an offload unit per
  layer, which diffusers does not offer.) The joint model calls the base's non-block modules directly, not
  through ``base.forward`` where diffusers would move them, so they are placed on the device here.

:func:`check_precision` is the boundary check of ``model.dtype`` / ``model.base_storage_dtype`` on a device.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STORAGE_DTYPES = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """A config's compute dtype name (``model.dtype``, ``model.encoder_dtype``) -> the torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def storage_dtype(name: str | None) -> torch.dtype | None:
    """``model.base_storage_dtype`` -> a torch dtype (None: the base is stored in its compute dtype)."""
    if name is None:
        return None
    if name not in STORAGE_DTYPES:
        raise ValueError(f"model.base_storage_dtype must be null or one of {sorted(STORAGE_DTYPES)}, got {name!r}")
    return STORAGE_DTYPES[name]


def check_precision(dtype: torch.dtype, device: str | torch.device, storage: torch.dtype | None = None) -> None:
    """Refuse, with one line saying what to use instead, a compute or storage dtype the device cannot run.

    A CUDA GPU without bf16 arithmetic (before Ampere) is refused. A CPU runs bf16 and fp16 either natively
    (AVX512-BF16 / AMX, AVX512-FP16) or emulated, correct but slow: the latter gets one warning line.
    """
    device = torch.device(device)
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no bf16 arithmetic: use model.dtype=float16 (or float32)")
    if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported() if dtype == torch.bfloat16 else torch.ops.mkldnn._is_mkldnn_fp16_supported()
        if not native:
            warnings.warn(f"this CPU has no {dtype} instructions: it runs emulated and slowly; model.dtype=float32 is faster here",
                          stacklevel=2)
    if storage is not None:
        if dtype == torch.float32:
            raise ValueError("fp8 base storage computes in model.dtype: use model.dtype=bfloat16 with it")
        try:
            torch.ones(4, device=device).to(storage).to(dtype)
        except (RuntimeError, TypeError) as error:
            raise ValueError(
                f"{device} cannot store weights in {storage} ({str(error).splitlines()[0]}): use model.base_storage_dtype=null"
            ) from None


def enable_fp8_base_storage(model: nn.Module, storage: torch.dtype = torch.float8_e4m3fn) -> nn.Module:
    """Store the frozen base's block Linears in ``storage`` (fp8) and compute them in the base's dtype.

    Call it after the model is on its device (and after DDP / DeepSpeed broadcast the weights: gloo has
    no fp8). The compute dtype is the dtype of the base's block weights (``model.dtype``).
    """
    base = model.base
    compute = base.condition_embedder.text_embedder.linear_1.weight.dtype  # model.dtype (kept by layerwise casting)
    if compute not in (torch.bfloat16, torch.float16):
        raise ValueError(f"fp8 base storage computes in the base's dtype, which is {compute}: use model.dtype=bfloat16")
    base.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)
    _restore_peft_input_casting(base)
    return model


def _restore_peft_input_casting(base: nn.Module) -> None:
    """Undo diffusers' "peft_autocast_disable" hooks: they assume LoRA weights stored like the base, but ours are
    fp32 and never cast (skipped), so peft must keep casting each layer's bf16 input to the LoRA's fp32."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.layerwise_casting import _PEFT_AUTOCAST_DISABLE_HOOK

    for module in base.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if isinstance(registry, HookRegistry) and registry.get_hook(_PEFT_AUTOCAST_DISABLE_HOOK) is not None:
            registry.remove_hook(_PEFT_AUTOCAST_DISABLE_HOOK, recurse=False)


def enable_base_group_offload(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Keep the base's blocks on the CPU, each moved to ``device`` while it runs; everything else on ``device``."""
    device = torch.device(device)
    base = model.base
    base.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                              num_blocks_per_group=1, use_stream=False)
    for name, child in base.named_children():
        if name != "blocks":  # called directly by the joint model, so never moved by the offload hooks
            child.to(device)
    for name, parameter in base.named_parameters(recurse=False):  # scale_shift_table
        parameter.data = parameter.data.to(device)
    for name, child in model.named_children():
        if name != "base":  # links, XYZ patch embedding and proj_out
            child.to(device)
    return model
