"""``sampling.json``: what a One4D checkpoint folder needs to be sampled with ``checkpoint=<folder>`` alone.

Written by the trainer into every checkpoint (``<run>/checkpoints/step-*/``) and shipped with the tiny
model (``data/checkpoints/tiny/``). ``scripts/sample.py`` takes its values for every key the command
line does not give (``one4d.pipeline.cli``)::

    {"format": 1,
     "state": "one4d",                          # the trainable-state folder, relative to this file
     "model": {"preset": "demo", "components": "base", ...},   # model.* keys the base was trained with
     "trained_at": {"num_frames": 9, "height": 48, "width": 64},
     "sampler": {"steps": 25, "cfg": 2.0, "shift": 2.0, ...}}  # recommended sampler settings (may be empty)

Paths in ``model`` are absolute or relative to the folder holding the file; ``"tiny"`` names the
seeded random tiny components.
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLING_FILE = "sampling.json"
FORMAT = 1
MODEL_KEYS = ("preset", "components", "transformer", "transformer_from_components", "dtype", "encoder_dtype",
              "condition_fill", "components_seed")
SIZE_KEYS = ("num_frames", "height", "width")
SAMPLER_KEYS = ("steps", "cfg", "shift", "scheduler", "negative_prompt")
PATH_KEYS = ("components", "transformer")


def write_sampling_file(folder: str | Path, state: str, model: dict, trained_at: dict, sampler: dict | None = None) -> Path:
    """Write ``<folder>/sampling.json``; unknown keys are refused so that every written key is one the sampler reads."""
    for name, given, known in (("model", model, MODEL_KEYS), ("trained_at", trained_at, SIZE_KEYS), ("sampler", sampler or {}, SAMPLER_KEYS)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"{SAMPLING_FILE}: unknown {name} keys {unknown}; expected some of {', '.join(known)}")
    record = {"format": FORMAT, "state": state, "model": dict(model), "trained_at": dict(trained_at), "sampler": dict(sampler or {})}
    path = Path(folder) / SAMPLING_FILE
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def read_sampling_file(folder: str | Path) -> dict | None:
    """The record of ``<folder>/sampling.json`` with its paths resolved, or None without one; bad content is a ValueError."""
    folder = Path(folder)
    path = folder / SAMPLING_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("state"), str):
        raise ValueError(f"{path} is not a One4D sampling file of format {FORMAT} (it needs \"format\" and \"state\")")
    model = dict(record.get("model") or {})
    for key in PATH_KEYS:
        value = model.get(key)
        if value and value != "tiny" and not Path(value).is_absolute():
            model[key] = str(folder / value)
    return {"state": str(folder / record["state"]), "model": {k: v for k, v in model.items() if k in MODEL_KEYS},
            "trained_at": {k: int(v) for k, v in (record.get("trained_at") or {}).items() if k in SIZE_KEYS},
            "sampler": {k: v for k, v in (record.get("sampler") or {}).items() if k in SAMPLER_KEYS}}
