"""fp8 storage of the frozen base and block-level group offloading (one4d.storage), and the precision checks."""

from __future__ import annotations

import pytest
import torch
from test_models import make_inputs

from one4d.models import build_model
from one4d.pipeline import load_pipeline
from one4d.storage import check_precision, enable_fp8_base_storage
from one4d.training.testing import compose_train_config
from one4d.training.trainer import check_config


def fp8_and_reference(checkpointing: bool):
    """A bf16 DLC model with fp8 base storage, and the same model in plain bf16 with its weights rounded through fp8."""
    torch.manual_seed(0)
    model = build_model("dlc", "tiny", dtype=torch.bfloat16, lora_rank=4)
    for name, parameter in model.named_parameters():
        if "lora_B" in name or "links" in name:
            torch.nn.init.normal_(parameter, std=0.1)  # non-zero LoRA B and links, so every path carries gradient
    reference = build_model("dlc", "tiny", dtype=torch.bfloat16, lora_rank=4)
    reference.load_state_dict(model.state_dict())
    enable_fp8_base_storage(model)
    with torch.no_grad():
        for parameter, twin in zip(model.parameters(), reference.parameters()):
            if parameter.dtype == torch.float8_e4m3fn:
                twin.copy_(parameter.to(torch.bfloat16))
    if checkpointing:
        model.enable_gradient_checkpointing()
        reference.enable_gradient_checkpointing()
    return model, reference


def test_fp8_storage_keeps_trainables_norms_and_embedders_out_of_fp8():
    model, _ = fp8_and_reference(checkpointing=False)
    fp8 = {name for name, p in model.named_parameters() if p.dtype == torch.float8_e4m3fn}
    assert "base.blocks.0.attn1.to_q.base_layer.weight" in fp8 and "base.blocks.1.ffn.net.2.base_layer.weight" in fp8
    assert "base.blocks.0.attn2.add_k_proj.base_layer.weight" in fp8
    assert not any("lora_" in name or "links" in name or "xyz_" in name for name in fp8)
    assert not any("norm" in name or "condition_embedder" in name or "patch_embedding" in name or "proj_out" in name for name in fp8)
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fp8_storage_trains_exactly_like_a_bf16_base_with_fp8_rounded_weights(checkpointing):
    """Forward and every trainable gradient equal, bit for bit: the casts happen per layer, inside the recompute too."""
    model, reference = fp8_and_reference(checkpointing)
    inputs = make_inputs()  # fp32, as the trainer passes them
    outputs, expected = model(**inputs), reference(**inputs)
    assert all(torch.equal(a, b) for a, b in zip(outputs, expected))
    sum(o.float().square().mean() for o in outputs).backward()
    sum(o.float().square().mean() for o in expected).backward()
    twins = dict(reference.named_parameters())
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert trained and all(torch.equal(p.grad, twins[name].grad) for name, p in trained)
    assert any(p.dtype == torch.float8_e4m3fn for p in model.base.blocks.parameters())  # stored fp8 again after use


def test_group_offloaded_sampling_equals_resident_sampling():
    """On the CPU the blocks "move" from CPU to CPU: the hooks run on every DLC call and the samples stay identical."""
    images = (torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    arguments = dict(images=images, observed=[0], num_frames=5, num_inference_steps=2, guidance_scale=2.0,
                     output_type="pt", recover_cameras=False, progress=False)
    resident = load_pipeline(lora_rank=4)(**arguments, generator=torch.Generator().manual_seed(0))
    pipe = load_pipeline(lora_rank=4)
    pipe.enable_group_offload("cpu")
    offloaded = pipe(**arguments, generator=torch.Generator().manual_seed(0))
    assert torch.equal(resident.pointmaps, offloaded.pointmaps) and torch.equal(resident.rgb, offloaded.rgb)
    assert any(hasattr(block, "_diffusers_hook") for block in pipe.transformer.base.blocks)
    with pytest.raises(ValueError, match="group-offloaded"):
        pipe.to("cpu")


def test_precision_requests_the_device_cannot_run_or_runs_slowly_are_one_line(monkeypatch):
    with pytest.raises(ValueError, match="use model.dtype=bfloat16 with it"):
        check_precision(torch.float32, "cpu", torch.float8_e4m3fn)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.warns(UserWarning, match="no torch.bfloat16 instructions: it runs emulated .* model.dtype=float32 is faster"):
        check_precision(torch.bfloat16, "cpu")  # correct, only slow: a warning line, not a refusal
    for overrides, message in [
        (["experiment=one4d_14b", "launcher=deepspeed_zero3"], "needs launcher=deepspeed_zero2 or ddp"),
        (["experiment=tiny_base"], "trains every weight"),
    ]:
        cfg = compose_train_config([*overrides, "model.base_storage_dtype=float8_e4m3fn"])
        with pytest.raises(ValueError, match=message):
            check_config(cfg, world_size=1)
