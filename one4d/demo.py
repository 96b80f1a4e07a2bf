"""``make demo``: every One4D task end to end with the shipped tiny model, scored against ground truth.

For each task (single image, sparse frames, full video) and each held-out synthetic scene (seeds never
used in training, see ``one4d.training.tiny_model``): fit the observed frames with the sampler's input
rule, sample RGB + pointmaps through :class:`one4d.pipeline.One4DPipeline`, post-optimise cameras and
depth, then score depth (Abs Rel, delta < 1.25 after the protocol's per-sequence scale & shift) and
camera ATE (Sim(3)-aligned) against the scene's exact geometry. Two trivial references are scored the
same way: a constant-depth plane at the scene's median depth (an oracle constant, no alignment) and a
static camera. The single-image task is scored on its observed frame only: its later frames are a
generated future, not a reconstruction.

Writes ``outputs/demo/``: the sampler's output folder per task (first seed), ``contact_sheet.png``,
``metrics.md`` and ``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CHECKPOINT = Path("data/checkpoints/tiny")
MANIFEST = "MANIFEST.json"  # sha256 of every shipped weight and config file, written by make tiny-model
REBUILD = "make tiny-model"
TASKS = ("single", "sparse", "full")
DEMO_SEEDS = (1_000_000, 1_000_001, 1_000_002)  # held out: training used seeds 0 .. num_clips - 1


@dataclass
class DemoSettings:
    """What the demo runs; the defaults are the shipped model's training size."""

    num_frames: int = 9
    height: int = 48
    width: int = 64
    steps: int = 25
    guidance_scale: float = 2.0
    flow_shift: float = 2.0
    sparse_frames: int = 3  # first, middle, last
    seeds: tuple = DEMO_SEEDS
    tasks: tuple = TASKS
    postopt_iterations: int = 15


# ----------------------------------------------------------------------------- the shipped checkpoint


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """Record the sha256 of every weight and config file under ``folder`` in ``MANIFEST.json`` (notes and logs excluded)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and p.suffix != ".md"
                   and p.name != "training_log.json")
    manifest = {str(p.relative_to(folder)): file_digest(p) for p in files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return folder / MANIFEST


def verify_checkpoint(folder: str | Path = CHECKPOINT) -> None:
    """One-line ValueError naming the first missing or corrupted file of the shipped checkpoint, and the rebuild command."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"shipped checkpoint file {manifest_path} is missing; rebuild the tiny model with `{REBUILD}`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"shipped checkpoint file {manifest_path} is corrupted; rebuild the tiny model with `{REBUILD}`") from None
    for name, expected in manifest.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"shipped checkpoint file {path} is missing; rebuild the tiny model with `{REBUILD}`")
        if file_digest(path) != expected:
            raise ValueError(f"shipped checkpoint file {path} is corrupted (sha256 differs from {MANIFEST}); "
                             f"rebuild the tiny model with `{REBUILD}`")


# ----------------------------------------------------------------------------- scoring


def static_camera_ate(gt_cam_to_world: torch.Tensor) -> float:
    """ATE of a camera that never moves: after the best Sim(3) alignment it sits at the centroid of the true centres."""
    centres = gt_cam_to_world[:, :3, 3].double()  # (F, 3)
    return float((centres - centres.mean(0)).pow(2).sum(-1).mean().sqrt())


def score(output, scene, scored_frames: list[int]) -> dict:
    """Depth and pose metrics of one sample against its scene, with the constant-depth and static-camera references."""
    from one4d.eval import depth_metrics, pose_metrics
    from one4d.geometry import invert_pose

    gt_depth = scene.depth[scored_frames]  # (S, H, W)
    pred_depth = torch.as_tensor(output.depth[0])[scored_frames]
    depth = depth_metrics(pred_depth, gt_depth, align="scale&shift", protocol="exact")
    constant = torch.full_like(gt_depth, float(gt_depth[gt_depth > 0].median()))
    baseline = depth_metrics(constant, gt_depth, align="none", protocol="exact")
    gt_poses = invert_pose(scene.world_to_camera.double())  # (F, 4, 4) camera to world
    pose = pose_metrics(output.cameras[0].camera_to_world.double(), gt_poses)
    return {
        "abs_rel": depth["abs_rel"], "delta_1_25": depth["delta_1_25"], "ate": pose["ate"],
        "baseline_abs_rel": baseline["abs_rel"], "baseline_delta_1_25": baseline["delta_1_25"],
        "static_ate": static_camera_ate(gt_poses),
    }


# ----------------------------------------------------------------------------- pictures and the table

SHEET_ROWS = ("input", "generated RGB", "true RGB", "depth", "true depth", "XYZ", "true XYZ")
ZOOM = 2  # pixels per model pixel on the sheet
LABEL_WIDTH = 120


