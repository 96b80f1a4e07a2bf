"""Helpers shared by the training tests and benchmarks: synthetic clip folders and composing the train config."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def write_synthetic_clips(root: str | Path, count: int = 4, num_frames: int = 5, size: int = 32) -> Path:
    """``count`` synthetic clip folders (lossless PNG frames) under ``root``."""
    from one4d.data.clip import write_clip
    from one4d.data.synthetic import render_scene

    root = Path(root)
    for index in range(count):
        scene = render_scene(index, num_frames=num_frames, height=size, width=size)
        write_clip(root / f"clip{index:03d}", scene.rgb, scene.pointmaps, scene.depth, scene.intrinsics,
                   scene.world_to_camera, {"caption": scene.caption}, rgb_format="png")
    return root


def compose_train_config(overrides: list[str]):
    """configs/train.yaml composed with ``overrides`` (as on the command line), without running Hydra's app."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))
