"""Short robust refinement of the post-optimisation objective (paper eq. 11-12).

Depth is eliminated in closed form: for a given camera, the best D of pixel p puts the model point
D K^-1 p at the foot of the perpendicular from the pointmap point X to the pixel's ray, so the
pointmap term becomes the point-to-ray distance r = P (R (X - o)), P projecting orthogonally to the
ray. (Taking D = z instead, r = (x - z (u - cx) / f, y - z (v - cy) / f), looks simpler but is
biased: its noise grows with (u - cx) / f, so noise pushes the focal up by about 1 % at 1 % noise.)
The objective is

    a1 * sum_i mean_p c_p |r_p|  +  a2 * sum_i (||R_i^T R_{i+1} - I||_F + ||o_{i+1} - o_i||)

(|r| Euclidean per point, so the robust term is rotation invariant; the paper's coordinate-wise
L1 is reported alongside). Every term is a norm, minimised by Levenberg-Marquardt on iteratively
reweighted least squares: weights 1 / |r| make the squares behave like the L1-type norm, which
shrugs off flying pixels. Unknowns: per-frame rotation and centre (increments in the camera frame),
focal (shared or per frame, in log) and optionally the principal point. The normal matrix is dense
(6F + a few unknowns), small enough to solve directly. The output depth is still z of X in the
recovered camera (:func:`one4d.postopt.recover.depth_from_cameras`).
"""

from __future__ import annotations

import torch

from one4d.postopt.camera import Cameras, point_residuals

# Stop when a step lowers the objective by less than this fraction (IRLS converges linearly; further
# steps move cameras by far less than the noise). Exact data keep converging until float precision.
STOP_GAIN = 1e-5

# so(3) generators: GENERATORS[k] @ v == e_k x v.
_GENERATORS = torch.tensor(
    [[[0, 0, 0], [0, 0, -1], [0, 1, 0]], [[0, 0, 1], [0, 0, 0], [-1, 0, 0]], [[0, -1, 0], [1, 0, 0], [0, 0, 0]]],
    dtype=torch.float64,
)


