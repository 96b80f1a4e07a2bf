"""Sampling across processes: the layout (``layout``), and CFG-parallel and sequence parallel applied to a loaded
pipeline from outside the model (``parallelize``, ``sequence``). Data parallel over a jobs file is
``one4d.pipeline.jobs``."""

from .layout import ParallelLayout, check_layout, check_token_count, layout_from_config, rank_device, start, stop
from .parallelize import parallelize

__all__ = ["ParallelLayout", "check_layout", "check_token_count", "layout_from_config", "parallelize", "rank_device", "start", "stop"]
