"""What ``scripts/eval.py`` does with its Hydra config: build the sequences and the predictor,
evaluate, and write ``metrics.json`` and Markdown tables.

Outputs under ``output_dir``: ``<label>/<benchmark>[_sparsity<r>][_cfg<g>]/metrics.json`` and
``table.md`` for the run, and ``tables.md``: Tables 3 to 6 re-rendered from every ``metrics.json``
found, so the runs of one sweep (``scripts/eval_tables.sh``, or ``scripts/eval.py -m``) fill the
paper's tables.

Across processes (``torchrun --nproc_per_node N scripts/eval.py ...``): the benchmark's sequences are
dealt to the ranks (rank r takes sequences r, r + N, ...; a sequence's windows stay in one process),
each rank predicts and scores its own through :class:`SavedPredictions` (same folder, so a killed
multi-process run resumes with any number of processes), the per-sequence metrics are gathered and
rank 0 averages them in the benchmark's order and writes the files: the same ``metrics.json`` as one
process. Each rank computes on ``cuda:<local rank>`` (``device: auto`` means the rank's GPU) or the
CPU; NCCL with CUDA, gloo without.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import json
import os
import re
from pathlib import Path

import torch
import torch.distributed as dist

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from one4d.eval.predictions import OraclePredictor, PredictionFolder, SavedPredictions
from one4d.eval.runner import Predictor, evaluate_each, summarize
from one4d.eval.tables import DEFAULT_GUIDANCE, render_report, render_run

MODES = ("model", "predictions", "oracle")


def resolve_mode(cfg: DictConfig) -> str:
    mode = cfg.mode or ("predictions" if cfg.predictions else "model")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "predictions" and not cfg.predictions:
        raise ValueError("mode=predictions needs predictions=DIR (a folder of <sequence>/frame_XXXX.npy and pred_traj.txt)")
    return mode


def build_predictor(cfg: DictConfig) -> Predictor:
    """The predictor of the configured mode; mode=model refuses when the sampling pipeline is absent."""
    mode = resolve_mode(cfg)
    if mode == "predictions":
        return PredictionFolder(cfg.predictions, cfg.quaternion_order)
    if mode == "oracle":
        return OraclePredictor(**cfg.oracle)
    try:
        importlib.import_module("one4d.pipeline")
    except ImportError as error:
        raise ValueError(
            f"mode=model runs the One4D sampling pipeline, but one4d.pipeline cannot be imported ({error}); "
            "evaluate saved predictions with predictions=DIR instead"
        ) from error
    try:
        return instantiate(cfg.model_predictor)
    except InstantiationException as error:  # hydra wraps the loader's one-line ValueError: hand that on
        if isinstance(error.__cause__, ValueError):
            raise error.__cause__ from None
        raise


def default_label(cfg: DictConfig) -> str:
    mode = resolve_mode(cfg)
    if mode == "predictions":
        return f"predictions: {Path(cfg.predictions).name}"
    if mode == "oracle":
        return "oracle (GT + noise)"
    return f"One4D (ours, {cfg.model_predictor.get('preset', 'model')})"


def run_guidance(cfg: DictConfig) -> float | None:
    """The CFG scale of a model run; None in the other modes (they do not sample)."""
    scale = cfg.model_predictor.get("guidance_scale") if resolve_mode(cfg) == "model" else None
    return None if scale is None else float(scale)


def run_name(benchmark: str, sparsity, guidance_scale: float | None = None) -> str:
    """``<benchmark>[_sparsity<r>][_cfg<g>]``; the CFG suffix only off the paper's default scale (Table 6 runs)."""
    name = benchmark if sparsity is None else f"{benchmark}_sparsity{float(sparsity):g}"
    return name if guidance_scale is None or float(guidance_scale) == DEFAULT_GUIDANCE else f"{name}_cfg{float(guidance_scale):g}"


def run_folder(cfg: DictConfig, label: str, sparsity) -> Path:
    """``<output_dir>/<label>/<run name>``: the run's metrics.json and table.md, and its saved predictions."""
    name = run_name(cfg.benchmark.name, sparsity, run_guidance(cfg))
    return Path(cfg.output_dir) / re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") / name


# Options that change how predictions are scored or where results go, not the predictions themselves.
NOT_PREDICTION_SETTINGS = ("root", "roots", "output_dir", "label", "strict", "resume", "metrics", "predictions",
                           "quaternion_order", "hydra")


