"""Closed-form camera of a dense pointmap: focal, rotation and centre from pixel-point pairs.

Every pixel (u, v) of frame i sees the world point X of the pointmap, so the camera follows
from many 2D-3D correspondences. With the principal point known, a linear DLT gives the
projection matrix P = K [R | t] (Hartley-normalised, solved batched over frames in float64);
focal and rotation come from its rows, and (focal, t) are then re-solved linearly given R.

A planar frame (a single wall) makes the DLT degenerate (a 4-D null space). Such frames use a
plane-to-image homography instead: focal from Zhang's two orthogonality constraints (unobservable
when the wall faces the camera, then the focal comes from the other frames or from frame 0 at the
world origin, with a warning), and the pose from the homography given the focal.
"""

from __future__ import annotations

import warnings

import torch

from one4d.postopt.camera import Cameras, point_residuals


class PostoptDiverged(ValueError):
    """The pointmaps are no camera's view: no frame fits a pinhole camera, or the refinement ended with a
    non-positive or non-finite focal. Callers that score many scenes count it as a failed scene."""


# A frame is planar when its point cloud's thickness (smallest / largest principal spread) is below this.
PLANAR_THICKNESS = 0.03
# Reweighted solves (weights 1 / point-to-ray distance) that make the closed forms robust to flying pixels.
IRLS_ROUNDS = 2
# A frame whose closed-form camera fits this many times worse than the typical frame restarts from a neighbour.
BAD_FIT_FACTOR = 5.0
# Below this angle between the wall's normal and the optical axis the focal of a planar frame is unobservable.
MIN_PLANE_TILT_DEGREES = 8.0


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over N of (F, N, C) values with weights (F, N) -> (F, C)."""
    return (values * weight[..., None]).sum(1) / weight.sum(1, keepdim=True)


def _nearest_rotation(matrix: torch.Tensor) -> torch.Tensor:
    """Project (F, 3, 3) matrices onto SO(3) (polar decomposition)."""
    u, _, vh = torch.linalg.svd(matrix)
    sign = torch.ones_like(matrix[..., 0])
    sign[..., 2] = torch.det(u @ vh).sign()
    return u @ torch.diag_embed(sign) @ vh


def _smallest_eigenvector(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Homogeneous least squares: rows (F, M, K), weights (F, M) -> unit vector (F, K) minimising |A p|."""
    normal = (rows * weight[..., None]).transpose(1, 2) @ rows  # (F, K, K)
    _, vectors = torch.linalg.eigh(normal)
    return vectors[..., 0]


def point_spread(points: torch.Tensor, weight: torch.Tensor):
    """Weighted centre (F, 3), principal axes (F, 3, 3) as columns, largest first, and spreads (F, 3)."""
    centre = _weighted_mean(points, weight)
    centred = points - centre[:, None]
    covariance = torch.einsum("fni,fn,fnj->fij", centred, weight, centred) / weight.sum(1)[:, None, None]
    values, vectors = torch.linalg.eigh(covariance)  # ascending
    return centre, vectors.flip(-1), values.flip(-1).clamp_min(0).sqrt()


def _refit_focal_translation(rotation, points, centred_pixels, weight):
    """Given R, solve f, f t1, f t2, t3 linearly from f (r1.X + t1) = u (r3.X + t3), same for v -> focal (F,), t (F, 3)."""
    rotated = torch.einsum("fij,fnj->fni", rotation, points)  # (F, N, 3)
    u, v = centred_pixels.unbind(-1)
    zero, one = torch.zeros_like(u), torch.ones_like(u)
    rows_u = torch.stack([rotated[..., 0], one, zero, -u], dim=-1)  # (F, N, 4) unknowns (f, f t1, f t2, t3)
    rows_v = torch.stack([rotated[..., 1], zero, one, -v], dim=-1)
    rows = torch.cat([rows_u, rows_v], dim=1)  # (F, 2N, 4)
    rhs = torch.cat([u * rotated[..., 2], v * rotated[..., 2]], dim=1)  # (F, 2N)
    w = torch.cat([weight, weight], dim=1)
    weighted = (rows * w[..., None]).transpose(1, 2)  # (F, 4, 2N)
    normal = weighted @ rows
    right = (weighted @ rhs[..., None])[..., 0]
    solution = torch.linalg.solve(normal, right)  # (F, 4)
    focal = solution[:, 0]
    translation = torch.stack([solution[:, 1] / focal, solution[:, 2] / focal, solution[:, 3]], dim=-1)
    return focal, translation


