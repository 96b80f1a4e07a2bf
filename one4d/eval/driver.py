"""What ``scripts/eval.py`` does with its Hydra config: build the sequences and the predictor,
evaluate, and write ``metrics.json`` and Markdown tables.

Outputs under ``output_dir``: ``<label>/<benchmark>[_sparsity<r>][_cfg<g>]/metrics.json`` and
``table.md`` for the run, and ``tables.md``: Tables 3 to 6 re-rendered from every ``metrics.json``
found, so the runs of one sweep (``scripts/eval_tables.sh``, or ``scripts/eval.py -m``) fill the
paper's tables.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from one4d.eval.predictions import OraclePredictor, PredictionFolder, SavedPredictions
from one4d.eval.runner import Predictor, evaluate
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


def saved_predictor(cfg: DictConfig, folder: Path, sources) -> Predictor:
    """The configured predictor; one that predicts (model, oracle) saves each prediction in
    ``folder/predictions`` as it goes, so a re-run resumes (:class:`SavedPredictions`). The model is
    loaded up front when some sequence has no saved prediction, so a bad model option fails at once."""
    if resolve_mode(cfg) == "predictions":
        return build_predictor(cfg)
    saved = SavedPredictions(lambda: build_predictor(cfg), folder / "predictions", prediction_settings(cfg), resume=cfg.resume)
    if saved.missing(source.name for source in sources):
        saved.load()
        if hasattr(saved.predictor, "check_prompts"):  # one warning, with the count, for sequences the prompts file lacks
            saved.predictor.check_prompts([source.name for source in sources])
    return saved


def collect_runs(output_dir: str | Path) -> list[dict]:
    """Every run record written under ``output_dir``, in a stable order."""
    return [json.loads(path.read_text()) for path in sorted(Path(output_dir).glob("*/*/metrics.json"))]


def run(cfg: DictConfig) -> dict:
    """Evaluate one benchmark as configured and write its JSON and tables; returns the run record."""
    sparsity = None if cfg.sparsity is None else float(cfg.sparsity)
    reader = instantiate(cfg.benchmark.reader, _partial_=True, _convert_="all")  # called here: its errors stay ValueErrors
    sources = reader(root=cfg.root, strict=cfg.strict)  # strict: a root missing any of the benchmark's sequences is refused here
    depth_options = OmegaConf.to_container(cfg.benchmark.metrics, resolve=True)  # depth_metrics' keyword arguments
    label = cfg.label or default_label(cfg)
    folder = run_folder(cfg, label, sparsity)
    predictor = saved_predictor(cfg, folder, sources)
    result = evaluate(sources, predictor, sparsity=sparsity, strict=cfg.strict, depth_options=depth_options)
    record = {"benchmark": cfg.benchmark.name, "sparsity": sparsity, "guidance_scale": run_guidance(cfg), "label": label,
              "metrics": depth_options, "result": result}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    (folder / "table.md").write_text(render_run(record))
    (Path(cfg.output_dir) / "tables.md").write_text(render_report(collect_runs(cfg.output_dir)))
    print(f"wrote {folder / 'metrics.json'}, {folder / 'table.md'} and {Path(cfg.output_dir) / 'tables.md'}")
    return record
