"""Dataset converters: one module per dataset, each defining ``SOURCE`` (a :class:`DatasetSource` subclass).

Sources are found by module name, so adding a dataset is adding one file here and one ``configs/source/<name>.yaml``.
"""

from __future__ import annotations

import importlib
import pkgutil

from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError, require

__all__ = ["DatasetSource", "FrameReadError", "SequenceInfo", "SourceFrame", "SourceLayoutError", "get_source", "require",
           "source_names"]


def source_names() -> list[str]:
    """The names ``source=`` accepts, sorted."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if info.name != "base" and not info.name.startswith("_"))


def get_source(name: str) -> type[DatasetSource]:
    """The source class called ``name``; an unknown name is one line listing the known ones."""
    names = source_names()
    if name not in names:
        raise ValueError(f"unknown source {name!r}; known sources: {', '.join(names) or 'none'}")
    return importlib.import_module(f"{__name__}.{name}").SOURCE
