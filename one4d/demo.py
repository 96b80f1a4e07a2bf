"""``make demo``: every One4D task end to end with the shipped tiny model, scored against ground truth AND controls.

For each task (single image, sparse frames, full video) and each held-out synthetic scene (seeds never used in
training, see ``one4d.training.tiny_model``): fit the observed frames with the sampler's input rule, sample RGB +
pointmaps through :class:`one4d.pipeline.One4DPipeline`, post-optimise cameras and depth, then score depth (Abs
Rel, delta < 1.25 after the protocol's per-sequence scale & shift) and camera ATE (Sim(3)-aligned) against the
scene's exact geometry, and RGB PSNR against the true frames.

A model that ignored its input could still beat weak references, so every score sits beside controls scored by
the same functions (:mod:`one4d.demo_controls`): the **wrong-input control** (the same model, the same noise, fed
the NEXT held-out scene's frames and caption, scored against the true scene), the **no-input prior** (the mean
depth map and mean camera path of training scenes), the **VAE ceiling** (the VAE's own encode -> decode of the
true RGB and pointmaps, then the same post-optimisation), a flat mean-colour image (the RGB floor), a constant
plane at the true median depth and a static camera. The single-image task is scored on its observed frame only
(its later frames are a generated future), plus :func:`one4d.demo_controls.motion` of its generated frames.

Writes ``outputs/demo/``: the sampler's output folder per task (first seed), ``contact_sheet.png``,
``metrics.md`` and ``summary.json`` (every control labelled, mean / std / min / max over the scenes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from one4d.demo_controls import PRIOR_SCENES

CHECKPOINT = Path("data/checkpoints/tiny")
MANIFEST = "MANIFEST.json"  # sha256 of every shipped weight and config file, written by make tiny-model
REBUILD = "make tiny-model"
TASKS = ("single", "sparse", "full")
DEMO_SEEDS = tuple(range(1_000_000, 1_000_010))  # 10 held out: training used seeds 0 .. num_clips - 1
LAST_SEED = 2**32 - 1  # the largest seed the command line takes (the scene generator's own limit is higher)


@dataclass
class DemoSettings:
    """What the demo runs; the defaults are the shipped model's training size and sampler settings."""

    num_frames: int = 9
    height: int = 48
    width: int = 64
    # Chosen on validation scenes (seeds 1,000,100-1,000,109, not the demo's; benchmarks/RESULTS_tiny_model.md
    # section 13): for the model trained at sigma shift 30, 4 UniPC steps at shift 30 gave full-video depth Abs Rel
    # 0.094 and ATE 0.066 against 0.109 / 0.139 at the earlier 25 steps and shift 5 (a few steps stay near the
    # conditional mean, section 8); for the shipped shift-100 model, shift 30 or 100 and 4 or 10 steps are within
    # 0.002 in depth. CFG 1: one pass per step; its text and image encoders are random.
    steps: int = 4
    guidance_scale: float = 1.0
    flow_shift: float = 30.0
    sparse_frames: int = 3  # first, middle, last
    seeds: tuple = DEMO_SEEDS
    tasks: tuple = TASKS
    postopt_iterations: int = 15
    wrong_input_tasks: tuple = TASKS  # tasks that also run the wrong-input control (one more model call per scene)
    prior_scenes: int = PRIOR_SCENES


def checkpoint_settings(checkpoint: str | Path) -> DemoSettings:
    """DemoSettings with the clip size and sampler settings of the checkpoint's ``sampling.json`` (defaults without one),
    so that a retrained tiny model is demonstrated at the size and with the steps it was made for."""
    from one4d.sampling_file import read_sampling_file

    record = read_sampling_file(checkpoint) or {"trained_at": {}, "sampler": {}}
    sampler = record["sampler"]
    given = {**record["trained_at"], "steps": sampler.get("steps"), "guidance_scale": sampler.get("cfg"),
             "flow_shift": sampler.get("shift")}
    return replace(DemoSettings(), **{key: value for key, value in given.items() if value is not None})


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

# What each scored entry is; the same words label metrics.md and summary.json.
ENTRIES = {
    "model": "the model fed the scene's own frames and caption",
    "wrong_input": "the same model and noise fed the NEXT held-out scene's frames and caption, scored against the true scene",
    "no_input_prior": "no model, no input: the per-pixel mean depth map and the mean camera path of {prior} training scenes "
                      "(seeds 0-{last})",
    "vae_ceiling": "the VAE's encode -> decode of the TRUE RGB and TRUE normalised pointmaps, then the same post-optimisation",
    "constant_plane": "a constant-depth plane at the scene's true median depth (an oracle constant, no alignment)",
    "static_camera": "a camera that never moves",
    "flat_colour": "each true frame filled with its own mean colour (the RGB floor)",
    "true_clip": "the true frames (the motion a real clip has)",
}