def dlt_cameras(points: torch.Tensor, centred_pixels: torch.Tensor, weight: torch.Tensor):
    """Linear DLT with known principal point, batched: points (F, N, 3), pixels minus principal point
    (F, N, 2), weights (F, N) -> rotation (F, 3, 3), translation (F, 3), focal (F,)."""
    centre = _weighted_mean(points, weight)
    scale_x = _weighted_mean((points - centre[:, None]).pow(2).sum(-1, keepdim=True), weight).sqrt()  # (F, 1)
    scale_u = _weighted_mean(centred_pixels.pow(2).sum(-1, keepdim=True), weight).sqrt()  # (F, 1)
    x = (points - centre[:, None]) / scale_x[:, None]  # (F, N, 3) normalised (Hartley)
    u = centred_pixels / scale_u[:, None]  # (F, N, 2)
    homogeneous = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)  # (F, N, 4)
    zeros = torch.zeros_like(homogeneous)
    rows_u = torch.cat([homogeneous, zeros, -u[..., :1] * homogeneous], dim=-1)  # (F, N, 12)
    rows_v = torch.cat([zeros, homogeneous, -u[..., 1:] * homogeneous], dim=-1)
    rows = torch.cat([rows_u, rows_v], dim=1)  # (F, 2N, 12)
    p = _smallest_eigenvector(rows, torch.cat([weight, weight], dim=1)).reshape(-1, 3, 4)
    # Undo the normalisation: P = diag(s_u, s_u, 1) P~ [[I / s_x, -c / s_x], [0, 1]].
    pixel_scale = torch.stack([scale_u[:, 0], scale_u[:, 0], torch.ones_like(scale_u[:, 0])], dim=-1)
    m = pixel_scale[..., None] * p[..., :3] / scale_x[..., None]  # (F, 3, 3)
    m = m * torch.det(m).sign()[:, None, None]  # det(K R) > 0 for a proper rotation
    rows_norm = m.norm(dim=-1)  # (F, 3): f lambda, f lambda, lambda
    # A planar frame's null space is 4-D: the solver may return a P with a zero row (seen on AVX512/AMX LAPACK
    # paths). Its rotation is then meaningless anyway, and the homography replaces it; keep it finite meanwhile.
    usable = torch.isfinite(m).all(dim=-1).all(dim=-1) & (rows_norm > 0).all(dim=-1)  # (F,)
    identity = torch.eye(3, dtype=m.dtype, device=m.device).expand_as(m)
    rotation = _nearest_rotation(torch.where(usable[:, None, None], m / rows_norm.clamp_min(1e-300)[..., None], identity))
    focal, translation = _refit_focal_translation(rotation, points, centred_pixels, weight)
    return rotation, translation, focal


