"""Per-GPU memory model of One4D training and sampling: an estimate from shapes, not a GPU measurement.

Parameters are counted on a meta-device model built from the composed config, at the dtypes the
trainer and the pipeline store them in (diffusers keeps its ``_keep_in_fp32_modules`` in fp32; fp8
storage is ``one4d.storage``'s, i.e. diffusers' ``enable_layerwise_casting``, applied to the meta
model, so its skip patterns are the ones counted). Activations are the tensors autograd saves, term
by term in :func:`block_saved_bytes` (read off diffusers' ``WanTransformerBlock``, peft's LoRA
``Linear`` and torch's SDPA and norm kernels), plus the transients of one block. ``tests/test_memory.py``
checks that sum against autograd's saved tensors exactly, and the whole estimate against the measured
peak of a real training step and of a sampling forward on the CPU.

Not modelled: the CUDA context and NCCL buffers (about 0.5-1 GiB), allocator caching and
fragmentation (often 5-15 %), attention-kernel workspaces, bf16 autocast under DDP
(``train.mixed_precision=bf16``; DeepSpeed runs without it, see the trainer docstring), and the
VAE decode (use ``memory.vae_tiling``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from one4d.conditioning import VAE_TEMPORAL_FACTOR
from one4d.models import TEXT_TOKENS
from one4d.models.dlc import One4DTransformer

GiB = 2**30
FP32 = 4
VAE_SPATIAL_FACTOR = 8  # Wan VAE: x8 in space (x4 in time)
CLIP_IMAGE_TOKENS = 257  # Wan2.1 I2V's CLIP ViT-H/14 at 224 px: 16 x 16 patches + the class token
LATENT_CHANNELS = 16


@dataclass
class MemoryEstimate:
    """Bytes per GPU by category (``parts`` sums to ``total``), the recipe they describe and what was assumed."""

    recipe: str
    parts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def format(self) -> str:
        """The recipe, one line per category and the total (GiB, or MiB below 1 GiB), then the notes."""
        unit, scale = ("GiB", GiB) if self.total >= GiB else ("MiB", 2**20)
        lines = [self.recipe] + [f"  {name:<18} {value / scale:9.2f} {unit}" for name, value in self.parts.items()]
        lines.append(f"  {'total':<18} {self.total / scale:9.2f} {unit}")
        return "\n".join(lines + [f"  - {note}" for note in self.notes])


@dataclass(frozen=True)
class Shapes:
    """What the activation terms depend on: one branch's tokens and the widths of the base, per process."""

    batch: int
    tokens: int  # video tokens per branch: (F-1)/4+1 latent frames x H/16 x W/16 with Wan's 1x2x2 patches
    dim: int
    ffn: int
    heads: int
    head_dim: int
    rank: int
    text_tokens: int
    image_tokens: int
    act_bytes: int  # element size of activations = the base's compute dtype (bf16 2, fp32 4)
    latent_numel: int  # B x 16 x f x h x w: one modality's latents
    in_channels: int  # of the RGB input: noisy latents 16 + UMC mask 4 + condition latents 16
    rope_bytes: int  # element size of the RoPE tables (diffusers keeps them fp32)
    fused_rms_norm: bool  # CUDA: torch's fused RMSNorm keeps its input as is; CPU: the composite keeps an fp32 copy

    @property
    def cast(self) -> bool:
        """Activations narrower than fp32: peft and FP32LayerNorm then keep fp32 copies of their inputs."""
        return self.act_bytes != FP32


@dataclass(frozen=True)
class ParameterBytes:
    """The model's parameters as stored: frozen ones at their dtype, trainable ones in fp32."""

    frozen_numel: int
    frozen_bytes: int
    trainable_numel: int
    trainable_tensors: int
    buffer_bytes: int
    block_frozen_bytes: int  # the largest transformer block's frozen weights
    blocks_frozen_bytes: int  # all blocks' frozen weights
    largest_fp8_numel: int  # the largest weight stored in 1 byte (upcast one at a time for compute); 0 without fp8
    block_trainable_numel: int  # the largest block's trainables (its LoRA)
    layer_trainable_numel: tuple[int, ...]  # per DLC layer: the block's LoRA plus that layer's link
    blocks_trainable_numel: int  # all LoRA weights (they live inside the blocks)


