"""Decoupled LoRA Control and the baselines on the tiny preset: equivalence, gradients, checkpointing, I/O."""

import pytest
import torch

from one4d.models import (
    ARCHITECTURES,
    ChannelConcatTransformer,
    One4DTransformer,
    SpatialConcatTransformer,
    build_base_transformer,
    build_model,
    export_rgb_lora,
    load_trainable_state,
    save_trainable_state,
)
from one4d.models.lora import LORA_TARGET_MODULES, lora_layers


def make_inputs(batch=2, frames=3, height=4, width=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        rgb_input=torch.randn(batch, 36, frames, height, width, generator=generator),
        xyz_input=torch.randn(batch, 16, frames, height, width, generator=generator),
        timestep=torch.tensor([700.0, 30.0][:batch]),
        encoder_hidden_states=torch.randn(batch, 512, 32, generator=generator),
        encoder_hidden_states_image=torch.randn(batch, 257, 32, generator=generator),
    )


def base_and_reference(seed=0):
    torch.manual_seed(seed)
    base = build_base_transformer("tiny")
    reference = build_base_transformer("tiny")
    reference.load_state_dict(base.state_dict())
    return base, reference


def perturb_trainable(model, scale=0.05, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.trainable_parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def test_each_branch_equals_the_base_at_init():
    base, reference = base_and_reference()
    model = One4DTransformer(base, lora_rank=4, num_links=2)
    inputs = make_inputs()
    rgb, xyz = model(**inputs)
    context = (inputs["timestep"], inputs["encoder_hidden_states"], inputs["encoder_hidden_states_image"])
    expected_rgb = reference(inputs["rgb_input"], *context).sample
    padded_xyz = torch.cat([inputs["xyz_input"], torch.zeros_like(inputs["rgb_input"][:, :20])], dim=1)
    expected_xyz = reference(padded_xyz, *context).sample
    torch.testing.assert_close(rgb, expected_rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(xyz, expected_xyz, rtol=0, atol=1e-6)

    other = dict(inputs, xyz_input=torch.randn_like(inputs["xyz_input"]))
    assert torch.equal(model(**other)[0], rgb), "at init the RGB output must not depend on the XYZ input"


def test_lora_sits_on_the_twelve_block_linears_of_both_branches():
    model = One4DTransformer(build_base_transformer("tiny"), lora_rank=4)
    layers = lora_layers(model.base)
    assert len(layers) == 12 * len(model.base.blocks) == len(LORA_TARGET_MODULES) * 4
    assert all(set(layer.lora_A) == {"rgb", "xyz"} for layer in layers)
    assert not any("condition_embedder" in name and "lora" in name for name, _ in model.named_parameters())
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert all("lora_" not in name for name in frozen)
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters())


def test_after_training_the_branches_couple_and_all_trainable_parts_get_gradients():
    model = One4DTransformer(build_base_transformer("tiny"), lora_rank=4, num_links=2)
    perturb_trainable(model)
    inputs = make_inputs()
    rgb, xyz = model(**inputs)
    other = dict(inputs, xyz_input=torch.randn_like(inputs["xyz_input"]))
    assert not torch.allclose(model(**other)[0], rgb), "trained links must carry XYZ into the RGB branch"

    (rgb.square().mean() + xyz.square().mean()).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reached {name}"
        else:
            assert param.grad is None, f"frozen {name} received a gradient"
    # The peft trap: set_adapter would have switched requires_grad off for the other adapter.
    assert all(layer.lora_A[name].weight.requires_grad for layer in lora_layers(model.base) for name in ("rgb", "xyz"))


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_gradient_checkpointing_keeps_gradients_exact(architecture):
    torch.manual_seed(0)
    model = build_model(architecture, "tiny", lora_rank=4)
    perturb_trainable(model)
    inputs = make_inputs()

    def gradients():
        model.zero_grad(set_to_none=True)
        rgb, xyz = model(**inputs)
        (rgb.square().mean() + 2 * xyz.square().mean()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}

    plain = gradients()
    model.enable_gradient_checkpointing()
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=f"gradient of {name} changed")


