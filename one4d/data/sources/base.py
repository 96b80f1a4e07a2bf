"""The one interface every dataset converter implements (``scripts/prepare_data.py source=<name>``).

A source reads a dataset exactly as its authors ship it and hands out frames in the project's
conventions (``one4d.geometry``): RGB uint8, z-depth in metres with 0 = invalid, intrinsics with pixel
centres at integer coordinates, OpenCV world-to-camera (x right, y down, z forward). Everything else
(segmenting, cropping, resizing, the far cut, the self-check, writing clips) is the shared clip cutter's
job, so a source module holds only what is particular to its dataset. ``data/sources.md`` documents each.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

SOURCES_DOC = "data/sources.md"


class SourceLayoutError(ValueError):
    """The root is not the named dataset's layout: one line naming the expected file or folder."""

    def __init__(self, source: str, root, expected: str):
        super().__init__(f"{root} is not a {source} download: expected {expected} (see {SOURCES_DOC}, section '{source}')")


class FrameReadError(ValueError):
    """A frame, depth or pose file of one sequence is missing or unreadable: its segment is skipped and counted."""


@dataclass
class SequenceInfo:
    """One sequence of a download. ``name`` is unique within the source, stable between runs and usable in a
    path (for example ``train/ani11_new_``); ``fps`` is the dataset's frame rate where it states one. ``problem`` says
    why a sequence cannot be read at all (its listing or pose file is missing or unreadable): the run names it in the
    report as a skipped sequence and goes on."""

    name: str
    num_frames: int
    fps: float | None = None
    split: str | None = None
    problem: str | None = None


@dataclass
class SourceFrame:
    """One frame as read from the dataset, at its native resolution."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 z in metres; 0, NaN, inf or negative = invalid (the cutter zeroes and counts them)
    intrinsics: np.ndarray  # (3, 3) float64, pixel centres at integer coordinates
    world_to_camera: np.ndarray  # (4, 4) float64, OpenCV
    dynamic_mask: np.ndarray | None = None  # (H, W) bool, True on moving things, where the dataset has it


class DatasetSource(ABC):
    """Base class of one dataset reader. Subclasses set ``name`` and implement the three methods;
    ``options`` are the constants of ``configs/source/<name>.yaml`` (and command-line overrides)."""

    name: ClassVar[str] = ""

    def __init__(self, root: str | Path, **options):
        self.root = Path(root)
        self.options = options
        if not self.root.is_dir():
            raise SourceLayoutError(self.name, self.root, "an existing folder")

    @abstractmethod
    def sequences(self) -> list[SequenceInfo]:
        """Every sequence of the download, in a stable order. A root of another layout raises SourceLayoutError."""

    @abstractmethod
    def read_frame(self, sequence: SequenceInfo, index: int) -> SourceFrame:
        """Frame ``index`` (0-based, in the dataset's own order) of ``sequence``; FrameReadError when its files are
        missing or unreadable."""

    def caption(self, sequence: SequenceInfo, first: int, count: int) -> str | None:
        """The dataset's own text for frames [first, first + count) where it ships one, else None."""
        return None


def require(module: str, extra: str = "data"):
    """Import an optional dependency, or fail with one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this dataset needs the Python package '{module}': pip install -e '.[{extra}]'") from error
