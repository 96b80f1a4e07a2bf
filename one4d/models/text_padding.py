"""Cross-attention to Wan's zero-padded prompt with the padding's repeated key counted once, not attended 500 times.

Wan pads every prompt's UMT5 embedding with zeros to 512 tokens and attends to the padding without a mask
(Wan2.1's model and diffusers' ``WanAttnProcessor``; ``one4d.encoding.encode_prompt`` pads the same way). Each
padded row is the same vector, and so stays through the text embedder, ``to_k`` / ``to_v`` (LoRA included) and the
per-token ``norm_k``: the n padded keys are one key repeated n times, and a softmax over n copies of a key equals
a softmax over that key once with log(n) added to its logit (sum_j exp(s) v = exp(s + log n) v). So:

* a forward hook on ``condition_embedder`` (outside the compiled blocks) keeps the text rows up to the trailing run
  of identical rows plus one row of that run, rounded up to a multiple of 128 (few shapes, so ``torch.compile``
  recompiles rarely: the tiny world's captions of 42-94 tokens always keep 128);
* :class:`CollapsedPaddingAttnProcessor` on every ``attn2`` reads n from the context's length (512 - kept + 1) and
  gives the kept padding row the additive mask log(n).

The attention, its output and every gradient are the stock ones to float rounding (the one row's gradient is the
sum over the n rows it stands for; the text embedder and projections are per row; tests/test_text_padding.py).
Worth it where the video has few tokens: the tiny model's 144-576 tokens per branch attend 529 context tokens,
which was a quarter of a training step (BENCHMARKS.md, Training); at the 14B's 32,760 tokens the 512 keys are about
1.5 % of the attention. The hook leaves the context whole, and the stock processor runs, unless the collapse is
exact: an I2V base (diffusers' processor needs exactly 512 text rows there, so a shorter context is unambiguously
a collapsed one) given 512 text rows in fp32 (in bf16 the mask's log(n) would be rounded, +1.6 % on the padding's
weight at n = 385, where fused kernels keep the logits in fp32), on an attention backend that takes a float mask,
with no active LoRA dropout on ``to_k`` / ``to_v`` (it would draw a different mask per padded row).
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention_dispatch import _AttentionBackendRegistry, dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_added_kv_projections, _get_qkv_projections

from one4d.parallel.layout import MASK_BACKENDS

from .presets import TEXT_TOKENS

KEPT_STEP = 128  # kept text rows come in multiples of this: one shape for most prompts (and for empty ones)


class CollapsedPaddingAttnProcessor(WanAttnProcessor):
    """Wan's processor; a context with fewer than 512 text rows (only the hook makes one) attends its last text row
    as the 512 - kept + 1 padding rows it stands for. ``image_tokens``: the CLIP token count, set by the hook."""

    def __init__(self):
        super().__init__()
        self.image_tokens: int | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        collapsed = encoder_hidden_states is not None and attn.add_k_proj is not None and self.image_tokens is not None
        kept = encoder_hidden_states.shape[1] - self.image_tokens if collapsed else TEXT_TOKENS
        if kept >= TEXT_TOKENS:  # self-attention, no image tokens, or a whole context: Wan's own processor
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        image = encoder_hidden_states[:, :self.image_tokens]  # (B, image, D)
        text = encoder_hidden_states[:, self.image_tokens:]  # (B, kept, D): real rows, then one padding row

        query, key, value = _get_qkv_projections(attn, hidden_states, text)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))  # (B, L, heads, head_dim)
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))  # (B, kept, heads, head_dim)
        value = value.unflatten(2, (attn.heads, -1))
        repeats = torch.zeros(kept, dtype=query.dtype, device=query.device)
        repeats[-1] = math.log(TEXT_TOKENS - kept + 1)  # the last row stands for every padding row cut off
        out = dispatch_attention_fn(query, key, value, attn_mask=repeats.expand(1, 1, 1, kept), dropout_p=0.0,
                                    is_causal=False, backend=self._attention_backend, parallel_config=None)
        out = out.flatten(2, 3).type_as(query)  # (B, L, D)
        key_img, value_img = _get_added_kv_projections(attn, image)  # the image tokens, as the stock processor
        key_img = attn.norm_added_k(key_img).unflatten(2, (attn.heads, -1))
        value_img = value_img.unflatten(2, (attn.heads, -1))
        out_img = dispatch_attention_fn(query, key_img, value_img, attn_mask=None, dropout_p=0.0, is_causal=False,
                                        backend=self._attention_backend, parallel_config=None)
        out = out + out_img.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def kept_text_rows(text: torch.Tensor) -> int:
    """How many leading rows of ``text`` (B, T, D) to keep: up to the trailing run of rows equal to the last row
    (in every prompt of the batch) plus one row of it, rounded up to a multiple of ``KEPT_STEP``; at most T."""
    tokens = text.shape[1]
    same = (text == text[:, -1:]).all(dim=-1).all(dim=0)  # (T,) rows equal to the last, in every prompt
    run = int(same.flip(0).int().cumprod(0).sum())  # length of the trailing run (at least 1: the last row)
    kept = -(-(tokens - run + 1) // KEPT_STEP) * KEPT_STEP
    return min(kept, tokens)


def _backend_name(processor) -> str:
    """The backend a call will use: the processor's own, else diffusers' active one (``DIFFUSERS_ATTN_BACKEND`` or the
    last ``set_attention_backend``)."""
    backend = processor._attention_backend or _AttentionBackendRegistry.get_active_backend()[0]
    return getattr(backend, "value", backend)


def _lora_dropout_active(attn) -> bool:
    """Whether a LoRA on the text projections drops out now (training mode, p > 0): padded rows would then differ."""
    for layer in (attn.to_k, attn.to_v):
        for dropout in getattr(layer, "lora_dropout", {}).values():  # peft: one per adapter
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0 and dropout.training:
                return True
    return False


class _CollapseHook:
    """Forward hook on ``condition_embedder``: shortens its text output when the collapse is exact (module docstring)."""

    def __init__(self, attentions: list, processors: list[CollapsedPaddingAttnProcessor]):
        self.attentions, self.processors = attentions, processors

    def __call__(self, module, args, output):
        temb, timestep_proj, text, image = output
        if (image is None or text.shape[1] != TEXT_TOKENS or text.dtype != torch.float32
                or any(_backend_name(p) not in MASK_BACKENDS for p in self.processors)
                or any(_lora_dropout_active(attn) for attn in self.attentions)):
            return output
        for processor in self.processors:
            processor.image_tokens = image.shape[1]
        return temb, timestep_proj, text[:, :kept_text_rows(text)], image


def collapse_text_padding(base) -> None:
    """Install the collapse on a ``WanTransformer3DModel`` (once; a second call changes nothing)."""
    if getattr(base, "_one4d_text_padding", False):
        return
    attentions, processors = [], []
    for block in base.blocks:
        processor = CollapsedPaddingAttnProcessor()
        previous = block.attn2.processor  # keep a backend or parallel config already set
        processor._attention_backend = getattr(previous, "_attention_backend", None)
        processor._parallel_config = getattr(previous, "_parallel_config", None)
        block.attn2.set_processor(processor)
        attentions.append(block.attn2)
        processors.append(processor)
    base.condition_embedder.register_forward_hook(_CollapseHook(attentions, processors))
    base._one4d_text_padding = True