def test_channel_concat_equals_the_base_at_init_and_spatial_concat_shares_one_sequence():
    base, reference = base_and_reference()
    inputs = make_inputs()
    context = (inputs["timestep"], inputs["encoder_hidden_states"], inputs["encoder_hidden_states_image"])
    channel = ChannelConcatTransformer(base, lora_rank=4)
    rgb, xyz = channel(**inputs)
    torch.testing.assert_close(rgb, reference(inputs["rgb_input"], *context).sample, rtol=0, atol=1e-6)
    assert xyz.shape == (2, 16, 3, 4, 6)

    spatial = SpatialConcatTransformer(build_base_transformer("tiny"), lora_rank=4)
    rgb, xyz = spatial(**inputs)
    assert rgb.shape == xyz.shape == (2, 16, 3, 4, 6)
    other = dict(inputs, xyz_input=torch.randn_like(inputs["xyz_input"]))
    assert not torch.allclose(spatial(**other)[0], rgb), "spatial concatenation attends across modalities"


def test_trainable_parameter_count_at_the_14b_preset_matches_the_paper():
    model = build_model("dlc", "wan2.1-fun-14b-inp", device="meta", dtype=torch.bfloat16)
    trainable = model.trainable_state_dict()
    lora = sum(p.numel() for name, p in trainable.items() if "lora_" in name)
    total = sum(p.numel() for p in trainable.values())
    assert lora == 718_274_560  # the paper's 685M in units of 2^20
    assert total == 981_130_304  # the paper's 935.7M
    assert model.link_layers == [7, 15, 23, 31, 39]
    assert all(p.device.type == "meta" and p.dtype == torch.float32 for p in trainable.values())


def test_bf16_keeps_diffusers_fp32_modules():
    model = build_model("dlc", "tiny", dtype=torch.bfloat16, lora_rank=4)
    base = model.base
    assert base.blocks[0].attn1.to_q.base_layer.weight.dtype == torch.bfloat16
    assert base.blocks[0].scale_shift_table.dtype == torch.float32
    assert base.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert base.blocks[0].norm2.weight.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("architecture", ["dlc", "channel_concat", "spatial_concat"])
def test_low_precision_base_takes_the_fp32_inputs_its_callers_pass(architecture, dtype):
    """The trainer, the cache and validation hand fp32 latents and UMT5 / CLIP embeddings to a bf16 / fp16 base
    (nothing autocasts under DeepSpeed): the model casts them, and the output follows the fp32 model closely."""
    torch.manual_seed(0)
    model = build_model(architecture, "tiny", dtype=dtype, lora_rank=4)
    inputs = make_inputs()  # fp32, exactly what JointFlowAdapter.forward passes
    assert all(value.dtype == torch.float32 for value in inputs.values())
    rgb, xyz = model(**inputs)
    torch.manual_seed(0)
    reference = build_model(architecture, "tiny", lora_rank=4)
    reference.base.load_state_dict({k: v.float() for k, v in model.base.state_dict().items()})
    rgb_ref, xyz_ref = reference(**inputs)
    assert (rgb.float() - rgb_ref).abs().max() < 0.05 * rgb_ref.abs().max()
    assert (xyz.float() - xyz_ref).abs().max() < 0.05 * xyz_ref.abs().max()
    rgb.float().square().mean().backward()  # and gradients flow in the low-precision base
    assert all(p.grad is not None for name, p in model.named_parameters() if p.requires_grad and "lora_B" in name)


def test_attention_backend_is_selectable():
    model = build_model("dlc", "tiny", lora_rank=4, attention_backend="native")
    rgb, _ = model(**make_inputs())
    model.set_attention_backend(None)
    torch.testing.assert_close(model(**make_inputs())[0], rgb)
    with pytest.raises(ValueError, match="must be one of"):
        model.set_attention_backend("no-such-backend")