def homography_cameras(points, centred_pixels, weight, known_focal: torch.Tensor | None = None):
    """Cameras of planar frames from the plane-to-image homography.

    Returns rotation (F, 3, 3), translation (F, 3), focal (F,) and a bool (F,) telling where the
    focal was observable (wall tilted by at least MIN_PLANE_TILT_DEGREES); elsewhere the focal is
    ``known_focal`` (F,) when given, else NaN for the caller to fill.
    """
    centre, axes, _ = point_spread(points, weight)
    axes = torch.cat([axes[..., :2], torch.cross(axes[..., 0], axes[..., 1], dim=-1)[..., None]], dim=-1)
    plane = torch.einsum("fni,fij->fnj", points - centre[:, None], axes)[..., :2]  # (F, N, 2) in-plane coords
    scale_x = _weighted_mean(plane.pow(2).sum(-1, keepdim=True), weight).sqrt()
    scale_u = _weighted_mean(centred_pixels.pow(2).sum(-1, keepdim=True), weight).sqrt()
    a = torch.cat([plane / scale_x[:, None], torch.ones_like(plane[..., :1])], dim=-1)  # (F, N, 3)
    u = centred_pixels / scale_u[:, None]
    zeros = torch.zeros_like(a)
    rows = torch.cat(
        [torch.cat([a, zeros, -u[..., :1] * a], dim=-1), torch.cat([zeros, a, -u[..., 1:] * a], dim=-1)], dim=1
    )  # (F, 2N, 9)
    h = _smallest_eigenvector(rows, torch.cat([weight, weight], dim=1)).reshape(-1, 3, 3)
    ones = torch.ones_like(scale_u[:, 0])
    h = torch.diag_embed(torch.stack([scale_u[:, 0], scale_u[:, 0], ones], -1)) @ h
    h = h @ torch.diag_embed(torch.stack([1 / scale_x[:, 0], 1 / scale_x[:, 0], ones], -1))
    h = h / h.norm(dim=(-2, -1), keepdim=True)
    # Zhang: with G = diag(1/f, 1/f, 1) H, g1 . g2 = 0 and |g1| = |g2|; linear in w = 1 / f^2.
    h1, h2 = h[..., 0], h[..., 1]
    coef = torch.stack([h1[:, 0] * h2[:, 0] + h1[:, 1] * h2[:, 1], h1[:, :2].pow(2).sum(-1) - h2[:, :2].pow(2).sum(-1)], -1)
    const = torch.stack([h1[:, 2] * h2[:, 2], h1[:, 2] ** 2 - h2[:, 2] ** 2], -1)
    w = -(coef * const).sum(-1) / coef.pow(2).sum(-1).clamp_min(1e-300)
    focal = torch.where(w > 0, w.clamp_min(1e-300).rsqrt(), torch.full_like(w, float("nan")))
    if known_focal is not None:
        focal_for_pose = torch.where(torch.isfinite(focal), focal, known_focal)
    else:
        focal_for_pose = torch.where(torch.isfinite(focal), focal, torch.ones_like(focal))
    g = torch.diag_embed(torch.stack([1 / focal_for_pose, 1 / focal_for_pose, torch.ones_like(w)], -1)) @ h
    lam = 2 / (g[..., 0].norm(dim=-1) + g[..., 1].norm(dim=-1))
    lam = lam * g[:, 2, 2].sign()  # the plane's origin is in front of the camera
    r1, r2 = lam[:, None] * g[..., 0], lam[:, None] * g[..., 1]
    in_camera = _nearest_rotation(torch.stack([r1, r2, torch.cross(r1, r2, dim=-1)], dim=-1))
    rotation = in_camera @ axes.transpose(-1, -2)
    translation = lam[:, None] * g[..., 2] - torch.einsum("fij,fj->fi", rotation, centre)
    tilt = torch.rad2deg(torch.arccos(in_camera[:, 2, 2].abs().clamp(max=1.0)))
    observable = torch.isfinite(focal) & (tilt >= MIN_PLANE_TILT_DEGREES)
    if known_focal is not None:
        focal = torch.where(observable, focal, known_focal)
    return rotation, translation, focal, observable


