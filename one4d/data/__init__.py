"""4D training data: synthetic scenes, the on-disk clip format and the training dataset."""

from one4d.data.clip import Clip, ClipError, read_clip, read_meta, write_clip
from one4d.data.dataset import ClipDataset
from one4d.data.synthetic import SyntheticScene, render_scene, write_synthetic_dataset

__all__ = [
    "Clip", "ClipError", "ClipDataset", "SyntheticScene", "read_clip", "read_meta", "render_scene", "write_clip",
    "write_synthetic_dataset",
]