def test_text_must_be_512_tokens_with_image_embeddings():
    model = One4DTransformer(build_base_transformer("tiny"), lora_rank=4)
    inputs = make_inputs()
    with pytest.raises(ValueError, match="exactly 512 tokens"):
        model(**dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"][:, :300]))
    with pytest.raises(ValueError, match="pass encoder_hidden_states_image"):
        model(**dict(inputs, encoder_hidden_states_image=None))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(rgb_input=torch.zeros(2, 16, 3, 4, 6)), r"rgb_input must be \(B, 36"),
        (dict(xyz_input=torch.zeros(2, 36, 3, 4, 6)), r"xyz_input must be \(B, 16"),
        (dict(xyz_input=torch.zeros(2, 16, 3, 4, 8)), "must share batch and"),
        (dict(rgb_input=torch.zeros(2, 36, 3, 5, 6), xyz_input=torch.zeros(2, 16, 3, 5, 6)), "divisible by the patch"),
        (dict(timestep=torch.zeros(3)), r"timestep must be \(B,\)"),
    ],
)
def test_bad_inputs_name_what_was_expected(change, message):
    model = One4DTransformer(build_base_transformer("tiny"), lora_rank=4)
    with pytest.raises(ValueError, match=message):
        model(**dict(make_inputs(), **change))


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match=r"link_layers must be block indices in \[0, 3\], got \[4\]"):
        One4DTransformer(build_base_transformer("tiny"), link_layers=[1, 4])
    with pytest.raises(ValueError, match="lora_rank must be a positive integer, got 0"):
        One4DTransformer(build_base_transformer("tiny"), lora_rank=0)
    with pytest.raises(ValueError, match="unknown base preset"):
        build_base_transformer("wan-99b")
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("cross_attention")


def test_trainable_state_round_trip_is_bit_exact_and_refuses_another_preset(tmp_path):
    torch.manual_seed(0)
    model = build_model("dlc", "tiny", lora_rank=4, num_links=2)
    perturb_trainable(model)
    save_trainable_state(model, tmp_path / "state")

    torch.manual_seed(1)
    restored = build_model("dlc", "tiny", lora_rank=4, num_links=2)
    restored.base.load_state_dict(model.base.state_dict())  # same frozen base, fresh trainable weights
    load_trainable_state(restored, tmp_path / "state")
    for name, param in model.trainable_state_dict().items():
        assert torch.equal(restored.trainable_state_dict()[name], param), name
    inputs = make_inputs()
    assert all(torch.equal(a, b) for a, b in zip(model(**inputs), restored(**inputs)))

    wider = build_model("dlc", "tiny", lora_rank=4, num_links=2, base_overrides=dict(num_layers=2))
    with pytest.raises(ValueError, match=r"base.num_layers: checkpoint has 4, model has 2"):
        load_trainable_state(wider, tmp_path / "state")
    other_rank = build_model("dlc", "tiny", lora_rank=8, num_links=2)
    with pytest.raises(ValueError, match="lora_rank: checkpoint has 4, model has 8"):
        load_trainable_state(other_rank, tmp_path / "state")


def test_rgb_lora_exports_to_a_plain_diffusers_wan_model(tmp_path):
    base, reference = base_and_reference()
    model = One4DTransformer(base, lora_rank=4, num_links=2)
    with torch.no_grad():  # train the RGB adapter only, links stay zero: RGB branch == base + RGB LoRA
        for name, param in model.named_parameters():
            if "lora_B.rgb" in name:
                param.normal_(0, 0.1)
    path = export_rgb_lora(model, tmp_path)
    reference.load_lora_adapter(str(path), prefix="transformer", adapter_name="one4d_rgb")
    inputs = make_inputs()
    context = (inputs["timestep"], inputs["encoder_hidden_states"], inputs["encoder_hidden_states_image"])
    expected = reference(inputs["rgb_input"], *context).sample
    rgb, _ = model(**inputs)
    assert not torch.allclose(rgb, model.base.proj_out.weight.new_zeros(()).expand_as(rgb))
    torch.testing.assert_close(rgb, expected, rtol=1e-5, atol=1e-6)


def test_dlc_projects_the_shared_context_once_per_block():
    model = One4DTransformer(build_base_transformer("tiny"), lora_rank=4, num_links=2)
    perturb_trainable(model)
    calls = []

    def counting(original):
        return lambda x: calls.append(1) or original(x)

    for scope in model._context_sharing._per_block:
        for memo in scope:
            memo.forward = counting(memo.forward)  # the frozen Linear's own computation
    inputs = make_inputs()
    rgb, xyz = model(**inputs)
    assert len(calls) == 4 * len(model.base.blocks)  # once for both branches, not twice
    # ... and the shared projections give what two separate computations give.
    for scope in model._context_sharing._per_block:
        for linear in scope:
            linear.linear.forward = linear.forward  # undo the sharing
    unshared_rgb, unshared_xyz = model(**inputs)
    torch.testing.assert_close(rgb, unshared_rgb, rtol=0, atol=0)
    torch.testing.assert_close(xyz, unshared_xyz, rtol=0, atol=0)
