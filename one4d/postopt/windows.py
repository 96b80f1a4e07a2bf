"""Long videos: recover cameras per window and merge the windows by Sim(3) on their shared frames.

Windows may live in different world frames and scales (One4D generates a long video as windows,
each in its own first frame's camera and normalisation). For every pair of consecutive windows,
the shared frames' pointmaps are the same pixels seen in both worlds, so a Umeyama similarity
fitted on those points (trimmed of the worst 20 % and refitted, for flying pixels) maps the later
window into the earlier one. The merged trajectory lives in the first window's world and scale;
an overlap frame takes its camera from the window whose centre it is nearer to.

A window whose cameras diverge (:class:`one4d.postopt.recover.PostoptDiverged`) does not stop the
merge: the similarities come from the pointmaps alone, so the other windows still join; its
neighbours take over the frames they share with it, and each frame only it covers holds the camera
of the nearest frame with a recovered one, has depth 0 (invalid) and is listed in ``unreliable``,
with one warning naming the window. Only when every window diverges is it an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from one4d.geometry import camera_centers, invert_pose, make_pose, umeyama_alignment
from one4d.postopt.inputs import as_tensor, check_pointmaps, sample_pixels
from one4d.postopt.recover import CameraRecovery, PostoptDiverged, recover_cameras

# Fraction of shared points kept for the second Umeyama fit.
TRIM_KEEP = 0.8
ALIGNMENT_POINTS = 4096


def split_windows(frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of windows of ``window`` frames, each starting ``overlap`` frames before the previous
    one ends, covering ``frames``; the last window may be shorter (it still has more than ``overlap`` frames)."""
    if not 1 <= overlap < window:
        raise ValueError(f"overlap must be in [1, window) = [1, {window}), got {overlap}")
    starts = range(0, max(frames - overlap, 1), window - overlap)
    return [(start, min(start + window, frames)) for start in starts]


def _similarity(source: torch.Tensor, target: torch.Tensor):
    """Trimmed Umeyama: source, target (N, 3) -> scale, rotation, translation, RMS residual of the kept points."""
    scale, rotation, translation = umeyama_alignment(source, target)
    residual = (scale * source @ rotation.T + translation - target).norm(dim=-1)
    keep = residual <= residual.quantile(TRIM_KEEP)
    scale, rotation, translation = umeyama_alignment(source[keep], target[keep])
    rms = (scale * source[keep] @ rotation.T + translation - target[keep]).norm(dim=-1).pow(2).mean().sqrt()
    return scale, rotation, translation, rms


def _apply_similarity(result: CameraRecovery, scale, rotation, translation) -> CameraRecovery:
    """Express a window's cameras and depth in a world where X_new = scale * rotation @ X + translation."""
    new_rotation = result.world_to_camera[:, :3, :3] @ rotation.T
    new_translation = scale * result.world_to_camera[:, :3, 3] - new_rotation @ translation
    world_to_camera = make_pose(new_rotation, new_translation)
    return CameraRecovery(
        intrinsics=result.intrinsics,
        world_to_camera=world_to_camera,
        camera_to_world=invert_pose(world_to_camera),
        camera_centers=camera_centers(world_to_camera),
        depth=result.depth * scale.to(result.depth.dtype),
        valid=result.valid,
        losses=result.losses,
        num_invalid=result.num_invalid,
        warnings=result.warnings,
        num_behind=result.num_behind,
    )