def focal_from_first_frame(points: torch.Tensor, centred_pixels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Focal assuming frame 0's camera is the world origin (One4D pointmaps): u = f x / z in least squares."""
    ratio = points[0, :, :2] / points[0, :, 2:].clamp_min(1e-12)  # (N, 2)
    w = weight[0][:, None] * (points[0, :, 2:] > 0)
    return (w * ratio * centred_pixels[0]).sum() / (w * ratio.pow(2)).sum().clamp_min(1e-300)


def _distances(rotation, translation, focal, points, centred_pixels) -> torch.Tensor:
    """Point-to-ray distances (F, N) of cameras given as rotation, translation, focal (principal point 0)."""
    centre = -torch.einsum("fji,fj->fi", rotation, translation)
    cameras = Cameras(rotation, centre, focal, torch.zeros_like(centre[:, :2]))
    residual, _, _, _ = point_residuals(cameras, points, centred_pixels)
    return residual.norm(dim=-1)


def _robust_weights(distance: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """IRLS weights of an L1-type fit: weight / distance, the distance floored at a tenth of the frame's
    median and at 1e-9 of the frame's size ``scale`` (F,) (exact fits would divide by zero)."""
    floor = torch.maximum(0.1 * distance.median(dim=1, keepdim=True).values, 1e-9 * scale[:, None])
    return weight / distance.clamp_min(floor)


def robust_dlt(points, centred_pixels, weight, scale):
    """:func:`dlt_cameras` reweighted IRLS_ROUNDS times -> rotation, translation, focal; ``scale`` (F,) frame sizes."""
    rotation, translation, focal = dlt_cameras(points, centred_pixels, weight)
    for _ in range(IRLS_ROUNDS):
        distance = _distances(rotation, translation, focal, points, centred_pixels)
        rotation, translation, focal = dlt_cameras(points, centred_pixels, _robust_weights(distance, weight, scale))
    return rotation, translation, focal


def poor_fits(rotation, translation, focal, points, centred_pixels, weight) -> torch.Tensor:
    """Bool (F,): frames with most points behind the camera, or a median point-to-ray distance (relative
    to depth) BAD_FIT_FACTOR times the typical frame's."""
    depth = torch.einsum("fj,fnj->fn", rotation[:, 2], points) + translation[:, 2:3]  # (F, N)
    behind = ((depth <= 0).double() * weight).sum(1) / weight.sum(1)
    distance = _distances(rotation, translation, focal, points, centred_pixels).median(dim=1).values
    fit = distance / depth.abs().median(dim=1).values.clamp_min(1e-300)
    return (behind > 0.5) | (fit > BAD_FIT_FACTOR * fit.median() + 1e-9)


def initial_cameras(points, pixels, weight, principal_point, shared_focal: bool, messages: list[str]) -> Cameras:
    """Closed-form cameras for every frame: the DLT, or a homography where the frame is (nearly) planar.

    Frames whose points hug a plane (median distance to the best plane under PLANAR_THICKNESS of
    their spread) get both solutions; the homography wins unless the DLT fits clearly more points,
    so a noisy wall uses the homography while a room corner seen mostly as one wall keeps the DLT.
    """
    frames = points.shape[0]
    centred = pixels - principal_point[:, None]
    centre, axes, spread = point_spread(points, weight)
    degenerate = (spread[:, 1] <= 1e-9 * spread[:, 0]) | (spread[:, 0] == 0)
    if degenerate.any():
        bad = torch.nonzero(degenerate).flatten().tolist()
        raise ValueError(f"frames {bad}: all points coincide or lie on one line; no camera can be recovered from them")
    out_of_plane = torch.einsum("fni,fi->fn", points - centre[:, None], axes[..., 2]).abs().median(dim=1).values
    candidate = out_of_plane < PLANAR_THICKNESS * spread[:, 0]
    rotation, translation, focal = robust_dlt(points, centred, weight, spread[:, 0])
    if candidate.any():
        index = torch.nonzero(candidate).flatten()
        known = focal[~candidate].median().expand(index.numel()) if not candidate.all() else None
        weight_p = weight[index]
        rot_p, trans_p, focal_p, observable = homography_cameras(points[index], centred[index], weight[index], known)
        if known is None:
            # No 3-D frame to borrow the focal from: use the tilted walls', else frame 0 at the world origin.
            if observable.any():
                fill = focal_p[observable].median()
            else:
                fill = focal_from_first_frame(points, centred, weight)
                if not torch.isfinite(fill) or fill <= 0:
                    raise ValueError("every frame is a wall facing the camera: the focal is unobservable")
                messages.append(
                    f"focal unobservable (a wall facing the camera); using f={float(fill):.1f} px, frame 0 assumed at the world origin"
                )
            known = torch.where(observable, focal_p, fill)
        for _ in range(IRLS_ROUNDS + 1):
            rot_p, trans_p, focal_p, observable = homography_cameras(points[index], centred[index], weight_p, known)
            distance = _distances(rot_p, trans_p, focal_p, points[index], centred[index])
            weight_p = _robust_weights(distance, weight[index], spread[index, 0])
        # On a plane the DLT fits any of a 4-D family of cameras, so it is kept only when it explains clearly
        # more points (the 75th percentile sees a floor strip that a one-wall homography leaves out).
        homography_fit = _distances(rot_p, trans_p, focal_p, points[index], centred[index]).quantile(0.75, dim=1)
        dlt_fit = _distances(rotation[index], translation[index], focal[index], points[index], centred[index]).quantile(0.75, dim=1)
        tiny = 1e-9 * spread[index, 0]
        better = homography_fit <= 1.5 * dlt_fit + tiny
        chosen = index[better]
        rotation[chosen], translation[chosen], focal[chosen] = rot_p[better], trans_p[better], focal_p[better]
        if better.any():
            messages.append(
                f"{int(better.sum())} of {frames} frames are planar (a single wall): cameras from a homography; "
                "the focal relies on the wall's tilt and the other frames"
            )
    # A frame whose closed form failed (most points behind it, or a fit far worse than the others)
    # starts from its nearest good neighbour's camera: the trajectory is smooth, the refinement fixes the rest.
    bad = poor_fits(rotation, translation, focal, points, centred, weight)
    if bad.all():
        raise PostoptDiverged("no frame's pointmap is consistent with a pinhole camera (most points behind it or a poor fit)")
    good = torch.nonzero(~bad).flatten()
    for frame in torch.nonzero(bad).flatten().tolist():
        neighbour = good[(good - frame).abs().argmin()]
        rotation[frame], translation[frame], focal[frame] = rotation[neighbour], translation[neighbour], focal[neighbour]
    if shared_focal:
        focal = focal.median().expand(frames).clone()
    return Cameras(rotation, -torch.einsum("fji,fj->fi", rotation, translation), focal, principal_point.clone())


def summarise(messages: list[str], listed: int = 8) -> list[str]:
    """Per-frame messages ("frame 3: <text>") with the same text become one line with the count and the frames
    (an 81-frame clip of poor fits is one line, not 81); other messages are kept as they are."""
    frames: dict[str, list[str]] = {}
    lines: list[str | tuple] = []
    for message in messages:
        head, _, text = message.partition(": ")
        if head.startswith("frame ") and head[6:].isdigit() and text:
            if text not in frames:
                lines.append(("frames", text))
            frames.setdefault(text, []).append(head[6:])
        else:
            lines.append(message)
    out = []
    for line in lines:
        if isinstance(line, str):
            out.append(line)
            continue
        numbers = frames[line[1]]
        if len(numbers) == 1:
            out.append(f"frame {numbers[0]}: {line[1]}")
        else:
            shown = ", ".join(numbers[:listed]) + (f" and {len(numbers) - listed} more" if len(numbers) > listed else "")
            out.append(f"{len(numbers)} frames ({shown}): {line[1]}")
    return out


def warn_all(messages: list[str]) -> None:
    """Emit collected post-optimisation messages as warnings, per-frame ones summarised (:func:`summarise`)."""
    for message in summarise(messages):
        warnings.warn(f"post-optimisation: {message}", stacklevel=4)  # the caller of recover_cameras