def contact_sheet(task: str, scene, output, observed: list[int], norm) -> np.ndarray:
    """(rows * H, label + F * W, 3) uint8: one row per kind of picture, one column per frame, labelled."""
    from one4d.eval.metrics import align_depth
    from one4d.geometry import normalize_pointmaps
    from one4d.pipeline.outputs import colorize_depth, pointmap_colours, to_uint8

    frames = scene.rgb.shape[0]
    true_rgb = to_uint8(scene.rgb.numpy())  # (F, H, W, 3)
    given = np.full_like(true_rgb, 128)
    given[observed] = true_rgb[observed]  # unobserved frames are mid-grey, as UMC feeds them
    depth = torch.as_tensor(output.depth[0]).float()
    valid = scene.depth > 0
    scale, shift = align_depth(depth[valid].double(), scene.depth[valid].double(), "scale&shift")
    shown = torch.where(valid, scale.float() * depth + shift.float(), torch.zeros_like(depth))  # as the metric sees it
    colours = colorize_depth(torch.cat([shown, scene.depth]).numpy())  # one colour range for both
    true_xyz = normalize_pointmaps(scene.pointmaps, *norm).numpy()
    rows = [given, to_uint8(output.rgb[0]), true_rgb, colours[:frames], colours[frames:],
            pointmap_colours(output.normalized_pointmaps[0]), pointmap_colours(true_xyz)]
    strips = [np.concatenate(list(row), axis=1) for row in rows]  # each (H, F * W, 3)
    grid = np.concatenate(strips, axis=0).repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)
    labels = [f"{task}: {name}" for name in SHEET_ROWS]
    return np.concatenate([label_column(labels, grid.shape[0]), grid], axis=1)


def label_column(labels: list[str], height: int) -> np.ndarray:
    """A white column with one label per equal-height row (PIL's default font)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (LABEL_WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    step = height / len(labels)
    for index, label in enumerate(labels):
        draw.text((4, int(index * step + step / 2 - 6)), label, fill="black")
    return np.asarray(image)


def write_png(path: Path, image: np.ndarray) -> None:
    import imageio.v2 as imageio

    imageio.imwrite(path, image)


def metric_table(results: dict) -> str:
    """The Markdown table of the summary (means over the held-out seeds)."""
    lines = [
        "| task | scored frames | Abs Rel | constant depth Abs Rel | delta<1.25 | ATE | static camera ATE |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, row in results.items():
        lines.append(f"| {task} | {row['scored_frames']} | {row['abs_rel']:.3f} | {row['baseline_abs_rel']:.3f} | "
                     f"{row['delta_1_25']:.3f} | {row['ate']:.4f} | {row['static_ate']:.4f} |")
    lines.append("")
    lines.append("Single image: depth is scored on the observed frame only (later frames are a generated future); "
                 "its ATE is that of the generated camera path. Depth: per-sequence scale & shift; "
                 "constant depth: a plane at the true median depth. ATE after Sim(3) alignment.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- running


def run_task(pipe, task: str, seed: int, settings: DemoSettings, folder: Path | None):
    """Sample one held-out scene for one task; write the sampler's outputs into ``folder`` (if given)."""
    from one4d.data.synthetic import render_scene
    from one4d.geometry import pointmap_normalization
    from one4d.pipeline.inputs import InputFrames, prepare_conditions
    from one4d.pipeline.outputs import prepare_output_folder, publish, write_outputs

    scene = render_scene(seed, settings.num_frames, settings.height, settings.width)
    frames = (scene.rgb * 255).round().to(torch.uint8).numpy()  # (F, H, W, 3)
    source = InputFrames(frames[:1] if task == "single" else frames, Path(f"synthetic_seed_{seed}"), scene.fps)
    sparsity = settings.sparse_frames / settings.num_frames
    conditions = prepare_conditions(task, source, num_frames=settings.num_frames, height=settings.height,
                                    width=settings.width, sparsity=sparsity)
    # The scene's own normalisation turns the model's normalised pointmaps back into metres.
    centre, scale = pointmap_normalization(scene.pointmaps, scene.depth > 0, 0.02)
    started = time.perf_counter()
    output = pipe(
        conditions.images, conditions.observed, conditions.num_frames, prompt=scene.caption,
        negative_prompt="",  # the tiny model's training (and RESULTS_demo.md) unconditional; its tokenizer cannot read Wan's
        num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
        generator=torch.Generator().manual_seed(seed), pointmap_centre=centre.tolist(), pointmap_scale=float(scale),
        postopt_kwargs={"iterations": settings.postopt_iterations}, progress=False,
    )
    seconds = time.perf_counter() - started
    if folder is not None:  # written like scripts/sample.py: complete, then renamed over a previous output
        temporary = prepare_output_folder(folder)
        write_outputs(temporary, output, conditions, {"task": task, "seed": seed, "prompt": scene.caption,
                                                   "steps": settings.steps, "cfg": settings.guidance_scale,
                                                   "pointmap_centre": centre.tolist(), "pointmap_scale": float(scale)},
                      timings={"sample_and_postopt": seconds})
        publish(temporary, folder)
    scored = [0] if task == "single" else list(range(settings.num_frames))
    metrics = score(output, scene, scored)
    return scene, output, conditions, metrics, (centre, scale), seconds