def true_camera_path(scene) -> torch.Tensor:
    """(F, 4, 4) float64 camera-to-world poses of a scene (frame 0 is the identity)."""
    from one4d.geometry import invert_pose

    return invert_pose(scene.world_to_camera.double())


def score_geometry(depth, camera_to_world, scene, scored_frames: list[int]) -> dict:
    """Depth (F, H, W) on ``scored_frames`` and cameras (F, 4, 4) of any entry against its scene: the one scoring rule.

    Depth: per-sequence LAD scale & shift (``protocol="exact"``); ``scale``/``shift`` are that fit (for pictures).
    ATE: camera centres over all frames after Sim(3) alignment.
    """
    from one4d.eval import depth_metrics, pose_metrics

    pred_depth = torch.as_tensor(np.asarray(depth))[scored_frames]  # (S, H, W)
    fit = depth_metrics(pred_depth, scene.depth[scored_frames], align="scale&shift", protocol="exact")
    pose = pose_metrics(torch.as_tensor(camera_to_world).double(), true_camera_path(scene))
    return {"abs_rel": fit["abs_rel"], "delta_1_25": fit["delta_1_25"], "ate": pose["ate"],
            "scale": fit["scale"], "shift": fit["shift"]}


def static_camera_ate(gt_cam_to_world: torch.Tensor) -> float:
    """ATE of a camera that never moves: after the best Sim(3) alignment it sits at the centroid of the true centres."""
    centres = gt_cam_to_world[:, :3, 3].double()  # (F, 3)
    return float((centres - centres.mean(0)).pow(2).sum(-1).mean().sqrt())


def reference_scores(scene, scored_frames: list[int]) -> dict:
    """The weak references: a constant plane at the true median depth (no alignment) and a static camera."""
    from one4d.eval import depth_metrics

    gt_depth = scene.depth[scored_frames]  # (S, H, W)
    constant = torch.full_like(gt_depth, float(gt_depth[gt_depth > 0].median()))
    plane = depth_metrics(constant, gt_depth, align="none", protocol="exact")
    return {"baseline_abs_rel": plane["abs_rel"], "baseline_delta_1_25": plane["delta_1_25"],
            "static_ate": static_camera_ate(true_camera_path(scene))}


def score(output, scene, scored_frames: list[int]) -> dict:
    """One sample against its scene: geometry, RGB PSNR (all frames), motion of the generated RGB, and the weak references."""
    from one4d.demo_controls import motion, psnr

    rgb = torch.as_tensor(np.asarray(output.rgb[0]))  # (F, H, W, 3) in [0, 1]
    return {**score_geometry(output.depth[0], output.cameras[0].camera_to_world, scene, scored_frames),
            "rgb_psnr": psnr(rgb, scene.rgb), "motion": motion(rgb), **reference_scores(scene, scored_frames)}


@dataclass
class Ceiling:
    """The VAE ceiling of one scene: its reconstruction of the true RGB and pointmaps, post-optimised like a sample."""

    rgb: torch.Tensor  # (F, H, W, 3) in [0, 1]
    xyz_l1: float  # mean |decoded - true| of the normalised pointmaps, on [-1, 1]
    depth: torch.Tensor  # (F, H, W)
    camera_to_world: torch.Tensor  # (F, 4, 4)


def vae_ceiling(pipe, scene, norm, settings: DemoSettings) -> Ceiling:
    """Encode -> decode the scene's true RGB and true normalised pointmaps with the pipeline's VAE, then post-optimise
    the decoded pointmaps exactly as the pipeline post-optimises a sample (``One4DPipeline.recover_cameras``)."""
    from one4d.demo_controls import vae_roundtrip
    from one4d.geometry import denormalize_pointmaps, normalize_pointmaps

    rgb = (vae_roundtrip(pipe.vae, scene.rgb * 2 - 1) + 1) / 2  # (F, H, W, 3) in [0, 1]
    true_xyz = normalize_pointmaps(scene.pointmaps, *norm)  # (F, H, W, 3) in [-1, 1]
    decoded = vae_roundtrip(pipe.vae, true_xyz)
    pointmaps = denormalize_pointmaps(decoded, *norm)[None]  # (1, F, H, W, 3)
    cameras, _, depth = pipe.recover_cameras(pointmaps, {"iterations": settings.postopt_iterations})
    return Ceiling(rgb, float((decoded - true_xyz).abs().mean()), depth[0], cameras[0].camera_to_world)


