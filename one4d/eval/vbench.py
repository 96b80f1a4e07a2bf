"""Optional VBench scores for the generation task (paper Table 2): dynamic degree, I2V consistency
(subject and background) and aesthetic quality.

Runs only when the ``vbench`` package (VBench with its I2V extension, ``vbench2_beta_i2v``) and
the weights it loads are on disk: nothing is downloaded from here. ``missing_requirements`` says
exactly what to install and where to put each file; VBench looks for its weights under
``$VBENCH_CACHE_DIR`` (default ``~/.cache/vbench``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

DIMENSIONS = ("dynamic_degree", "i2v_subject", "i2v_background", "aesthetic_quality")

# Files VBench opens for these dimensions, relative to its cache directory, and where they come from.
REQUIRED_WEIGHTS = {
    "dynamic_degree": [("raft_model/models/raft-things.pth", "raft-things.pth (from models.zip of princeton-vl/RAFT)")],
    "aesthetic_quality": [
        ("aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth", "LAION-AI/aesthetic-predictor sa_0_4_vit_l_14_linear.pth"),
        ("clip_model/ViT-L-14.pt", "OpenAI CLIP ViT-L/14 checkpoint"),
    ],
    "i2v_subject": [("dino_model/dino_vitbase16_pretrain.pth", "facebookresearch/dino ViT-B/16 weights")],
    "i2v_background": [("dreamsim_cache", "DreamSim checkpoint folder (dreamsim package cache)")],
}


def cache_dir() -> Path:
    return Path(os.environ.get("VBENCH_CACHE_DIR", Path.home() / ".cache" / "vbench"))


def missing_requirements(dimensions=DIMENSIONS) -> list[str]:
    """One line per missing package or weight file; empty when VBench can run offline."""
    missing = []
    for module in ("vbench", "vbench2_beta_i2v"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"python package '{module}' is not installed (VBench, github.com/Vchitect/VBench)")
    root = cache_dir()
    for dimension in dimensions:
        if dimension not in REQUIRED_WEIGHTS:
            raise ValueError(f"unknown VBench dimension {dimension!r}; choose from {DIMENSIONS}")
        for relative, origin in REQUIRED_WEIGHTS[dimension]:
            if not (root / relative).exists():
                missing.append(f"{dimension}: place {origin} at {root / relative}")
    return missing


def run_vbench(videos_dir: str | Path, full_info_json: str | Path, output_dir: str | Path,
               dimensions=DIMENSIONS, resolution: str = "16-9", device: str = "cuda") -> dict:
    """Score generated videos of VBench-I2V's image suite with VBench (the paper's Table 2 protocol).

    ``videos_dir`` holds one video per image of the suite, named as VBench-I2V expects;
    ``full_info_json`` is the suite's ``vbench2_i2v_full_info.json``; ``resolution`` the suite's
    crop ratio. Raises a ValueError listing every missing requirement instead of letting VBench
    download. Returns ``{dimension: score}`` read from VBench's result file.
    """
    missing = missing_requirements(dimensions)
    if missing:
        raise ValueError("VBench cannot run offline:\n" + "\n".join(missing))
    from vbench import VBench  # optional dependencies, present after the check above
    from vbench2_beta_i2v import VBenchI2V

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    quality = [d for d in dimensions if not d.startswith("i2v_")]
    consistency = [d for d in dimensions if d.startswith("i2v_")]
    if quality:
        VBench(device, str(full_info_json), str(output_dir)).evaluate(
            videos_path=str(videos_dir), name="one4d_quality", dimension_list=quality)
    if consistency:
        VBenchI2V(device, str(full_info_json), str(output_dir)).evaluate(
            videos_path=str(videos_dir), name="one4d_i2v", dimension_list=consistency, resolution=resolution)
    scores = {}
    for name in ("one4d_quality", "one4d_i2v"):
        path = output_dir / f"{name}_eval_results.json"
        if path.is_file():
            scores.update({k: v[0] if isinstance(v, list) else v for k, v in json.loads(path.read_text()).items()})
    return {dimension: scores.get(dimension) for dimension in dimensions}
