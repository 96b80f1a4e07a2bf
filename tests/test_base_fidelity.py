"""The base as it was trained: the VAE in fp32 as stored, one encoder dtype and one condition fill for training,
caching and sampling, the Fun transformer (never the plain I2V one by accident), and a Fun download used as shipped."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_original_layout import TINY_VAE, fun_folder, originals, tiny_configs  # noqa: F401  (fixtures)
from test_weights import to_original_layout

import one4d.original_layout
from one4d.components import build_tiny_directory
from one4d.models.presets import build_base_transformer
from one4d.original_layout import VAE_FILE
from one4d.pipeline import load_pipeline
from one4d.training import Trainer
from one4d.training.testing import compose_train_config, write_synthetic_clips

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return build_tiny_directory(tmp_path_factory.mktemp("wan") / "Wan2.1-I2V-Diffusers")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_synthetic_clips(tmp_path_factory.mktemp("clips"), count=2, num_frames=5, size=32)


def test_training_and_sampling_load_the_same_encoders_vae_fp32_bit_for_bit(wan_dir, clips, tmp_path):
    """bf16 base, fill -1: the trainer's and the sampler's encoders, dtypes and UMC condition are the same."""
    cfg = compose_train_config(["experiment=tiny_cpu", f"model.components={wan_dir}", "model.dtype=bfloat16",
                                "model.condition_fill=-1.0", f"data.roots=[{clips}]", f"run_dir={tmp_path / 'run'}",
                                "train.report_to=null", "train.progress_bar=false"])
    trainer = Trainer(cfg).setup()
    stored = load_file(wan_dir / "vae" / "diffusion_pytorch_model.safetensors")
    pipe = load_pipeline(preset="tiny", components=str(wan_dir), dtype="bfloat16", encoder_dtype=cfg.model.encoder_dtype,
                         condition_fill=float(cfg.model.condition_fill))
    for encoders in (trainer.adapter.encoders, pipe.encoders):
        vae = encoders.vae.state_dict()
        assert vae.keys() == stored.keys() and all(torch.equal(vae[k], stored[k]) and vae[k].dtype == torch.float32 for k in stored)
        assert encoders.text_encoder.dtype == encoders.image_encoder.dtype == torch.bfloat16
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    observed = torch.tensor([[True, False, False, False, True]])
    training = trainer.adapter.encode_batch({"rgb": video, "xyz": video, "observed": observed, "caption": ["a room"]})
    assert trainer.adapter.condition_fill == pipe.condition_fill == -1.0
    torch.testing.assert_close(pipe.prepare_condition(video, observed), training["condition"], rtol=0, atol=0)
    # and the fill really reaches the VAE: 0 (the Fun default) gives another condition
    pipe.condition_fill = 0.0
    assert not torch.equal(pipe.prepare_condition(video, observed), training["condition"])
    trainer.close()


def test_a_fun_preset_never_takes_a_diffusers_i2v_transformer_silently(wan_dir, tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "sample.py"), "task=single", f"input={ROOT / 'README.md'}",
               "model=wan2.1-fun-14b-inp", f"model.components={wan_dir}", f"out={tmp_path / 'out'}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and errors[0] == result.stderr.splitlines()[-1], result.stderr
    assert "needs model.transformer=<your Wan2.1-Fun-V1.1-InP folder>" in errors[0]
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "experiment=one4d_14b", f"model.components={wan_dir}",
                             "data.roots=[nowhere]", f"run_dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "needs model.transformer=" in result.stderr.splitlines()[-1]
    # no components at all: the 14B preset must not fall back to the tiny random stand-ins
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "experiment=one4d_14b", "data.roots=[nowhere]",
                             f"run_dir={tmp_path / 'run2'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "needs model.components=" in result.stderr.splitlines()[-1]
    # explicitly asked for: the directory's transformer is the base
    from one4d.weights import base_transformer_source

    assert base_transformer_source("wan2.1-fun-14b-inp", None, str(wan_dir), from_components=True) == str(wan_dir)


def test_a_fun_download_as_shipped_is_the_whole_model(fun_folder, tmp_path, monkeypatch):  # noqa: F811
    """components = the Fun folder: its own transformer (original layout) and its .pth encoders, VAE fp32 as stored."""
    torch.manual_seed(0)
    base = build_base_transformer("tiny")
    save_file(to_original_layout(base), fun_folder / "diffusion_pytorch_model.safetensors")
    # the real files are full size; the test folder's are tiny, so the loader is given their configs
    monkeypatch.setattr(one4d.original_layout, "load_original_components",
                        functools.partial(one4d.original_layout.load_original_components, configs=tiny_configs()))
    pipe = load_pipeline(preset="tiny", components=str(fun_folder), dtype="bfloat16", lora_rank=4)
    from one4d.weights import base_transformer_source

    # an original-layout folder looks the same for Fun and plain I2V: the Fun presets still want it named
    with pytest.raises(ValueError, match="needs model.transformer=.*it may be model.components itself"):
        base_transformer_source("wan2.1-fun-14b-inp", None, str(fun_folder))
    assert base_transformer_source("wan2.1-fun-14b-inp", str(fun_folder), str(fun_folder)) == str(fun_folder)
    stored = torch.load(fun_folder / VAE_FILE, weights_only=True)
    assert all(p.dtype == torch.float32 for p in pipe.vae.parameters())
    assert pipe.vae.state_dict()["decoder.mid_block.resnets.0.norm1.gamma"].equal(stored["decoder.middle.0.residual.0.gamma"])
    assert pipe.encoders.text_encoder.dtype == torch.bfloat16
    loaded = {k: v for k, v in pipe.transformer.base.state_dict().items() if "lora_" not in k}
    reference = {k.replace(".base_layer", ""): v for k, v in loaded.items()}
    assert torch.equal(reference["blocks.0.attn1.to_q.weight"].float(), base.blocks[0].attn1.to_q.weight.to(torch.bfloat16).float())
    images = (torch.rand(1, 32, 32, 3) * 255).to(torch.uint8).numpy()
    output = pipe(images, [0], 5, num_inference_steps=1, guidance_scale=1.0, output_type="pt", recover_cameras=False, progress=False)
    assert torch.isfinite(output.pointmaps).all()


def test_a_pth_of_another_component_is_one_line_from_sample_py(fun_folder, tmp_path):  # noqa: F811
    """Found only while loading, still bad input: exit 2 and one line naming the file and the expected layout."""
    from one4d.original_layout import CLIP_FILE

    broken = tmp_path / "Wan2.1-Fun-V1.1-14B-InP"
    broken.mkdir()
    for path in fun_folder.iterdir():
        (broken / path.name).symlink_to(path)
    (broken / VAE_FILE).unlink()
    (broken / VAE_FILE).symlink_to(fun_folder / CLIP_FILE)  # the CLIP file where the VAE belongs
    image = tmp_path / "image.png"
    import imageio.v2 as imageio
    import numpy as np

    imageio.imwrite(image, np.zeros((32, 32, 3), np.uint8))
    command = [sys.executable, str(ROOT / "scripts" / "sample.py"), "task=single", f"input={image}", "model.preset=tiny",
               f"model.components={broken}", f"out={tmp_path / 'out'}", "steps=1", "progress=false"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and errors[0] == result.stderr.splitlines()[-1], result.stderr[-2000:]
    assert VAE_FILE in errors[0] and "not Wan2.1's VAE" in errors[0]
    assert not (tmp_path / "out").exists()


def test_fp16_encoders_keep_umt5s_wo_in_fp32_everywhere(wan_dir):
    """transformers keeps UMT5's ``wo`` in fp32 under fp16 (it overflows there); the tiny stand-ins and the
    original-layout loader are cast the same way, so every layout gives the same encoder."""
    from one4d.encoding import load_encoders

    for components in ("tiny", str(wan_dir)):
        text = load_encoders(components, dtype=torch.float16).text_encoder
        stored = load_encoders(components).text_encoder.encoder.block[0].layer[1].DenseReluDense.wo.weight
        assert text.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
        assert torch.equal(text.encoder.block[0].layer[1].DenseReluDense.wo.weight, stored)  # never rounded through fp16
        assert text.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float16


def test_eval_takes_the_same_base_options_and_answers_bad_ones_in_one_line(wan_dir, tmp_path):
    from test_eval_datasets import make_fake_tum

    make_fake_tum(tmp_path / "tum", frames=6)
    command = [sys.executable, str(ROOT / "scripts" / "eval.py"), "benchmark=tum", f"root={tmp_path / 'tum'}", "mode=model",
               "benchmark.reader.sequences=[rgbd_dataset_freiburg3_walking_xyz]", f"model_predictor.components={wan_dir}", "model_predictor.device=cpu", f"output_dir={tmp_path / 'out'}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "needs model.transformer=" in errors[0], result.stderr[-2000:]
