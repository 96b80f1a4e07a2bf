"""The prompt's zero padding attended as one key with log(n) (one4d.models.text_padding) is Wan's attention: the
same outputs and gradients as diffusers' stock processor for the plain base and both DLC branches, and the context
the blocks see is really shortened (else this would test nothing); where it would not be exact (bf16, a backend
without masks, LoRA dropout) the blocks get the whole context."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

from one4d.models import One4DTransformer, WanBaseModel, build_base_transformer
from one4d.models.text_padding import KEPT_STEP, kept_text_rows

TEXT, IMAGE, DIM = 512, 17, 32  # Wan's 512 text tokens; the tiny CLIP's 17 image tokens; the tiny text_dim


def padded_prompts(lengths, seed=0) -> torch.Tensor:
    """(B, 512, 32) UMT5-like embeddings: each prompt's rows, then zeros (one4d.encoding.encode_prompt)."""
    generator = torch.Generator().manual_seed(seed)
    text = torch.zeros(len(lengths), TEXT, DIM)
    for index, length in enumerate(lengths):
        text[index, :length] = torch.randn(length, DIM, generator=generator)
    return text


def inputs(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed + 1)
    batch = len(lengths)
    rgb = torch.randn(batch, 36, 2, 4, 4, generator=generator)  # (B, 16 noisy + 4 mask + 16 condition, f, h, w)
    xyz = torch.randn(batch, 16, 2, 4, 4, generator=generator)
    timestep = torch.tensor([700.0, 50.0][:batch])
    image = torch.randn(batch, IMAGE, DIM, generator=generator)
    return rgb, xyz, timestep, padded_prompts(lengths, seed), image


def context_lengths(base) -> list[int]:
    """Records the context length every attn2 call receives."""
    seen = []
    for block in base.blocks:
        block.attn2.register_forward_pre_hook(lambda module, args: seen.append(args[1].shape[1]))
    return seen


@pytest.fixture
def restore_active_backend():
    """``set_attention_backend`` also sets diffusers' process-wide active backend: put it back for later tests."""
    active = _AttentionBackendRegistry._active_backend
    yield
    _AttentionBackendRegistry.set_active_backend(active)


def randomise_trainable(model, seed=0):
    """LoRA B, the links and the XYZ head start at zero; give them values so that every path carries signal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def grads(module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def assert_same_gradients(got: dict, expected: dict) -> None:
    """Every gradient within 1e-3 of its own norm: sums over 512 rows and over one row weighted n times round
    differently, most where a gradient is a small remainder of cancelling terms (attn2's to_k bias: 6e-6 of 0.02)."""
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        error = (got[name] - grad).norm() / grad.norm().clamp_min(1e-12)
        assert error < 1e-3, (name, float(error))


@pytest.mark.parametrize("lengths, kept", [([3, 40], KEPT_STEP), ([0, 0], KEPT_STEP), ([127, 5], 128), ([128, 5], 256),
                                           ([200], 256), ([511], TEXT), ([512], TEXT)])
def test_kept_rows_reach_past_every_prompt_by_at_least_one_padding_row(lengths, kept):
    assert kept_text_rows(padded_prompts(lengths)) == kept


def test_plain_base_forward_and_gradients_equal_diffusers_stock_processor():
    torch.manual_seed(0)  # the random base, whatever ran before
    stock = build_base_transformer("tiny").requires_grad_(True)
    model = WanBaseModel(copy.deepcopy(stock))
    seen = context_lengths(model.base)
    rgb, _, timestep, text, image = inputs([5, 60])

    expected = stock(rgb, timestep, text, encoder_hidden_states_image=image, return_dict=False)[0]
    got = model(rgb, timestep, text, image)
    assert set(seen) == {IMAGE + KEPT_STEP}  # every block attended 145 context tokens, not 529
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(3))
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    model_grads = grads(model.base)
    assert "condition_embedder.text_embedder.linear_1.weight" in model_grads
    assert_same_gradients(model_grads, grads(stock))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_dlc_branches_equal_the_whole_context_of_a_backend_without_masks(restore_active_backend, checkpointing):
    """``_native_math`` takes no collapse (not in MASK_BACKENDS): the same model attends all 512 rows there."""
    torch.manual_seed(0)
    model = One4DTransformer(build_base_transformer("tiny"), lora_rank=4)
    randomise_trainable(model)
    if checkpointing:  # the recompute in backward must see the same collapsed context
        model.enable_gradient_checkpointing()
    seen = context_lengths(model.base)
    rgb, xyz, timestep, text, image = inputs([7, 90], seed=4)
    results = {}
    for backend in ("native", "_native_math"):
        model.set_attention_backend(backend)
        seen.clear()
        model.zero_grad()
        rgb_out, xyz_out = model(rgb, xyz, timestep, text, image)
        (rgb_out.square().sum() + xyz_out.sum()).backward()
        results[backend] = (rgb_out.detach(), xyz_out.detach(), grads(model), set(seen))
    collapsed, whole = results["native"], results["_native_math"]
    assert collapsed[3] == {IMAGE + KEPT_STEP} and whole[3] == {IMAGE + TEXT}
    torch.testing.assert_close(collapsed[0], whole[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(collapsed[1], whole[1], rtol=1e-4, atol=1e-5)
    assert any("lora_B" in name for name in collapsed[2])
    assert_same_gradients(collapsed[2], whole[2])


def test_a_maskless_active_backend_or_lora_dropout_keeps_the_whole_context(restore_active_backend):
    """No backend on the processors means diffusers' active one; LoRA dropout draws a mask per padded row."""
    model = One4DTransformer(build_base_transformer("tiny"), lora_rank=4)
    seen = context_lengths(model.base)
    rgb, xyz, timestep, text, image = inputs([7, 90], seed=4)
    _AttentionBackendRegistry.set_active_backend(AttentionBackendName._NATIVE_MATH)
    model(rgb, xyz, timestep, text, image)
    assert set(seen) == {IMAGE + TEXT}

    _AttentionBackendRegistry.set_active_backend(AttentionBackendName.NATIVE)
    dropout = One4DTransformer(build_base_transformer("tiny"), lora_rank=4, lora_dropout=0.1)
    seen = context_lengths(dropout.base)
    dropout.train()(rgb, xyz, timestep, text, image)
    assert set(seen) == {IMAGE + TEXT}
    seen.clear()
    dropout.eval()(rgb, xyz, timestep, text, image)  # dropout off: exact again
    assert set(seen) == {IMAGE + KEPT_STEP}


def test_bf16_keeps_the_whole_context_and_the_stock_result():
    """In bf16 the mask's log(n) would be rounded (+1.6 % on the padding's weight): the stock path, bit for bit."""
    stock = build_base_transformer("tiny").to(torch.bfloat16)
    model = WanBaseModel(copy.deepcopy(stock))
    seen = context_lengths(model.base)
    rgb, _, timestep, text, image = inputs([5, 60], seed=6)
    with torch.no_grad():
        expected = stock(rgb.bfloat16(), timestep, text.bfloat16(), encoder_hidden_states_image=image.bfloat16(),
                         return_dict=False)[0]
        got = model(rgb, timestep, text, image)
    assert set(seen) == {IMAGE + TEXT} and torch.equal(got, expected)