def load_demo_pipeline(checkpoint: Path, settings: DemoSettings):
    from one4d.pipeline import load_pipeline

    return load_pipeline(preset="demo", components=str(checkpoint / "base"), state=str(checkpoint / "one4d"),
                         scheduler="unipc", flow_shift=settings.flow_shift)


def run_demo(out: str | Path = "outputs/demo", checkpoint: str | Path = CHECKPOINT, settings: DemoSettings | None = None,
             log=print) -> dict:
    """The whole demo; returns the summary written to ``<out>/summary.json``."""
    settings = settings or DemoSettings()
    checkpoint, out = Path(checkpoint), Path(out)
    started = time.perf_counter()
    from one4d.pipeline.outputs import discard, prepare_output_folder, publish

    verify_checkpoint(checkpoint)
    temporary = prepare_output_folder(out)  # an unwritable out is one line before the model loads
    try:
        summary = _run_demo_into(temporary, checkpoint, settings, log, started)
        publish(temporary, out)  # a stopped demo never leaves a folder that looks complete
    except BaseException:
        discard(temporary)
        raise
    return summary


def _run_demo_into(out: Path, checkpoint: Path, settings: DemoSettings, log, started: float) -> dict:
    """Every task and seed of the demo, written into ``out`` (the temporary folder :func:`run_demo` publishes)."""
    torch.manual_seed(0)
    pipe = load_demo_pipeline(checkpoint, settings)
    results, sheets = {}, []
    for task in settings.tasks:
        rows = []
        for index, seed in enumerate(settings.seeds):
            folder = out / task if index == 0 else None
            scene, output, conditions, metrics, norm, seconds = run_task(pipe, task, seed, settings, folder)
            rows.append(metrics)
            log(f"{task:6s} seed {seed}: Abs Rel {metrics['abs_rel']:.3f} (constant depth {metrics['baseline_abs_rel']:.3f}), "
                f"ATE {metrics['ate']:.4f} (static camera {metrics['static_ate']:.4f}) [{seconds:.1f} s]")
            if index == 0:
                sheets.append(contact_sheet(task, scene, output, conditions.observed, norm))
        results[task] = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
        results[task]["seeds"] = list(settings.seeds)
        results[task]["scored_frames"] = "observed frame 0 only" if task == "single" else "all frames"
    write_png(out / "contact_sheet.png", np.concatenate(sheets, axis=0))
    table = metric_table(results)
    (out / "metrics.md").write_text(table)
    summary = {
        "tasks": results,
        "checkpoint": str(checkpoint),
        "settings": {key: (list(value) if isinstance(value, tuple) else value) for key, value in vars(settings).items()},
        "notes": {
            "abs_rel": "per-sequence scale & shift (LAD) alignment, valid 0 < gt < 70, mean over seeds",
            "baseline_abs_rel": "a constant-depth plane at the scene's median true depth, no alignment",
            "ate": "RMSE of camera centres after Sim(3) alignment; static_ate: a camera that never moves",
            "single": "scored on its observed frame only; its later frames are a generated future",
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(table)
    return summary


def view_command(folder: Path) -> str:
    """The command that opens the 4D viewer on a sampler output folder, working as printed in a fresh shell."""
    from one4d.runtime import python_command

    return f"{python_command()} scripts/view.py {folder}"


def main(argv: list[str] | None = None) -> int:
    """``scripts/demo.py [--out outputs/demo] [--checkpoint data/checkpoints/tiny] [--threads N]``: exit 2 with one line on bad input."""
    import sys

    from one4d.runtime import THREADS_HELP, ArgumentParser, configure_cpu_threads

    parser = ArgumentParser(description="One4D end to end on held-out synthetic scenes with the shipped tiny model.")
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        configure_cpu_threads(args.threads)  # one4d.runtime: 1 on a shared 2-core CPU, where the tiny model runs fastest
        summary = run_demo(args.out, args.checkpoint)
    except ValueError as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"wrote {out}/ (contact_sheet.png, metrics.md, summary.json, {', '.join(summary['tasks'])}/) "
          f"in {time.perf_counter() - started:.0f} s")
    print(f"open the 4D viewer: {view_command(out / 'full')}" + ("   (or: make view)" if out == Path("outputs/demo") else ""))
    return 0