def recover_cameras_windowed(
    windows: Sequence, overlap: int | Sequence[int], valid: Sequence | None = None, confidence: Sequence | None = None, **options
) -> CameraRecovery:
    """Recover one trajectory from consecutive windows of pointmaps, each (F_k, H, W, 3) in its own world.

    Window k + 1 starts ``overlap`` frames before window k ends; ``overlap`` is one number for every pair
    or one per pair (K - 1 numbers: evaluation starts windows on observed frames, so its overlaps vary,
    ``one4d.pipeline.evaluation.observed_windows``). ``valid`` / ``confidence``: one
    (F_k, H, W) array per window or None. ``options`` go to :func:`recover_cameras` (without window).
    The result covers sum(F_k) - sum(overlaps) frames in the first window's world and scale;
    ``losses`` average the windows' pointmap terms, sum the rest, and add ``alignment_rms`` (largest
    RMS residual of a window merge, in the first window's units).
    """
    if len(windows) == 0:
        raise ValueError("recover_cameras_windowed needs at least one window")
    device = options.get("device")
    if "window" in options:
        raise ValueError("recover_cameras_windowed takes the windows themselves; drop the window option")
    windows = [as_tensor(w, f"windows[{k}]", device) for k, w in enumerate(windows)]
    overlaps = [int(o) for o in overlap] if hasattr(overlap, "__len__") else [int(overlap)] * (len(windows) - 1)
    if len(overlaps) != len(windows) - 1 or any(o < 1 for o in overlaps):
        raise ValueError(f"overlap must be a positive number or {len(windows) - 1} positive numbers (one per pair of windows), got {overlap}")
    for k, w in enumerate(windows):
        touching = overlaps[max(k - 1, 0):k + 1]  # the overlaps with the previous and the next window
        if w.ndim != 4 or w.shape[0] <= max(touching, default=0) or w.shape[1:] != windows[0].shape[1:]:
            raise ValueError(
                f"windows[{k}] has shape {tuple(w.shape)}; every window must be (F_k, H, W, 3) with the same H, W "
                f"and more than overlap={max(touching, default=0)} frames"
            )
    results, failures = [], {}
    for k, w in enumerate(windows):
        mask, weights = None if valid is None else valid[k], None if confidence is None else confidence[k]
        try:
            results.append(recover_cameras(w, valid=mask, confidence=weights, **options))
        except PostoptDiverged as error:
            if len(windows) == 1:
                raise
            failures[k] = str(error).removeprefix("post-optimisation ").split(";")[0]  # "diverged (non-positive focal)"
            results.append(stand_in(w, mask, weights, options.get("device")))
    if len(failures) == len(windows):
        raise PostoptDiverged(f"post-optimisation diverged in every one of the {len(windows)} windows; "
                              "check that the pointmaps are a camera's view")

    merged = [results[0]]
    similarities = [(torch.ones((), dtype=torch.float64), torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))]
    worst_rms = 0.0
    for k in range(1, len(windows)):
        overlap = overlaps[k - 1]
        both = results[k - 1].valid[-overlap:] & results[k].valid[:overlap]  # (O, H, W) valid in both windows
        indices = sample_pixels(both, ALIGNMENT_POINTS // overlap + 1, seed=k)  # (O, N)

        def shared_points(points):
            flat = points.reshape(overlap, -1, 3)
            return torch.gather(flat, 1, indices[..., None].expand(-1, -1, 3)).reshape(-1, 3).double().cpu()

        previous_scale, previous_rotation, previous_translation = similarities[k - 1]
        target = previous_scale * shared_points(windows[k - 1][-overlap:]) @ previous_rotation.T + previous_translation
        scale, rotation, translation, rms = _similarity(shared_points(windows[k][:overlap]), target)
        similarities.append((scale, rotation, translation))
        worst_rms = max(worst_rms, float(rms))
        device_of = results[k].world_to_camera
        merged.append(_apply_similarity(results[k], scale.to(device_of), rotation.to(device_of), translation.to(device_of)))

    given_up = [_share(o, k in failures, k + 1 in failures) for k, o in enumerate(overlaps)]  # per pair: (left, right)
    keep = [slice(given_up[k - 1][1] if k > 0 else 0, r.depth.shape[0] - (given_up[k][0] if k < len(merged) - 1 else 0))
            for k, r in enumerate(merged)]  # per window, the frame range it contributes

    def cat(attribute):
        return torch.cat([getattr(r, attribute)[s] for r, s in zip(merged, keep)])

    solved = [r for k, r in enumerate(results) if k not in failures]
    losses = {}
    for key in solved[0].losses:
        values = [r.losses[key] for r in solved]
        losses[key] = sum(values) / len(values) if key.startswith("pointmap") else sum(values)
    losses["alignment_rms"] = worst_rms
    intrinsics, world_to_camera = cat("intrinsics"), cat("world_to_camera")
    messages, unreliable, start = [], [], 0
    for k, (result, kept) in enumerate(zip(merged, keep)):
        count = kept.stop - kept.start
        if k in failures:
            frames = list(range(start, start + count))
            unreliable += frames
            first_frame = start - kept.start  # the window's first frame in the merged clip
            span = "" if not count else f"frame {frames[0]}" if count == 1 else f"frames {frames[0]}-{frames[-1]}"
            messages.append(f"window {k} (frames {first_frame}-{first_frame + result.depth.shape[0] - 1}) {failures[k]}; "
                            + (f"unreliable: {span}, which only it covers (nearest recovered camera, depth 0)" if count
                               else "its neighbours cover all its frames"))
        start += count
    _hold_nearest(intrinsics, world_to_camera, unreliable)
    valid_out = cat("valid")
    valid_out[unreliable] = False  # their depth is 0
    for message in messages:
        warnings.warn(f"post-optimisation: {message}", stacklevel=2)
    return CameraRecovery(
        intrinsics=intrinsics,
        world_to_camera=world_to_camera,
        camera_to_world=invert_pose(world_to_camera),
        camera_centers=camera_centers(world_to_camera),
        depth=cat("depth"),
        valid=valid_out,
        losses=losses,
        num_invalid=sum(r.num_invalid for r in results),
        warnings=[m for r in results for m in r.warnings] + messages,
        num_behind=sum(r.num_behind for r in results),
        unreliable=unreliable,
    )


def _share(overlap: int, left_diverged: bool, right_diverged: bool) -> tuple[int, int]:
    """How many of a pair's ``overlap`` shared frames the left and the right window give up: the half nearer the
    other window's centre, or all of them when only that window diverged."""
    if left_diverged != right_diverged:
        return (overlap, 0) if left_diverged else (0, overlap)
    return overlap // 2, overlap - overlap // 2


def stand_in(points, valid, confidence, device) -> CameraRecovery:
    """A diverged window's (or clip's) place in the merge: its validity (for the similarities), placeholder cameras, depth 0."""
    with warnings.catch_warnings():  # its NaN count was already warned about when the window was solved
        warnings.simplefilter("ignore")
        points, mask, _, num_invalid = check_pointmaps(points, valid, confidence, device)
    frames = points.shape[0]
    identity = torch.eye(4, dtype=torch.float64, device=points.device).expand(frames, 4, 4).clone()
    return CameraRecovery(
        intrinsics=torch.eye(3, dtype=torch.float64, device=points.device).expand(frames, 3, 3).clone(),
        world_to_camera=identity, camera_to_world=identity.clone(), camera_centers=identity[:, :3, 3].clone(),
        depth=torch.zeros(points.shape[:3], dtype=points.dtype, device=points.device),
        valid=mask, losses={}, num_invalid=num_invalid,
    )


def _hold_nearest(intrinsics: torch.Tensor, world_to_camera: torch.Tensor, frames: list[int]) -> None:
    """In place: each listed frame takes the intrinsics and pose of the nearest frame not listed (the earlier on a tie)."""
    if not frames:
        return
    listed = torch.zeros(intrinsics.shape[0], dtype=torch.bool)
    listed[frames] = True
    good = torch.nonzero(~listed).flatten()
    for frame in frames:
        nearest = int(good[(good - frame).abs().argmin()])
        intrinsics[frame], world_to_camera[frame] = intrinsics[nearest], world_to_camera[nearest]
