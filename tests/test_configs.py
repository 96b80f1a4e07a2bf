"""Every training config composes; the paper's experiment builds the 14B model on the meta device with its trainable count."""

import re
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from one4d.training import build_joint_model
from one4d.training.testing import CONFIG_DIR, compose_train_config

GROUPS = ("model", "data", "train", "launcher", "experiment", "debug")


@pytest.mark.parametrize("group,option", [(group, path.stem) for group in GROUPS for path in sorted((CONFIG_DIR / group).glob("*.yaml"))])
def test_every_option_composes(group, option):
    overrides = [f"{group}={option}", "run_dir=/tmp/unused"]
    if group in ("model", "experiment"):
        overrides.append("model.components=tiny")  # the big presets require a local components folder
    cfg = compose_train_config(overrides)
    assert cfg.launcher.kind in ("single", "ddp", "deepspeed")
    assert (cfg.data.num_frames - 1) % 4 == 0 and cfg.data.height % 16 == 0
    assert cfg.train.lr > 0


def test_paper_recipe_values():
    cfg = compose_train_config(["experiment=one4d_14b", "run_dir=/tmp/unused"])
    assert (cfg.train.batch_size, cfg.train.grad_accum, cfg.train.steps, cfg.train.lr) == (1, 4, 5500, 1e-4)
    assert (cfg.data.num_frames, cfg.data.height, cfg.data.width) == (81, 352, 624)
    assert cfg.model.dtype == "bfloat16" and cfg.model.preset == "wan2.1-fun-14b-inp" and cfg.model.lora_rank == 64
    assert cfg.launcher.kind == "deepspeed" and cfg.launcher.deepspeed.zero_optimization.stage == 2
    assert cfg.train.gradient_checkpointing


def test_one4d_14b_instantiates_on_meta_with_paper_trainable_count():
    cfg = compose_train_config(["experiment=one4d_14b", "run_dir=/tmp/unused"])
    model = build_joint_model(cfg.model, device="meta")
    assert sum(p.numel() for p in model.trainable_parameters()) == 981_130_304


def test_unknown_key_is_refused():
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_train_config(["train.lrr=1e-4", "run_dir=/tmp/unused"])


def test_hydra_writes_nothing_into_the_repository():
    text = (CONFIG_DIR / "train.yaml").read_text()
    # no .hydra/ and no Hydra run folder: the trainer makes run_dir itself (issue 15: no empty timestamped folders)
    assert "output_subdir: null" in text and re.search(r"^ +dir: \. ", text, flags=re.M)
    assert not (Path(CONFIG_DIR).parent / ".hydra").exists()
