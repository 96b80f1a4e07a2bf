"""Atomic training checkpoints: write into a hidden temporary folder, verify, then rename.

A checkpoint ``<run>/checkpoints/step-000123/`` holds

    trainable/             the trainable state (``one4d.models.state``: safetensors + architecture.json)
    optimizer.pt           optimizer state (plain tensors and numbers: read with weights_only=True)
    deepspeed/             instead of optimizer.pt under DeepSpeed: its per-rank ZeRO partitions (another process
                           count loads them through ``convert_to_universal``)
    scheduler.json         the LR scheduler's state
    trainer.json           step, batches consumed, processes x batch, accumulation, seed: the data order and draws
                           are a function of these (a resume checks them: Trainer's check_resumable)
    losses.json            every step's loss from step 0 (the mean over processes): the run's loss curve
    rng-rank<r>.safetensors  every process's torch RNG states
    sampling.json          what ``scripts/sample.py checkpoint=<this folder>`` needs besides the weights (one4d.sampling_file)
    manifest.json          written last: every file's size (and sha256 below 256 MB)

The folder is renamed into place only after the manifest is written, so a crash mid-write leaves a
``.tmp-*`` folder and never a half-written ``step-*``. ``latest_valid`` checks manifests and falls
back to the previous good checkpoint with a warning when the newest one is damaged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PREFIX = "step-"
HASH_LIMIT = 256 * 2**20  # bytes; larger files (ZeRO partitions of big models) are checked by size only


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:07d}"


def temporary_folder(root: Path, step: int) -> Path:
    return Path(root) / f".tmp-{checkpoint_name(step)}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    """Record every file of a finished checkpoint folder; the checkpoint is complete once this exists."""
    entries = {}
    for path in _files(folder):
        size = path.stat().st_size
        entries[str(path.relative_to(folder))] = {"size": size, "sha256": _sha256(path) if size <= HASH_LIMIT else None}
    temporary = folder / (MANIFEST + ".partial")
    temporary.write_text(json.dumps(entries, indent=1))
    with open(temporary) as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, folder / MANIFEST)


def verify(folder: Path) -> str | None:
    """None when ``folder`` is a complete, undamaged checkpoint, else the problem in a few words."""
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"no {MANIFEST} (incomplete write)"
    try:
        entries = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{MANIFEST} is not valid JSON"
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {entry['size']}"
        if entry["sha256"] is not None and _sha256(path) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return None


def publish(temporary: Path, root: Path, step: int) -> Path:
    """Manifest, then rename the temporary folder to ``step-*`` (replacing an older one of the same step)."""
    write_manifest(temporary)
    final = Path(root) / checkpoint_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """``step-*`` folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [path for path in root.iterdir() if path.is_dir() and path.name.startswith(PREFIX) and path.name[len(PREFIX):].isdigit()]
    return sorted(folders, key=lambda path: int(path.name[len(PREFIX):]))


def latest_valid(root: Path) -> Path | None:
    """The newest undamaged checkpoint; damaged newer ones are skipped with a warning naming the problem."""
    for folder in reversed(list_checkpoints(root)):
        problem = verify(folder)
        if problem is None:
            return folder
        logger.warning("checkpoint %s is damaged (%s); falling back to the previous one", folder, problem)
    return None


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """``train.resume``: None / "none" = fresh start; "latest" = the newest good checkpoint under ``root``, and a
    ValueError when there is none (a resume that silently trained from scratch would look like one that worked);
    "latest_or_new" = the same, or a fresh start; else a checkpoint folder."""
    if resume in (None, "", "none", "null"):
        return None
    if resume in ("latest", "latest_or_new"):
        folder = latest_valid(root)
        if folder is None and resume == "latest":
            raise ValueError(f"train.resume=latest: no checkpoint in {root}; give the run_dir the first run printed, "
                             f"or train.resume=latest_or_new to start fresh when there is none")
        return folder
    folder = Path(resume)
    problem = verify(folder)
    if problem is not None:
        raise ValueError(f"train.resume={resume}: not a usable checkpoint ({problem})")
    return folder


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, and stale temporary folders."""
    root = Path(root)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if keep_last > 0:
        for folder in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(folder, ignore_errors=True)


def trainer_state(folder: Path) -> dict:
    """A checkpoint's ``trainer.json``: step, data order, and the processes x batch, accumulation and seed it ran with."""
    return json.loads((Path(folder) / "trainer.json").read_text())


def written_by_deepspeed(folder: Path) -> bool:
    """Whether a checkpoint holds DeepSpeed's ZeRO partitions (``deepspeed/``) rather than ``optimizer.pt``."""
    return (Path(folder) / "deepspeed").is_dir()


def convert_to_universal(state: Path, out: Path) -> None:
    """DeepSpeed's own converter (``python -m deepspeed.checkpoint.ds_to_universal``) of one ZeRO-1/2/3 checkpoint tag
    folder into ``out``, a universal checkpoint that loads on any process count (``checkpoint.load_universal``). Our
    engines save no ``universal_checkpoint_info`` (plain data parallelism: no tensor or pipeline split), so the
    converter injects the default. A failed or interrupted conversion leaves no ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(state),
               "--output_folder", str(out), "--inject_missing_state"]
    try:
        result = subprocess.run(command, capture_output=True, text=True)  # Ctrl+C / SIGTERM: the child is killed
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if result.returncode:
        shutil.rmtree(out, ignore_errors=True)
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise ValueError(f"converting {state} to a universal checkpoint failed: {lines[-1]}")