# ----------------------------------------------------------------------------- pictures

ZOOM = 2  # pixels per model pixel on the sheet
LABEL_WIDTH = 150
BAR_WIDTH = 84  # the colour scale beside each depth row


def depth_colours(depth, near: float, far: float) -> np.ndarray:
    """Depth (F, H, W) -> (F, H, W, 3) uint8: inverse depth mapped linearly from far (blue) to near (red); 0 is black."""
    from one4d.pipeline.outputs import turbo

    depth = np.asarray(depth, dtype=np.float64)
    valid = depth > 0
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    scaled = (inverse - 1.0 / far) / max(1.0 / near - 1.0 / far, 1e-12)
    return np.where(valid[..., None], turbo(scaled), 0).astype(np.uint8)


def colour_bar(height: int, near: float, far: float, unit: str = "m") -> np.ndarray:
    """(height, BAR_WIDTH, 3) uint8: the colour scale of :func:`depth_colours`, near at the top, with three depths."""
    from PIL import Image, ImageDraw

    from one4d.pipeline.outputs import turbo

    ramp = turbo(np.linspace(1.0, 0.0, height))  # (height, 3): top = near
    image = np.full((height, BAR_WIDTH, 3), 255, dtype=np.uint8)
    image[:, 2:12] = ramp[:, None]
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    middle = 1.0 / (0.5 / near + 0.5 / far)  # the depth at the ramp's middle (inverse depth is linear)
    for row, value in ((0, near), (height // 2 - 6, middle), (height - 12, far)):
        draw.text((15, row), f"{value:.3g} {unit}".rstrip(), fill="black")
    return np.asarray(canvas)


def sheet_block(rows: list[tuple], height: int) -> np.ndarray:
    """Rows of (label, frames (F, H, W, 3) uint8, (near, far[, unit]) or None) -> one labelled block with colour scales."""
    from PIL import Image, ImageDraw

    zoomed = height * ZOOM
    strips = []
    for label, frames, depth_range in rows:
        strip = np.concatenate(list(frames), axis=1).repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)  # (zoomed, F * W * ZOOM, 3)
        title = Image.new("RGB", (LABEL_WIDTH, zoomed), "white")
        ImageDraw.Draw(title).multiline_text((4, zoomed // 2 - 12), label, fill="black")
        bar = colour_bar(zoomed, *depth_range) if depth_range else np.full((zoomed, BAR_WIDTH, 3), 255, np.uint8)
        strips.append(np.concatenate([np.asarray(title), strip, bar], axis=1))
    return np.concatenate(strips, axis=0)


def depth_range(scene) -> tuple[float, float]:
    """(near, far): the 2nd and 98th percentile of the scene's valid true depth, the range every depth panel shares."""
    valid = scene.depth[scene.depth > 0].double()
    return float(valid.quantile(0.02)), float(valid.quantile(0.98))


def aligned(depth, fit: dict) -> np.ndarray:
    """Depth (F, H, W) as the metric saw it: times the fit's scale plus its shift."""
    return fit["scale"] * np.asarray(depth, dtype=np.float64) + fit["shift"]


def task_rows(task: str, scene, output, observed: list[int], norm, fit: dict) -> list[tuple]:
    """The sheet rows of one task's first scene: input, generated and true RGB, depth and XYZ."""
    from one4d.geometry import normalize_pointmaps
    from one4d.pipeline.outputs import pointmap_colours, to_uint8

    near, far = depth_range(scene)
    true_rgb = to_uint8(scene.rgb.numpy())  # (F, H, W, 3)
    given = np.full_like(true_rgb, 128)
    given[observed] = true_rgb[observed]  # unobserved frames are mid-grey, as UMC feeds them
    true_xyz = normalize_pointmaps(scene.pointmaps, *norm).numpy()
    return [
        (f"{task}: input", given, None),
        (f"{task}: generated RGB", to_uint8(np.asarray(output.rgb[0])), None),
        (f"{task}: true RGB", true_rgb, None),
        (f"{task}: depth\n(aligned as scored)", depth_colours(aligned(output.depth[0], fit), near, far), (near, far)),
        (f"{task}: true depth", depth_colours(scene.depth.numpy(), near, far), (near, far)),
        (f"{task}: XYZ", pointmap_colours(np.asarray(output.normalized_pointmaps[0])), None),
        (f"{task}: true XYZ", pointmap_colours(true_xyz), None),
    ]


def control_rows(task: str, scene, wrong, ceiling: Ceiling, prior, fits: dict) -> list[tuple]:
    """The sheet rows of the controls on the same scene: wrong input, VAE ceiling and no-input prior."""
    from one4d.pipeline.outputs import to_uint8

    near, far = depth_range(scene)
    wrong_scene, wrong_output = wrong
    rows = []
    if wrong_output is not None:
        rows += [
            (f"{task} wrong input:\nframes of seed\n{fits['wrong_seed']}", to_uint8(wrong_scene.rgb.numpy()), None),
            (f"{task} wrong input:\ngenerated RGB", to_uint8(np.asarray(wrong_output.rgb[0])), None),
            (f"{task} wrong input:\ndepth vs TRUE scene", depth_colours(aligned(wrong_output.depth[0], fits["wrong_input"]), near, far),
             (near, far)),
        ]
    return rows + [
        ("VAE ceiling: RGB", to_uint8(ceiling.rgb.numpy()), None),
        ("VAE ceiling: depth", depth_colours(aligned(ceiling.depth, fits["vae_ceiling"]), near, far), (near, far)),
        ("no-input prior:\nmean training depth", depth_colours(aligned(prior.depth, fits["no_input_prior"]), near, far), (near, far)),
        ("true depth", depth_colours(scene.depth.numpy(), near, far), (near, far)),
    ]


def write_png(path: Path, image: np.ndarray) -> None:
    import imageio.v2 as imageio

    imageio.imwrite(path, image)


# ----------------------------------------------------------------------------- the table

STAT_KEYS = ("abs_rel", "delta_1_25", "ate", "rgb_psnr", "xyz_l1", "motion")


def spread(values: list[float]) -> dict:
    """mean, std (population), min, max and count of per-scene values."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": float(array.mean()), "std": float(array.std()), "min": float(array.min()), "max": float(array.max()),
            "n": int(array.size)}


def summarise(rows: dict, failed: dict) -> dict:
    """Per entry: {metric: spread} over scenes, and how many scenes it could not score (post-optimisation diverged)."""
    summary = {}
    for entry, records in rows.items():
        keys = [key for key in STAT_KEYS if records and key in records[0]]
        summary[entry] = {key: spread([record[key] for record in records]) for key in keys}
        summary[entry]["failed_scenes"] = failed.get(entry, 0)
    return summary


def cell(results: dict, entry: str, key: str, digits: int = 3) -> str:
    """'mean ± std' of one entry's metric, '-' when the entry was not run for this task."""
    stats = results.get(entry, {}).get(key)
    if stats is None:
        return "-"
    failed = results[entry].get("failed_scenes", 0)
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}" + (f" ({failed} failed)" if failed else "")


def issue_checks(results: dict) -> list[dict]:
    """Issue 12's criteria for the tiny model, each with the measured value and whether it holds (means over scenes)."""
    def mean(task, entry, key):  # nan when no scene could be scored: every comparison with it is then False
        return results[task].get(entry, {}).get(key, {}).get("mean", float("nan"))

    checks = []

    def check(name, measured, target, holds):
        checks.append({"check": name, "measured": measured, "target": target, "holds": bool(holds)})

    if "full" in results:
        gap = mean("full", "vae_ceiling", "rgb_psnr") - mean("full", "flat_colour", "rgb_psnr")
        check("VAE: RGB PSNR above the flat mean-colour image", f"{gap:+.2f} dB", ">= 8 dB", gap >= 8)
        value = mean("full", "vae_ceiling", "abs_rel")
        check("VAE: pointmap reconstruction depth Abs Rel (full clip)", f"{value:.3f}", "<= 0.02", value <= 0.02)
        gap = mean("full", "model", "rgb_psnr") - mean("full", "vae_ceiling", "rgb_psnr")
        check("full: generated RGB PSNR minus the VAE's own", f"{gap:+.2f} dB", ">= -1.5 dB", gap >= -1.5)
        ratio = mean("full", "model", "abs_rel") / mean("full", "no_input_prior", "abs_rel")
        check("full: model Abs Rel / no-input prior's", f"{ratio:.2f}", "<= 0.5", ratio <= 0.5)
        if "ate" in results["full"].get("wrong_input", {}):
            ratio = mean("full", "wrong_input", "abs_rel") / mean("full", "model", "abs_rel")
            check("full: wrong-input Abs Rel / model's", f"{ratio:.2f}", ">= 2", ratio >= 2)
        model, prior = mean("full", "model", "ate"), mean("full", "no_input_prior", "ate")
        check("full: model ATE vs the no-input mean path's", f"{model:.4f} vs {prior:.4f}", "below", model < prior)
    if "sparse" in results:
        ratio = mean("sparse", "model", "abs_rel") / mean("sparse", "no_input_prior", "abs_rel")
        check("sparse: model Abs Rel / no-input prior's", f"{ratio:.2f}", "<= 0.7", ratio <= 0.7)
        if "ate" in results["sparse"].get("wrong_input", {}):
            ratio = mean("sparse", "wrong_input", "abs_rel") / mean("sparse", "model", "abs_rel")
            check("sparse: wrong-input Abs Rel / model's (clearly worse, read as)", f"{ratio:.2f}", ">= 1.5", ratio >= 1.5)
    if "single" in results:
        model, prior = mean("single", "model", "abs_rel"), mean("single", "no_input_prior", "abs_rel")
        check("single: observed frame's Abs Rel vs the no-input prior's", f"{model:.3f} vs {prior:.3f}", "below", model < prior)
        ratio = mean("single", "model", "motion") / max(mean("single", "true_clip", "motion"), 1e-12)
        check("single: generated motion / true clip's (frames move, read as)", f"{ratio:.2f}", ">= 0.5", ratio >= 0.5)
    return checks


def metric_table(results: dict, checks: list[dict], scenes: int, prior_scenes: int) -> str:
    """metrics.md: one table per measure (rows: tasks, columns: model and controls, mean ± std over scenes), the checks."""
    def table(title, columns, digits=3):
        lines = [f"**{title}**", "", "| task | " + " | ".join(name for name, _ in columns) + " |",
                 "|---|" + "---|" * len(columns)]
        for task, row in results.items():
            values = [cell(row, entry, key, digits) for _, (entry, key) in columns]
            lines.append(f"| {task} | " + " | ".join(values) + " |")
        return lines + [""]

    lines = [f"Mean ± std over {scenes} held-out scenes (min / max per scene in summary.json). "
             "Single image: depth on its observed frame 0 only.", ""]
    lines += table("Depth Abs Rel (lower is better)", [
        ("model", ("model", "abs_rel")), ("wrong input", ("wrong_input", "abs_rel")),
        ("no-input prior", ("no_input_prior", "abs_rel")), ("VAE ceiling", ("vae_ceiling", "abs_rel")),
        ("constant depth", ("constant_plane", "abs_rel"))])
    lines += table("Depth delta < 1.25 (higher is better)", [
        ("model", ("model", "delta_1_25")), ("wrong input", ("wrong_input", "delta_1_25")),
        ("no-input prior", ("no_input_prior", "delta_1_25")), ("VAE ceiling", ("vae_ceiling", "delta_1_25")),
        ("constant depth", ("constant_plane", "delta_1_25"))])
    lines += table("Camera ATE, all frames (lower is better)", [
        ("model", ("model", "ate")), ("wrong input", ("wrong_input", "ate")),
        ("no-input mean path", ("no_input_prior", "ate")), ("VAE ceiling", ("vae_ceiling", "ate")),
        ("static camera", ("static_camera", "ate"))], digits=4)
    lines += table("RGB PSNR in dB, all frames vs the true frames (higher is better)", [
        ("model", ("model", "rgb_psnr")), ("wrong input", ("wrong_input", "rgb_psnr")),
        ("VAE reconstruction", ("vae_ceiling", "rgb_psnr")), ("flat mean colour", ("flat_colour", "rgb_psnr")),
        ("VAE XYZ L1 on [-1, 1]", ("vae_ceiling", "xyz_l1"))], digits=2)
    lines += table("Motion: mean |frame t - frame 0| over t >= 1, RGB in [0, 1] (0 = a frozen first frame)", [
        ("model", ("model", "motion")), ("wrong input", ("wrong_input", "motion")), ("true clip", ("true_clip", "motion"))])
    lines += ["**Issue 12's criteria (means over scenes)**", "", "| check | measured | target | holds |", "|---|---|---|---|"]
    lines += [f"| {c['check']} | {c['measured']} | {c['target']} | {'yes' if c['holds'] else 'NO'} |" for c in checks]
    lines += ["", "What each column is:", ""]
    lines += [f"- **{entry}**: {text.format(prior=prior_scenes, last=prior_scenes - 1)}" for entry, text in ENTRIES.items()]
    lines += ["- Depth: per-sequence LAD scale & shift, valid 0 < gt < 70 (`depth_metrics(protocol=\"exact\")`); "
              "ATE: camera centres after Sim(3) alignment (`pose_metrics`)."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- running


@functools.lru_cache(maxsize=32)
def held_out_scene(seed: int, num_frames: int, height: int, width: int):
    """The rendered scene of a seed (cached: the wrong-input control renders each scene a second time otherwise)."""
    from one4d.data.synthetic import render_scene

    return render_scene(seed, num_frames, height, width)


def run_task(pipe, task: str, seed: int, settings: DemoSettings, folder: Path | None, input_seed: int | None = None):
    """Sample one held-out scene for one task; write the sampler's outputs into ``folder`` (if given).

    ``input_seed``: feed another scene's frames and caption instead (the wrong-input control); the noise, the
    pointmap normalisation and the scoring stay the true scene's, so the input is the only difference.
    """
    from one4d.geometry import pointmap_normalization
    from one4d.pipeline.inputs import InputFrames, prepare_conditions
    from one4d.pipeline.outputs import prepare_output_folder, publish, write_outputs

    size = (settings.num_frames, settings.height, settings.width)
    scene = held_out_scene(seed, *size)
    source_scene = scene if input_seed is None else held_out_scene(input_seed, *size)
    frames = (source_scene.rgb * 255).round().to(torch.uint8).numpy()  # (F, H, W, 3)
    source = InputFrames(frames[:1] if task == "single" else frames, Path(f"synthetic_seed_{input_seed or seed}"), scene.fps)
    sparsity = settings.sparse_frames / settings.num_frames
    conditions = prepare_conditions(task, source, num_frames=settings.num_frames, height=settings.height,
                                    width=settings.width, sparsity=sparsity)
    # The scene's own normalisation turns the model's normalised pointmaps back into metres.
    centre, scale = pointmap_normalization(scene.pointmaps, scene.depth > 0, 0.02)
    started = time.perf_counter()
    output = pipe(
        conditions.images, conditions.observed, conditions.num_frames, prompt=source_scene.caption,
        negative_prompt="",  # the tiny model's training (and RESULTS_demo.md) unconditional; its tokenizer cannot read Wan's
        num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
        generator=torch.Generator().manual_seed(seed), pointmap_centre=centre.tolist(), pointmap_scale=float(scale),
        postopt_kwargs={"iterations": settings.postopt_iterations}, progress=False,
    )
    seconds = time.perf_counter() - started
    if folder is not None:  # written like scripts/sample.py: complete, then renamed over a previous output
        temporary = prepare_output_folder(folder)
        write_outputs(temporary, output, conditions, {"task": task, "seed": seed, "prompt": source_scene.caption,
                                                   "steps": settings.steps, "cfg": settings.guidance_scale,
                                                   "pointmap_centre": centre.tolist(), "pointmap_scale": float(scale)},
                      timings={"sample_and_postopt": seconds})
        publish(temporary, folder)
    metrics = score(output, scene, scored_frames(task, settings))
    return scene, output, conditions, metrics, (centre, scale), seconds


def scored_frames(task: str, settings: DemoSettings) -> list[int]:
    """Depth is scored on every frame, except for the single-image task: its observed frame 0 only."""
    return [0] if task == "single" else list(range(settings.num_frames))


def held_out_seeds(first: int, count: int) -> tuple:
    """``count`` consecutive held-out seeds from ``first``; a seed outside the held-out range (below it: a training
    scene) or a count below 1 is one line (ValueError)."""
    if count < 1:
        raise ValueError(f"--scenes must be at least 1, got {count}")
    if first < DEMO_SEEDS[0]:
        raise ValueError(f"--first-seed {first} is below {DEMO_SEEDS[0]:,}: seeds below it are the training scenes")
    if first + count > LAST_SEED + 1:
        raise ValueError(f"--first-seed {first} with --scenes {count} goes past the last seed, {LAST_SEED}")
    return tuple(range(first, first + count))


def wrong_input_seed(seeds: tuple, index: int) -> int:
    """The scene whose frames the wrong-input control feeds: the next held-out seed (the one after, with a single seed)."""
    other = seeds[(index + 1) % len(seeds)]
    return other if other != seeds[index] else seeds[index] + 1


def checkpoint_preset(checkpoint: str | Path) -> str:
    """The base preset a tiny-model folder's ``sampling.json`` names (``demo`` without one): the demo, the ablation
    and the benchmarks load the checkpoint's own base shapes, so a build of another preset is measured as it is."""
    from one4d.sampling_file import read_sampling_file

    record = read_sampling_file(checkpoint) or {"model": {}}
    return record["model"].get("preset") or "demo"


def load_demo_pipeline(checkpoint: Path, settings: DemoSettings, state: str | Path | None = None):
    """The checkpoint's pipeline (its ``one4d/`` state unless ``state`` is given), with its preset."""
    from one4d.pipeline import load_pipeline

    return load_pipeline(preset=checkpoint_preset(checkpoint), components=str(Path(checkpoint) / "base"),
                         state=str(state or Path(checkpoint) / "one4d"), scheduler="unipc", flow_shift=settings.flow_shift)


def run_demo(out: str | Path = "outputs/demo", checkpoint: str | Path = CHECKPOINT, settings: DemoSettings | None = None,
             log=print) -> dict:
    """The whole demo; returns the summary written to ``<out>/summary.json``. ``settings``: the checkpoint's by default."""
    checkpoint, out = Path(checkpoint), Path(out)
    started = time.perf_counter()
    from one4d.pipeline.outputs import discard, prepare_output_folder, publish

    verify_checkpoint(checkpoint)
    settings = settings or checkpoint_settings(checkpoint)
    temporary = prepare_output_folder(out)  # an unwritable out is one line before the model loads
    try:
        summary = _run_demo_into(temporary, checkpoint, settings, log, started)
        publish(temporary, out)  # a stopped demo never leaves a folder that looks complete
    except BaseException:
        discard(temporary)
        raise
    return summary


def score_scene(pipe, task: str, index: int, settings: DemoSettings, prior, ceilings: dict, folder: Path | None):
    """One scene of one task: ({entry: metrics} for the model and every control, [entries that could not be scored],
    what the contact sheet needs); the model's own failure returns (None, ["model"], None).

    ``ceilings`` caches each scene's VAE ceiling (None where its post-optimisation diverged): one per scene, scored per task.
    """
    from one4d.demo_controls import flat_colour, motion, psnr
    from one4d.postopt.recover import PostoptDiverged

    seed, scored = settings.seeds[index], scored_frames(task, settings)
    try:
        scene, output, conditions, metrics, norm, seconds = run_task(pipe, task, seed, settings, folder)
    except PostoptDiverged:  # the model's pointmaps are no camera's view: counted, not scored
        return None, ["model"], None
    records = {
        "model": metrics,
        "constant_plane": {"abs_rel": metrics["baseline_abs_rel"], "delta_1_25": metrics["baseline_delta_1_25"]},
        "static_camera": {"ate": metrics["static_ate"]},
        "flat_colour": {"rgb_psnr": psnr(flat_colour(scene.rgb), scene.rgb)},
        "true_clip": {"motion": motion(scene.rgb)},
        "no_input_prior": score_geometry(prior.depth, prior.camera_to_world, scene, scored),
    }
    failed = []
    if seed not in ceilings:
        try:
            ceilings[seed] = vae_ceiling(pipe, scene, norm, settings)
        except PostoptDiverged:
            ceilings[seed] = None
    ceiling = ceilings[seed]
    if ceiling is None:
        failed.append("vae_ceiling")
    else:
        records["vae_ceiling"] = {**score_geometry(ceiling.depth, ceiling.camera_to_world, scene, scored),
                                  "rgb_psnr": psnr(ceiling.rgb, scene.rgb), "xyz_l1": ceiling.xyz_l1}
    wrong_seed, wrong = wrong_input_seed(settings.seeds, index), (None, None)
    if task in settings.wrong_input_tasks:
        try:
            _, wrong_output, _, records["wrong_input"], _, _ = run_task(pipe, task, seed, settings, None, wrong_seed)
            wrong = (held_out_scene(wrong_seed, settings.num_frames, settings.height, settings.width), wrong_output)
        except PostoptDiverged:
            failed.append("wrong_input")
    sheet = {"scene": scene, "output": output, "observed": conditions.observed, "norm": norm, "ceiling": ceiling,
             "wrong": wrong, "fits": {**records, "wrong_seed": wrong_seed}, "seconds": seconds}
    return records, failed, sheet


def _run_demo_into(out: Path, checkpoint: Path, settings: DemoSettings, log, started: float) -> dict:
    """Every task, seed and control of the demo, written into ``out`` (the temporary folder :func:`run_demo` publishes)."""
    from one4d.demo_controls import training_prior

    torch.manual_seed(0)
    pipe = load_demo_pipeline(checkpoint, settings)
    prior = training_prior(settings.num_frames, settings.height, settings.width, settings.prior_scenes)
    control_task = "full" if "full" in settings.tasks else settings.tasks[-1]  # the sheet shows its controls
    ceilings, results, blocks = {}, {}, []
    for task in settings.tasks:
        rows, failed = {entry: [] for entry in ENTRIES}, {}
        for index, seed in enumerate(settings.seeds):
            folder = out / task if not rows["model"] else None  # the sampler's outputs of the task's first scored scene
            records, missing, sheet = score_scene(pipe, task, index, settings, prior, ceilings, folder)
            for entry in missing:
                failed[entry] = failed.get(entry, 0) + 1
            if records is None:
                log(f"{task:6s} seed {seed}: the model's post-optimisation diverged; scene not scored")
                continue
            for entry, record in records.items():
                rows[entry].append(record)
            wrong_abs_rel = records["wrong_input"]["abs_rel"] if "wrong_input" in records else float("nan")
            log(f"{task:6s} seed {seed}: Abs Rel model {records['model']['abs_rel']:.3f}, wrong input {wrong_abs_rel:.3f}, "
                f"no-input prior {records['no_input_prior']['abs_rel']:.3f}; ATE model {records['model']['ate']:.4f}, "
                f"prior {records['no_input_prior']['ate']:.4f} [{sheet['seconds']:.1f} s per sample]")
            if len(rows["model"]) == 1:  # the sheet shows each task's first scored scene
                blocks.append(task_rows(task, sheet["scene"], sheet["output"], sheet["observed"], sheet["norm"], records["model"]))
                if task == control_task and sheet["ceiling"] is not None:
                    blocks.append(control_rows(task, sheet["scene"], sheet["wrong"], sheet["ceiling"], prior, sheet["fits"]))
        rows = {entry: records for entry, records in rows.items() if records or failed.get(entry)}
        results[task] = {"scored_frames": "observed frame 0 only" if task == "single" else "all frames",
                         "seeds": list(settings.seeds), **summarise(rows, failed)}
    write_png(out / "contact_sheet.png", sheet_block([row for block in blocks for row in block], settings.height))
    checks = issue_checks(results)
    table = metric_table(results, checks, len(settings.seeds), settings.prior_scenes)
    (out / "metrics.md").write_text(table)
    summary = {
        "tasks": results,
        "checks": checks,
        "entries": {entry: text.format(prior=settings.prior_scenes, last=settings.prior_scenes - 1) for entry, text in ENTRIES.items()},
        "checkpoint": str(checkpoint),
        "settings": {key: (list(value) if isinstance(value, tuple) else value) for key, value in vars(settings).items()},
        "notes": {
            "abs_rel": "per-sequence scale & shift (LAD) alignment, valid 0 < gt < 70; mean/std/min/max over seeds",
            "ate": "RMSE of camera centres over all frames after Sim(3) alignment",
            "rgb_psnr": "all frames against the true frames, RGB in [0, 1]",
            "motion": "mean |frame t - frame 0| over t >= 1, RGB in [0, 1]; 0 for a frozen copy of the first frame",
            "single": "depth scored on its observed frame only; its later frames are a generated future",
            "failed_scenes": "scenes whose post-optimisation diverged (not in the statistics); a scene the model fails is left out of every control's statistics too, so all entries are scored on the same scenes",
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
    """``scripts/demo.py [--out outputs/demo] [--checkpoint data/checkpoints/tiny] [--threads N] [--scenes 10]
    [--first-seed 1000000]``: exit 2 with one line on bad input."""
    import sys

    from one4d.runtime import THREADS_HELP, ArgumentParser, configure_cpu_threads

    parser = ArgumentParser(description="One4D end to end on held-out synthetic scenes with the shipped tiny model.")
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    parser.add_argument("--scenes", type=int, default=len(DEMO_SEEDS),
                        help=f"held-out scenes to score (default {len(DEMO_SEEDS)}: the numbers the README quotes)")
    parser.add_argument("--first-seed", type=int, default=DEMO_SEEDS[0],
                        help=f"first held-out seed (default {DEMO_SEEDS[0]:,}; training scenes are the seeds below it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        seeds = held_out_seeds(args.first_seed, args.scenes)
        configure_cpu_threads(args.threads)  # one4d.runtime: 1 on a shared 2-core CPU, where the tiny model runs fastest
        settings = None  # run_demo verifies the checkpoint, then reads its settings
        if seeds != DEMO_SEEDS:
            verify_checkpoint(args.checkpoint)  # before its sampling.json is read: a bad file is the manifest's line
            settings = replace(checkpoint_settings(args.checkpoint), seeds=seeds)
        summary = run_demo(args.out, args.checkpoint, settings)
    except ValueError as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"wrote {out}/ (contact_sheet.png, metrics.md, summary.json, {', '.join(summary['tasks'])}/) "
          f"in {time.perf_counter() - started:.0f} s")
    print(f"open the 4D viewer: {view_command(out / 'full')}" + ("   (or: make view)" if out == Path("outputs/demo") else ""))
    return 0
