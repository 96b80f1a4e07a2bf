"""Dataset converters: one module per dataset, each defining ``SOURCE`` (a :class:`DatasetSource` subclass).

Sources are found by module name, so adding a dataset is adding one file here and one ``configs/source/<name>.yaml``.
A source kept elsewhere (a test's fixture format, a private dataset) is named by its importable module in the
environment variable ``ONE4D_SOURCE_MODULES`` (comma-separated, e.g. ``my_pkg.my_dataset``); its name is the
module's last component, and its config is found through ``hydra.searchpath``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from one4d.data.sources.base import DatasetSource, FrameReadError, SequenceInfo, SourceFrame, SourceLayoutError, require

__all__ = ["DatasetSource", "FrameReadError", "SequenceInfo", "SourceFrame", "SourceLayoutError", "get_source", "require",
           "source_names"]


EXTRA_MODULES = "ONE4D_SOURCE_MODULES"


def _modules() -> dict[str, str]:
    """Source name -> importable module: this package's modules, then those named in ONE4D_SOURCE_MODULES."""
    modules = {info.name: f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)
               if info.name != "base" and not info.name.startswith("_")}
    for module in os.environ.get(EXTRA_MODULES, "").split(","):
        if module.strip():
            modules[module.strip().rsplit(".", 1)[-1]] = module.strip()
    return modules


def source_names() -> list[str]:
    """The names ``source=`` accepts, sorted."""
    return sorted(_modules())


def get_source(name: str) -> type[DatasetSource]:
    """The source class called ``name``; an unknown name is one line listing the known ones."""
    modules = _modules()
    if name not in modules:
        raise ValueError(f"unknown source {name!r}; known sources: {', '.join(sorted(modules)) or 'none'}")
    return importlib.import_module(modules[name]).SOURCE