def prediction_settings(cfg: DictConfig) -> dict:
    """What a run's saved predictions depend on: its config without scoring and output options, the
    other mode's predictor, or the choice of sequences (resuming on a subset reuses what is saved)."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    for key in (*NOT_PREDICTION_SETTINGS, *({"model": ("oracle",), "oracle": ("model_predictor",)}[resolve_mode(cfg)])):
        settings.pop(key, None)
    settings["mode"] = resolve_mode(cfg)
    settings["benchmark"].pop("metrics", None)
    settings["benchmark"]["reader"].pop("sequences", None)
    prompts = (settings.get("model_predictor") or {}).get("prompts")
    if isinstance(prompts, str) and Path(prompts).is_file():  # the file's contents, not only its path, decide the prompts
        settings["model_predictor"]["prompts_sha256"] = hashlib.sha256(Path(prompts).read_bytes()).hexdigest()
    return settings


def saved_predictor(cfg: DictConfig, folder: Path, sources, rank: int = 0, world_size: int = 1) -> Predictor:
    """The configured predictor; one that predicts (model, oracle) saves each prediction in
    ``folder/predictions`` as it goes, so a re-run resumes (:class:`SavedPredictions`). The model is
    loaded up front when some of ``sources`` has no saved prediction, so a bad model option fails at once.

    With several processes rank 0 prepares the folder first (``resume=false`` empties it, settings
    are written or checked), then the others open it; ``sources`` are this rank's sequences."""
    if resolve_mode(cfg) == "predictions":
        return build_predictor(cfg)

    def open_folder():
        return SavedPredictions(lambda: build_predictor(cfg), folder / "predictions", prediction_settings(cfg),
                                resume=cfg.resume or rank > 0, log=print if rank == 0 else lambda _: None)

    saved = _agreed(world_size, open_folder if rank == 0 else lambda: None)  # rank 0 prepares the folder first,
    if world_size > 1:  # then the others open it (no rank deletes what another writes)
        others = _agreed(world_size, open_folder if rank > 0 else lambda: None)
        saved = saved if rank == 0 else others

    def load_if_needed():
        if saved.missing(source.name for source in sources):
            saved.load()
            if hasattr(saved.predictor, "check_prompts"):  # one warning, with the count, for sequences the prompts file lacks
                saved.predictor.check_prompts([source.name for source in sources])

    _agreed(world_size, load_if_needed)
    return saved


def collect_runs(output_dir: str | Path) -> list[dict]:
    """Every run record written under ``output_dir``, in a stable order."""
    return [json.loads(path.read_text()) for path in sorted(Path(output_dir).glob("*/*/metrics.json"))]


def start_processes() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` without torchrun; under torchrun the process group
    is started (NCCL on ``cuda:<LOCAL_RANK>``, else gloo on the CPU) unless the caller already did."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        from one4d.parallel.layout import start_process_group

        start_process_group(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available()
                            else torch.device("cpu"))
        atexit.register(dist.destroy_process_group)  # once per process: a Hydra sweep (-m) runs several benchmarks in it
    return dist.get_rank(), world_size


def wait_group():
    """The long-timeout group of the waits between ranks (``one4d.parallel.layout.wait_group``)."""
    from one4d.parallel.layout import wait_group as group

    return group()


def _agreed(world_size: int, step):
    """``one4d.parallel.layout.agreed`` on ``wait_group``: ranks finish ``step`` (a share of the sequences) far apart."""
    from one4d.parallel.layout import agreed

    return agreed(world_size, step, wait_group())


def _gather(world_size: int, part: tuple[dict, dict]) -> list[tuple[dict, dict]]:
    """Every rank's ``(per_sequence, skipped)``, in rank order."""
    if world_size == 1:
        return [part]
    parts = [None] * world_size
    dist.all_gather_object(parts, part, group=wait_group())
    return parts


def run(cfg: DictConfig) -> dict:
    """Evaluate one benchmark as configured and write its JSON and tables; returns the run record.

    Under torchrun, every rank returns the record and rank 0 alone writes (module docstring)."""
    rank, world_size = start_processes()
    sparsity = None if cfg.sparsity is None else float(cfg.sparsity)
    reader = instantiate(cfg.benchmark.reader, _partial_=True, _convert_="all")  # called here: its errors stay ValueErrors
    sources = reader(root=cfg.root, strict=cfg.strict)  # strict: a root missing any of the benchmark's sequences is refused here
    depth_options = OmegaConf.to_container(cfg.benchmark.metrics, resolve=True)  # depth_metrics' keyword arguments
    label = cfg.label or default_label(cfg)
    folder = run_folder(cfg, label, sparsity)
    mine = sources[rank::world_size]  # whole sequences: a sequence's windows never straddle two processes
    if world_size > 1:
        print(f"rank {rank} of {world_size}: {len(mine)} of {len(sources)} sequences")
    predictor = saved_predictor(cfg, folder, mine, rank, world_size)
    part = _agreed(world_size, lambda: evaluate_each(mine, predictor, sparsity=sparsity, strict=cfg.strict,
                                                       depth_options=depth_options))
    per_sequence, skipped = {}, {}
    for done, left_out in _gather(world_size, part):
        per_sequence.update(done)
        skipped.update(left_out)
    order = [source.name for source in sources]  # the one-process order, so the averages sum the same way
    result = summarize({name: per_sequence[name] for name in order if name in per_sequence},
                       {name: skipped[name] for name in order if name in skipped})
    record = {"benchmark": cfg.benchmark.name, "sparsity": sparsity, "guidance_scale": run_guidance(cfg), "label": label,
              "metrics": depth_options, "result": result}
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        (folder / "table.md").write_text(render_run(record))
        (Path(cfg.output_dir) / "tables.md").write_text(render_report(collect_runs(cfg.output_dir)))
        print(f"wrote {folder / 'metrics.json'}, {folder / 'table.md'} and {Path(cfg.output_dir) / 'tables.md'}")
    if world_size > 1:
        dist.barrier(group=wait_group())  # the files exist when any rank returns
    return record