def _skew(vector: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    return torch.einsum("...k,kij->...ij", vector, _GENERATORS.to(vector))


def smoothness_terms(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair of consecutive frames: ||R_i^T R_{i+1} - I||_F and ||o_{i+1} - o_i|| -> two (F-1,) tensors."""
    relative = cameras.rotation[:-1].transpose(-1, -2) @ cameras.rotation[1:]
    eye = torch.eye(3, dtype=relative.dtype, device=relative.device)
    return (relative - eye).flatten(-2).norm(dim=-1), (cameras.centre[1:] - cameras.centre[:-1]).norm(dim=-1)


def robust_total(cameras: Cameras, points, pixels, weight, a1: float, a2: float) -> torch.Tensor:
    """The objective minimised (see the module docstring); points (F, 3, N), pixels (F, 2, N),
    ``weight`` (F, N) sums to 1 per frame."""
    distance = _ray_geometry(cameras, points, pixels)["distance"]
    rotation_term, translation_term = smoothness_terms(cameras)
    return a1 * (weight * distance).sum() + a2 * (rotation_term.sum() + translation_term.sum())


def objective(cameras: Cameras, points, pixels, weight, a1: float, a2: float) -> dict[str, torch.Tensor]:
    """The robust objective and the paper's terms; ``weight`` (F, N) is normalised to sum 1 per frame."""
    residual, _, _, _ = point_residuals(cameras, points, pixels)
    distance = residual.norm(dim=-1)  # (F, N)
    # Paper's L1: coordinate-wise in the world frame.
    world = residual @ cameras.rotation
    rotation_term, translation_term = smoothness_terms(cameras)
    data = (weight * distance).sum()
    smooth = rotation_term.sum() + translation_term.sum()
    return {
        "total": a1 * data + a2 * smooth,
        "pointmap_distance": data / points.shape[0],
        "pointmap_l1": (weight * world.abs().sum(-1)).sum() / points.shape[0],
        "smoothness_rotation": rotation_term.sum(),
        "smoothness_translation": translation_term.sum(),
    }


def _parameter_index(frames: int, shared_focal: bool, optimize_pp: bool, device) -> tuple[torch.Tensor, int]:
    """Global unknown index of each frame's 9 local unknowns (rotation 3, centre 3, log f, cx, cy); -1 = fixed."""
    index = torch.full((frames, 9), -1, dtype=torch.long, device=device)
    per_frame = 6 + (0 if shared_focal else 1) + (2 if optimize_pp and not shared_focal else 0)
    base = torch.arange(frames, device=device)[:, None] * per_frame
    index[:, :6] = base + torch.arange(6, device=device)
    shared_start = frames * per_frame
    if shared_focal:
        index[:, 6] = shared_start
        if optimize_pp:
            index[:, 7], index[:, 8] = shared_start + 1, shared_start + 2
    else:
        index[:, 6:7] = base + 6
        if optimize_pp:
            index[:, 7:9] = base + torch.arange(7, 9, device=device)
    size = shared_start + (1 + (2 if optimize_pp else 0) if shared_focal else 0)
    return index, size


def _scatter_blocks(hessian: torch.Tensor, gradient: torch.Tensor, index, blocks, vectors) -> None:
    """Add blocks (B, K, K) and vectors (B, K) at global indices (B, K) (-1 = fixed) into the dense system."""
    keep = index >= 0
    rows = index[:, :, None].expand_as(blocks)
    cols = index[:, None, :].expand_as(blocks)
    pair_keep = keep[:, :, None] & keep[:, None, :]
    hessian.index_put_((rows[pair_keep], cols[pair_keep]), blocks[pair_keep], accumulate=True)
    gradient.index_put_((index[keep],), vectors[keep], accumulate=True)


def _ray_geometry(cameras: Cameras, points: torch.Tensor, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-point quantities, one (F, N) tensor per component (contiguous planes are much faster than
    reductions over a last axis of 3). points (F, 3, N), pixels (F, 2, N).

    Y: camera points; s = K^-1 (u, v, 1) minus its 1; L = |ray|; u: unit ray; along = u . Y; r = Y - u along.
    """
    y = cameras.rotation @ (points - cameras.centre[..., None])  # (F, 3, N)
    s = (pixels - cameras.principal_point[..., None]) / cameras.focal[:, None, None]  # (F, 2, N)
    length = (1 + s[:, 0] ** 2 + s[:, 1] ** 2).sqrt()
    unit = (s[:, 0] / length, s[:, 1] / length, 1 / length)
    yc = (y[:, 0], y[:, 1], y[:, 2])
    along = unit[0] * yc[0] + unit[1] * yc[1] + unit[2] * yc[2]
    residual = tuple(yc[k] - unit[k] * along for k in range(3))
    distance = (residual[0] ** 2 + residual[1] ** 2 + residual[2] ** 2).sqrt()
    return {"y": yc, "s": (s[:, 0], s[:, 1]), "length": length, "unit": unit, "along": along, "residual": residual, "distance": distance}


def _cross(a, b):
    """Cross product of vectors given as 3 component tensors."""
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _local_systems(cameras: Cameras, geometry: dict, w: torch.Tensor):
    """Per-frame Gauss-Newton blocks (F, 9, 9) and gradients (F, 9) of sum_n w_n |r_n|^2 / 2.

    Unknowns per frame: rotation and centre increments in the camera frame (R <- exp([dw]) R,
    o <- o + R^T dd) and log f, cx, cy. With r = P Y (P the projector orthogonal to the unit ray
    u), the pose Jacobian is P M with M = [-[Y]x, -I], so sum w M^T P M = sum w M^T M - sum w
    (M^T u)(M^T u)^T needs only weighted moments of Y: no per-point 3x6 matrices.
    """
    y, unit, along, residual, length = geometry["y"], geometry["unit"], geometry["along"], geometry["residual"], geometry["length"]
    y_stack = torch.stack(y, dim=1)  # (F, 3, N)
    wy = y_stack * w[:, None]
    s0, s1, s2 = w.sum(1), wy.sum(2), wy @ y_stack.transpose(1, 2)  # (F,), (F, 3), (F, 3, 3)
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    skew_s1 = _skew(s1)
    moments = torch.cat(
        [
            torch.cat([s2.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None] * eye - s2, -skew_s1], dim=-1),
            torch.cat([skew_s1, s0[:, None, None] * eye], dim=-1),
        ],
        dim=-2,
    )  # (F, 6, 6) sum w M^T M
    v = torch.stack([*_cross(y, unit), -unit[0], -unit[1], -unit[2]], dim=1)  # (F, 6, N) M^T u
    pose_block = moments - (v * w[:, None]) @ v.transpose(1, 2)

    # Intrinsics: the ray (s_u, s_v, 1) moves by (-s_u, -s_v, 0) with log f, (-1/f, 0, 0) with cx, (0, -1/f, 0)
    # with cy; the unit ray by P d(ray) / L; r = Y - u (u . Y) by q = -(du (u . Y) + u (du . Y)).
    zero = torch.zeros_like(along)
    inv_f = (1 / cameras.focal)[:, None].expand_as(along)
    su, sv = geometry["s"]
    rows, mixed_rows, gradient_rows = [], [], []
    for move in ((-su, -sv, zero), (-inv_f, zero, zero), (zero, -inv_f, zero)):
        towards = _dot(move, unit)
        du = tuple((move[k] - unit[k] * towards) / length for k in range(3))
        p = tuple(-du[k] * along for k in range(3))  # the part of q orthogonal to u
        du_y = _dot(du, y)
        q = tuple(p[k] - unit[k] * du_y for k in range(3))
        rows.append(torch.stack(q, dim=1))  # (F, 3, N)
        mixed_rows.append(torch.stack([*_cross(y, p), -p[0], -p[1], -p[2]], dim=1))  # (F, 6, N) M^T P q
        gradient_rows.append(_dot(q, residual))
    q_all = torch.stack(rows, dim=1).flatten(2)  # (F, 3 unknowns, 3N)
    w3 = w.repeat(1, 3)
    intrinsic_block = (q_all * w3[:, None]) @ q_all.transpose(1, 2)  # (F, 3, 3)
    mixed = (torch.stack(mixed_rows, dim=1) @ w[:, None, :, None])[..., 0].transpose(1, 2)  # (F, 6, 3)
    blocks = torch.cat(
        [torch.cat([pose_block, mixed], dim=-1), torch.cat([mixed.transpose(1, 2), intrinsic_block], dim=-1)], dim=-2
    )  # (F, 9, 9)
    # M^T r = (Y x r, -r) because r is orthogonal to u.
    gradient_terms = torch.stack([*_cross(y, residual), -residual[0], -residual[1], -residual[2], *gradient_rows], dim=1)
    gradient = (gradient_terms @ w[..., None])[..., 0]  # (F, 9)
    return blocks, gradient


def _normal_equations(cameras, points, pixels, weight, a1, a2, index, size, scale):
    """IRLS Gauss-Newton system (size, size) and gradient (size,) at the current cameras."""
    geometry = _ray_geometry(cameras, points, pixels)
    distance = geometry["distance"]  # (F, N)
    floor = 1e-2 * distance.median(dim=1, keepdim=True).values.clamp_min(1e-12 * scale)
    w = a1 * weight / distance.clamp_min(floor)  # IRLS weights of the L1-type norm
    blocks, vectors = _local_systems(cameras, geometry, w)
    hessian = torch.zeros(size, size, dtype=points.dtype, device=points.device)
    gradient = torch.zeros(size, dtype=points.dtype, device=points.device)
    _scatter_blocks(hessian, gradient, index, blocks, vectors)

    frames = points.shape[0]
    if a2 > 0 and frames > 1:
        # Rotation term e = vec(R_i^T R_{i+1} - I); left increments: de/dw_i[k] = -R_i^T G_k R_{i+1}, +same for i+1.
        generators = _GENERATORS.to(points)
        first, second = cameras.rotation[:-1], cameras.rotation[1:]
        eye = torch.eye(3, dtype=points.dtype, device=points.device)
        error = (first.transpose(-1, -2) @ second - eye).flatten(-2)  # (F-1, 9)
        column = (first.transpose(-1, -2)[:, None] @ generators[None] @ second[:, None]).flatten(-2)  # (F-1, 3, 9)
        jac_r = torch.cat([-column, column], dim=1).transpose(-1, -2)  # (F-1, 9, 6)
        w_r = a2 / error.norm(dim=-1).clamp_min(1e-6)
        pair_index = torch.cat([index[:-1, :3], index[1:, :3]], dim=-1)
        _scatter_blocks(
            hessian, gradient, pair_index,
            w_r[:, None, None] * jac_r.transpose(-1, -2) @ jac_r,
            w_r[:, None] * torch.einsum("pki,pk->pi", jac_r, error),
        )
        # Centre term e = o_{i+1} - o_i with o <- o + R^T d.
        step = cameras.centre[1:] - cameras.centre[:-1]  # (F-1, 3)
        w_t = a2 / step.norm(dim=-1).clamp_min(1e-6 * scale)
        jac_t = torch.cat([-first.transpose(-1, -2), second.transpose(-1, -2)], dim=-1)  # (F-1, 3, 6)
        pair_index = torch.cat([index[:-1, 3:6], index[1:, 3:6]], dim=-1)
        _scatter_blocks(
            hessian, gradient, pair_index,
            w_t[:, None, None] * jac_t.transpose(-1, -2) @ jac_t,
            w_t[:, None] * torch.einsum("pki,pk->pi", jac_t, step),
        )
    return hessian, gradient


def _apply_step(cameras: Cameras, delta: torch.Tensor, index: torch.Tensor) -> Cameras:
    """Cameras after the update ``delta`` of the global unknowns."""
    padded = torch.cat([delta, delta.new_zeros(1)])  # index -1 picks the trailing zero
    local = padded[index]  # (F, 9)
    return Cameras(
        rotation=torch.linalg.matrix_exp(_skew(local[:, :3])) @ cameras.rotation,
        centre=cameras.centre + torch.einsum("fji,fj->fi", cameras.rotation, local[:, 3:6]),
        focal=cameras.focal * local[:, 6].exp(),
        principal_point=cameras.principal_point + local[:, 7:9],
    )


def refine_cameras(
    cameras: Cameras,
    points: torch.Tensor,
    pixels: torch.Tensor,
    weight: torch.Tensor,
    a1: float = 1.0,
    a2: float = 0.003,
    iterations: int = 15,
    shared_focal: bool = True,
    optimize_pp: bool = False,
) -> Cameras:
    """Levenberg-Marquardt on the IRLS objective; stops early when a step no longer helps."""
    weight = weight / weight.sum(dim=1, keepdim=True)
    frames = points.shape[0]
    scale = float((points - cameras.centre[:, None]).norm(dim=-1).median())
    points, pixels = points.transpose(1, 2).contiguous(), pixels.transpose(1, 2).contiguous()  # (F, 3, N), (F, 2, N)
    index, size = _parameter_index(frames, shared_focal, optimize_pp, points.device)
    current = robust_total(cameras, points, pixels, weight, a1, a2)
    damping = 1e-6
    for _ in range(iterations):
        hessian, gradient = _normal_equations(cameras, points, pixels, weight, a1, a2, index, size, scale)
        diagonal = hessian.diagonal().clamp_min(1e-12 * hessian.diagonal().max())
        improved = False
        for _ in range(6):
            system = hessian + torch.diag(damping * diagonal)
            delta = -torch.linalg.solve(system, gradient)
            candidate = _apply_step(cameras, delta, index)
            value = robust_total(candidate, points, pixels, weight, a1, a2)
            if value <= current:
                improved = True
                break
            damping *= 10
        if not improved:
            break
        relative_gain = float((current - value) / current.clamp_min(1e-300))
        cameras, current = candidate, value
        damping = max(damping / 10, 1e-9)
        if relative_gain < STOP_GAIN:
            break
    return cameras