# ---------------------------------------------------------------------------------------------- parameters


def build_meta_model(model_cfg, fp8: bool = False):
    """The configured DLC model on the meta device (no memory); ``fp8`` stores the frozen base as the trainer and the
    pipeline do (``one4d.storage``: diffusers' layerwise casting, block Linears in ``model.base_storage_dtype`` or
    float8_e4m3fn, diffusers' default skips and the LoRA at their dtypes)."""
    from one4d.storage import enable_fp8_base_storage, storage_dtype
    from one4d.training.builders import build_joint_model

    model = build_joint_model(model_cfg, device="meta")
    if not isinstance(model, One4DTransformer):
        raise ValueError(f"the memory model covers DLC (two token streams) only, got model.architecture={model_cfg.architecture!r}")
    if fp8:
        enable_fp8_base_storage(model, storage_dtype(model_cfg.get("base_storage_dtype") or "float8_e4m3fn"))
    return model


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def count_parameters(model) -> ParameterBytes:
    """Parameter and buffer bytes of a joint model (any device), split the way the memory model needs."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    blocks = list(model.base.blocks)
    block_trainable = [sum(p.numel() for p in block.parameters() if p.requires_grad) for block in blocks]
    block_frozen = [sum(_nbytes(p) for p in block.parameters() if not p.requires_grad) for block in blocks]
    links = getattr(model, "links", {})
    layer_trainable = tuple(
        count + (sum(p.numel() for p in links[str(i)].parameters()) if str(i) in links else 0)
        for i, count in enumerate(block_trainable)
    )
    return ParameterBytes(
        frozen_numel=sum(p.numel() for p in frozen),
        frozen_bytes=sum(_nbytes(p) for p in frozen),
        trainable_numel=sum(p.numel() for p in trainable),
        trainable_tensors=len(trainable),
        buffer_bytes=sum(_nbytes(b) for b in model.buffers()),
        block_frozen_bytes=max(block_frozen),
        blocks_frozen_bytes=sum(block_frozen),
        largest_fp8_numel=max((p.numel() for p in frozen if p.element_size() == 1), default=0),
        block_trainable_numel=max(block_trainable),
        layer_trainable_numel=layer_trainable,
        blocks_trainable_numel=sum(block_trainable),
    )


def _small_frozen_bytes(model, threshold: int) -> int:
    """Frozen bytes in parameters of at most ``threshold`` elements (ZeRO-3 keeps those whole on every GPU)."""
    return sum(_nbytes(p) for p in model.parameters() if not p.requires_grad and p.numel() <= threshold)


def _small_trainable_numel(model, threshold: int) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad and p.numel() <= threshold)


# ---------------------------------------------------------------------------------------------- shapes


def count_image_tokens(model_cfg, model) -> int:
    """CLIP tokens of the image context: 0 without an image embedder; read from the components when they are the
    tiny preset's stand-ins or a local folder, else Wan2.1 I2V's 257 (a "tiny" left over from the model group's
    defaults on a large preset counts as unknown)."""
    if model.base.condition_embedder.image_embedder is None:
        return 0
    components = OmegaConf.select(model_cfg, "components", throw_on_missing=False)
    config_file = Path(str(components)) / "image_encoder" / "config.json"
    if components == "tiny" and model_cfg.preset == "tiny":
        from one4d.components import build_image_encoder

        vision = build_image_encoder(model_cfg.preset)[0].config.to_dict()
    elif components and config_file.is_file():
        vision = json.loads(config_file.read_text())
        vision = vision.get("vision_config", vision)
    else:
        return CLIP_IMAGE_TOKENS
    return (vision["image_size"] // vision["patch_size"]) ** 2 + 1


def shapes(model, batch: int, frames: int, height: int, width: int, rank: int, image_tokens: int, act_bytes: int,
           device: str = "cuda") -> Shapes:
    """Token counts of a clip of ``frames`` x ``height`` x ``width`` pixels for this model, run on ``device``."""
    config = model.base.config
    p_t, p_h, p_w = config.patch_size
    if (frames - 1) % VAE_TEMPORAL_FACTOR or height % (VAE_SPATIAL_FACTOR * p_h) or width % (VAE_SPATIAL_FACTOR * p_w):
        raise ValueError(f"frames must be 4k + 1 and height / width multiples of 16, got {frames} x {height} x {width}")
    latent = ((frames - 1) // VAE_TEMPORAL_FACTOR + 1, height // VAE_SPATIAL_FACTOR, width // VAE_SPATIAL_FACTOR)
    dim = config.num_attention_heads * config.attention_head_dim
    return Shapes(
        batch=batch, tokens=latent[0] // p_t * (latent[1] // p_h) * (latent[2] // p_w), dim=dim, ffn=config.ffn_dim,
        heads=config.num_attention_heads, head_dim=config.attention_head_dim, rank=rank, text_tokens=TEXT_TOKENS,
        image_tokens=image_tokens, act_bytes=act_bytes, latent_numel=batch * LATENT_CHANNELS * latent[0] * latent[1] * latent[2],
        in_channels=config.in_channels, rope_bytes=model.base.rope.freqs_cos.element_size(),
        fused_rms_norm=torch.device(device).type == "cuda",
    )


# ---------------------------------------------------------------------------------------------- activations


def block_saved_bytes(s: Shapes, input_saved_elsewhere: bool = True) -> int:
    """Bytes autograd keeps for one ``WanTransformerBlock`` call of one branch: frozen base, fp32 LoRA on its 12 Linears.

    A frozen Linear saves no input. A LoRA Linear saves its input cast to fp32 (peft casts per layer, so with bf16
    activations attn1's q, k and v keep three copies of the same tensor) and its rank-r hidden. With fp32
    activations the tensors themselves are kept, which costs nothing extra where they are kept anyway:
    ``input_saved_elsewhere`` says the block input is (a checkpoint argument) rather than kept by norm1 alone.
    """
    a, f, D = s.act_bytes, FP32, s.dim
    copy = D * f if s.cast else 0  # an fp32 copy of a (B, L, D) activation
    stats = 2 * f  # LayerNorm mean and rstd
    rms = D * (a if s.fused_rms_norm else f) + f  # RMSNorm (norm_q, norm_k): its input, or an fp32 copy, and rstd
    per_token = (
        (D * f if s.cast or not input_saved_elsewhere else 0) + stats  # norm1 (FP32LayerNorm) input
        + (3 * D * f if s.cast else D * f)  # attn1 to_q, to_k, to_v LoRA inputs
        + 2 * rms  # attn1 norm_q, norm_k
        + 4 * D * a + s.heads * f  # self-attention SDPA: rotated q and k, v, output, logsumexp
        + copy  # attn1 to_out LoRA input (with fp32 activations: the SDPA output itself)
        + D * f + stats  # norm2 input
        + D * f + rms  # attn2 to_q LoRA input, norm_q
        + 3 * D * a + 2 * s.heads * f  # text and image SDPA: the shared query, two outputs, two logsumexps
        + D * f  # attn2 to_out LoRA input
        + D * f + stats  # norm3 input
        + D * f + s.ffn * a + s.ffn * f  # FFN: proj LoRA input, GELU input, net.2 LoRA input
        + 8 * s.rank * f  # rank-r hiddens of the 8 LoRA Linears on video tokens
    )
    # Per text or image token: to_k / to_v (add_k / add_v) LoRA inputs and hiddens, norm_k, SDPA key and value.
    per_context_token = (2 * D * f if s.cast else 0) + 2 * s.rank * f + rms + 2 * D * a
    modulation = 8 * D * f  # the (B, 6, D) fp32 modulation and two (1 + scale) factors
    return s.batch * (s.tokens * per_token + (s.text_tokens + s.image_tokens) * per_context_token + modulation)


def link_saved_bytes(s: Shapes) -> int:
    """A control link's two fp32 Linears keep their inputs (the pre-link features of both branches) in fp32."""
    return 2 * s.batch * s.tokens * s.dim * FP32


def layer_saved_bytes(s: Shapes, has_link: bool, input_saved_elsewhere: bool = True) -> int:
    """One DLC layer: the block once per branch, then the link if the layer has one."""
    return 2 * block_saved_bytes(s, input_saved_elsewhere) + (link_saved_bytes(s) if has_link else 0)


def head_saved_bytes(s: Shapes) -> int:
    """Both output heads: norm_out's fp32 input and stats per branch, and the trainable XYZ proj_out's fp32 input."""
    return s.batch * s.tokens * (2 * (s.dim * FP32 + 2 * FP32) + s.dim * FP32)


def resident_inputs_bytes(s: Shapes) -> int:
    """What a forward keeps from start to end besides the blocks' own tensors: the shared context, the RoPE tables,
    the timestep embeddings and the latent-sized fp32 tensors: two noises (later the two targets), the
    RGB input of ``in_channels`` and the XYZ input (which the trainable XYZ patch embedding keeps)."""
    context = s.batch * (s.text_tokens + s.image_tokens) * s.dim * s.act_bytes
    rope = 2 * s.tokens * s.head_dim * s.rope_bytes
    latents = s.latent_numel * FP32 * (2 + s.in_channels / LATENT_CHANNELS + 1)
    return int(context + rope + s.batch * 7 * s.dim * FP32 + latents)


def block_forward_transient_bytes(s: Shapes) -> int:
    """Peak of the temporaries inside one block call: the FFN's LoRA sum (base output plus two fp32 (B, L, ffn)
    tensors, peft's ``result + lora_B(...) * scaling``), or the self-attention's q, k, v, output and RoPE products."""
    a, D = s.act_bytes, s.dim
    ffn = s.ffn * (a + 2 * FP32)
    attention = D * 4 * a + 3 * D // 2 * max(a, s.rope_bytes)  # three (B, L, D/2) RoPE products at the wider dtype
    return s.batch * s.tokens * max(ffn, attention)


def block_backward_transient_bytes(s: Shapes) -> int:
    """Gradients alive while the FFN's second Linear is differentiated (the largest): its input's gradient through
    the LoRA in fp32, that gradient's cast (bf16 only) and the frozen path's, the gradients arriving for both
    branches' outputs and one fp32 gradient of the residual stream."""
    a = s.act_bytes
    return s.batch * s.tokens * (s.ffn * (FP32 + a + (a if s.cast else 0)) + s.dim * (2 * a + FP32))


def training_activation_peak(s: Shapes, link_layers: list[int], num_layers: int, checkpointing: bool,
                             layer_grad_bytes: tuple[int, ...] = ()) -> tuple[int, int]:
    """(activation bytes, parameter-gradient bytes already written) at the peak of one forward + backward.

    Backward runs from the last layer down: at layer i the saved tensors (with checkpointing: the layer inputs) of
    layers 0..i are alive, layer i's recomputed tensors and one block's transients are added, and the gradients
    of layers > i (``layer_grad_bytes``; empty when gradients are counted elsewhere) have been written.
    """
    links = set(link_layers)
    grads = list(layer_grad_bytes) or [0] * num_layers
    transient = max(block_forward_transient_bytes(s), block_backward_transient_bytes(s))
    fixed = resident_inputs_bytes(s) + head_saved_bytes(s) + transient
    stream = s.batch * s.tokens * s.dim * s.act_bytes  # one branch's (B, L, D) token stream
    best = (0, 0)
    for i in range(num_layers):
        if checkpointing:
            # One checkpoint per branch (one4d.models.dlc): each layer keeps both branches' inputs, and at a link
            # layer also the RGB block's output (an input of the XYZ-and-link checkpoint); backward recomputes one
            # branch at a time, the XYZ one with its link.
            inputs = sum(2 * stream + (stream if j in links else 0) for j in range(i + 1))
            held = inputs + block_saved_bytes(s) + (link_saved_bytes(s) if i in links else 0)
        else:
            held = sum(layer_saved_bytes(s, j in links, input_saved_elsewhere=False) for j in range(i + 1))
        written = sum(grads[i + 1:])
        if held + written > sum(best):
            best = (held, written)
    return fixed + best[0], best[1]


def sampling_activation_bytes(s: Shapes) -> int:
    """One batched forward without gradients: both branches' token streams, the shared context and its frozen
    K/V projections (shared between the branches during a layer), and the temporaries of one block call."""
    streams = 2 * s.batch * s.tokens * s.dim * s.act_bytes
    shared_kv = 2 * s.batch * (s.text_tokens + s.image_tokens) * s.dim * s.act_bytes
    return streams + shared_kv + resident_inputs_bytes(s) + block_forward_transient_bytes(s)


# ---------------------------------------------------------------------------------------------- estimates


def _recipe(cfg, s: Shapes, fp8: bool) -> str:
    model = cfg.model
    storage = " stored in fp8" if fp8 else ""
    return (f"{model.preset} {model.architecture} r{model.lora_rank}, base {model.dtype}{storage}, "
            f"{cfg.data.num_frames}x{cfg.data.height}x{cfg.data.width} ({s.tokens:,} tokens/branch)")


def _fp8_requested(cfg, fp8: bool | None) -> bool:
    if fp8 is not None:
        return fp8
    return str(OmegaConf.select(cfg, "model.base_storage_dtype", default=None)).startswith("float8")


def estimate_training_memory(cfg, world_size: int = 1, fp8: bool | None = None, image_token_count: int | None = None,
                             device: str = "cuda") -> MemoryEstimate:
    """Peak memory per GPU of one training micro-step of ``cfg`` (a composed train config) on ``world_size`` processes.

    single / DDP: parameters, fp32 gradients and AdamW states whole on every GPU (DDP adds its flat gradient
    buckets). ZeRO-2 in fp32 mode, as the trainer configures it: the trainables flattened whole on every GPU plus
    this GPU's fp32 partition (a clone, even in fp32), gradient and AdamW partitions, and the reduce buckets.
    ZeRO-3: every parameter of the engine's model is partitioned, frozen ones included, except those of at most
    ``stage3_param_persistence_threshold`` elements; its fp32 partition is the optimizer's master (no copy); one
    block is gathered at a time. ``fp8``: frozen base stored in float8_e4m3fn (default: ``model.base_storage_dtype``).
    The peak is the larger of the backward peak and the optimizer step (all gradients, AdamW's temporaries).
    ``device``: "cuda", or "cpu" where torch's RMSNorm keeps an fp32 copy of its input (the CPU test's case).
    """
    from one4d.storage import torch_dtype
    from one4d.training.trainer import check_config

    fp8 = _fp8_requested(cfg, fp8)
    batch = check_config(cfg, world_size)
    model = build_meta_model(cfg.model, fp8=fp8)
    n = count_parameters(model)
    tokens = count_image_tokens(cfg.model, model) if image_token_count is None else image_token_count
    act_bytes = torch_dtype(cfg.model.dtype).itemsize
    s = shapes(model, batch, int(cfg.data.num_frames), int(cfg.data.height), int(cfg.data.width),
               int(cfg.model.lora_rank), tokens, act_bytes, device)
    kind, W, T = cfg.launcher.kind, world_size, n.trainable_numel
    zero = OmegaConf.to_container(cfg.launcher.deepspeed.zero_optimization, resolve=True) if kind == "deepspeed" else {}
    stage = int(zero.get("stage", 0))
    if kind == "single" and world_size != 1:
        raise ValueError(f"launcher=single runs one process, not {world_size}: use launcher=ddp or deepspeed_zero2/3")
    accumulating = int(cfg.train.grad_accum) > 1  # from the second micro-step on, param.grad is whole
    notes = []

    if kind in ("single", "ddp"):
        frozen, weights = n.frozen_bytes + n.buffer_bytes, FP32 * T
        optimizer = 2 * FP32 * T + FP32 * n.trainable_tensors  # exp_avg, exp_avg_sq, a step counter per tensor
        resident_grads = (FP32 * T if kind == "ddp" else 0) + (FP32 * T if accumulating else 0)  # DDP: bucket copy
        step_grads, step_temporaries, engine = FP32 * T * (2 if kind == "ddp" else 1), FP32 * T, 0  # foreach sqrt
        written = () if accumulating else tuple(FP32 * count for count in n.layer_trainable_numel)
        if kind == "ddp":
            notes.append("DDP: whole model, gradients (+ their bucket copy) and AdamW states on every GPU")
        if cfg.train.mixed_precision != "no":
            notes.append(f"train.mixed_precision={cfg.train.mixed_precision}: autocast is not modelled (DeepSpeed runs without it)")
    elif stage == 2:
        frozen, weights = n.frozen_bytes + n.buffer_bytes, FP32 * T + FP32 * T // W
        optimizer = 2 * FP32 * T // W + FP32
        resident_grads = step_grads = FP32 * T // W  # the gradient partition; param.grad goes through the buckets
        step_temporaries = 2 * FP32 * T // W  # the flattened gradient partition and AdamW's temporary
        engine = (2 if zero.get("overlap_comm") else 1) * int(zero.get("reduce_bucket_size", 5e8)) * FP32
        written = ()
        notes.append("ZeRO-2: frozen base replicated; trainables whole plus an fp32 partition clone; "
                     "gradients and AdamW partitioned; engine = fp32 reduce buckets")
    elif stage == 3:
        threshold = int(zero.get("stage3_param_persistence_threshold", 1e5))
        small_frozen, small_trainable = _small_frozen_bytes(model, threshold), _small_trainable_numel(model, threshold)
        frozen = small_frozen + (n.frozen_bytes - small_frozen) // W + n.buffer_bytes
        weights = FP32 * (small_trainable + (T - small_trainable) // W)
        optimizer = 2 * FP32 * T // W + FP32
        resident_grads = step_grads = FP32 * T // W
        step_temporaries = FP32 * T // W
        gathered = n.block_frozen_bytes + FP32 * n.block_trainable_numel
        prefetch = int(zero.get("stage3_prefetch_bucket_size", 5e7)) * act_bytes
        engine = int(zero.get("reduce_bucket_size", 5e8)) * FP32 + gathered + prefetch
        written = ()
        notes.append(f"ZeRO-3: parameters over {threshold:,} elements partitioned, frozen ones included; engine = one "
                     f"gathered block ({gathered / GiB:.2f} GiB), prefetch and reduce buckets")
    else:
        raise ValueError(f"launcher {kind!r} stage {stage} is not modelled: single, ddp, deepspeed stage 2 or 3")

    head_grads = FP32 * (T - sum(n.layer_trainable_numel)) if written else 0  # XYZ in/out, before the layers'
    activations, written_grads = training_activation_peak(
        s, list(model.link_layers), len(model.base.blocks), bool(cfg.train.gradient_checkpointing), written)
    if fp8:
        activations += n.largest_fp8_numel * act_bytes  # the weight upcast for its forward or backward
        notes.append("fp8: block Linear weights at 1 byte, upcast one Linear at a time" +
                     ("; hypothetical: the trainer refuses fp8 with ZeRO-3, which partitions the frozen base itself"
                      if stage == 3 else ""))
    if resident_grads + head_grads + written_grads + activations >= step_grads + step_temporaries:
        gradients = resident_grads + head_grads + written_grads
    else:
        gradients, activations = step_grads, step_temporaries
        notes.append("the peak is the optimizer step: the activations row holds AdamW's temporaries")
    parts = {"frozen base": frozen, "trainable weights": weights, "gradients": gradients,
             "optimizer states": optimizer, "activations": activations, "engine buffers": engine}
    launcher = {"single": "one process", "ddp": f"DDP x {W}"}.get(kind, f"ZeRO-{stage} x {W}")
    checkpointing = "checkpointing" if cfg.train.gradient_checkpointing else "no checkpointing"
    return MemoryEstimate(f"train: {_recipe(cfg, s, fp8)}, batch {s.batch}/GPU, {checkpointing}, {launcher}", parts, notes)


def estimate_sampling_memory(cfg, fp8: bool | None = None, group_offload: bool = False,
                             guidance: bool = True, image_token_count: int | None = None, device: str = "cuda") -> MemoryEstimate:
    """Peak memory of the denoising loop on one GPU for a clip of ``cfg.data``'s size (one batched DLC forward per step).

    Weights: the frozen base at its storage dtype, or with block-level group offload only the non-block modules and
    one block resident (``one4d.storage`` offloads without stream prefetch); LoRA lives in the blocks and travels
    with them. Activations: one forward without gradients at batch 2 (conditional and unconditional) when
    ``guidance``. The UMT5 / CLIP encoders and the VAE are not counted: with ``memory.cpu_offload=true`` they
    visit the GPU outside the denoising loop, one at a time.
    """
    from one4d.storage import torch_dtype

    fp8 = _fp8_requested(cfg, fp8)
    model = build_meta_model(cfg.model, fp8=fp8)
    n = count_parameters(model)
    tokens = count_image_tokens(cfg.model, model) if image_token_count is None else image_token_count
    s = shapes(model, 2 if guidance else 1, int(cfg.data.num_frames), int(cfg.data.height), int(cfg.data.width),
               int(cfg.model.lora_rank), tokens, torch_dtype(cfg.model.dtype).itemsize, device)
    notes = ["UMT5, CLIP and the VAE not counted: offloaded (memory.cpu_offload=true) outside the denoising loop"]
    frozen, trainable = n.frozen_bytes + n.buffer_bytes, FP32 * n.trainable_numel
    if group_offload:
        blocks = 1
        frozen = n.frozen_bytes - n.blocks_frozen_bytes + blocks * n.block_frozen_bytes + n.buffer_bytes
        trainable = FP32 * (n.trainable_numel - n.blocks_trainable_numel + blocks * n.block_trainable_numel)
        notes.append(f"block-level group offload: {blocks} block(s) resident, the rest in pinned CPU memory")
    activations = sampling_activation_bytes(s) + n.largest_fp8_numel * s.act_bytes
    parts = {"frozen base": frozen, "trainable weights": trainable, "activations": activations}
    offload = ", group offload" if group_offload else ""
    guided = "batch 2 (CFG)" if guidance else "batch 1 (no CFG)"
    return MemoryEstimate(f"sample: {_recipe(cfg, s, fp8)}, {guided}{offload}", parts, notes)


# ---------------------------------------------------------------------------------------------- tables

GPU_SIZES_GB = (80, 48, 24)
HEADROOM = 0.9  # of a card's memory for the model: CUDA context, NCCL and allocator fragmentation are not modelled


def fits(estimate: MemoryEstimate, gigabytes: int) -> str:
    """"yes" within 90 % of an N GB card (taken as N GiB, what the driver reports), "tight" up to 100 %, else "no"."""
    used = estimate.total / (gigabytes * GiB)
    return "yes" if used <= HEADROOM else "tight" if used <= 1 else "no"


def memory_table(rows: list[tuple[str, MemoryEstimate]]) -> str:
    """A markdown table: one row per labelled estimate, its parts and total in GiB, and whether it fits 80 / 48 / 24 GB."""
    parts = list(dict.fromkeys(name for _, estimate in rows for name in estimate.parts))
    header = ["recipe (per GPU)", *parts, "total", *(f"{size} GB" for size in GPU_SIZES_GB)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(parts) + 1) + ":---:|" * len(GPU_SIZES_GB)]
    for label, estimate in rows:
        cells = [f"{estimate.parts[name] / GiB:.2f}" if name in estimate.parts else "-" for name in parts]
        verdicts = [fits(estimate, size) for size in GPU_SIZES_GB]
        lines.append("| " + " | ".join([label, *cells, f"**{estimate.total / GiB:.2f}**", *verdicts]) + " |")
    return "\n".join(lines)


def recipe_table(overrides: list[str], world_size: int = 8) -> str:
    """The standard comparison for a train config (e.g. ``experiment=one4d_14b``): training under ZeRO-2 and ZeRO-3 on
    ``world_size`` GPUs with the base in ``model.dtype`` or fp8, and sampling with the base resident (``model.dtype``,
    fp8) or block-level group offloaded, each as a row of :func:`memory_table`."""
    from one4d.training.testing import compose_train_config

    rows = []
    for stage in (2, 3):
        cfg = compose_train_config([*overrides, f"launcher=deepspeed_zero{stage}"])
        for fp8 in (False, True):
            storage = "fp8" if fp8 else cfg.model.dtype
            refused = " (hypothetical: the trainer refuses fp8 with ZeRO-3)" if fp8 and stage == 3 else ""
            rows.append((f"train, ZeRO-{stage} x {world_size}, {storage} base{refused}",
                         estimate_training_memory(cfg, world_size, fp8=fp8)))
    cfg = compose_train_config(list(overrides))
    for offload in (False, True):
        for fp8 in (False, True):
            where = "group offload (1 block)" if offload else "resident"
            rows.append((f"sample, {where}, {'fp8' if fp8 else cfg.model.dtype} base",
                         estimate_sampling_memory(cfg, fp8=fp8, group_offload=offload)))
    return memory_table(rows)
