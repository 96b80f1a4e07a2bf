"""Short robust refinement of the post-optimisation objective (paper eq. 11-12, SPEC section 6).

With depth eliminated in closed form (D = z of the pointmap point in the camera, the optimum the
SPEC prescribes), the model point of pixel p is z K^-1 p, and its distance to the pointmap point
X is, in the camera frame, r = (x - z (u - cx) / f, y - z (v - cy) / f). The objective is

    a1 * sum_i mean_p c_p |r_p|  +  a2 * sum_i (||R_i^T R_{i+1} - I||_F + ||o_{i+1} - o_i||)

(|r| Euclidean per point, so the robust term is rotation invariant; the paper's coordinate-wise
L1 is reported alongside). Every term is a norm, minimised by Levenberg-Marquardt on iteratively
reweighted least squares: weights 1 / |r| make the squares behave like the L1-type norm, which
shrugs off flying pixels. Unknowns: per-frame rotation and centre (increments in the camera frame), focal
(shared or per frame, in log) and optionally the principal point. The normal matrix is dense
(6F + a few unknowns), small enough to solve directly.
"""

from __future__ import annotations

import torch

from one4d.postopt.camera import Cameras, point_residuals

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


def _weighted_gram(columns: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor):
    """sum_n w_n J_n^T J_n and sum_n w_n J_n^T r_n for J (F, N, D, K), w (F, N), r (F, N, D)."""
    frames, count, dims, size = columns.shape
    flat = columns.reshape(frames, count * dims, size)  # (F, ND, K)
    weighted = flat * weight.repeat_interleave(dims, dim=1)[..., None]
    return weighted.transpose(1, 2) @ flat, (weighted.transpose(1, 2) @ residual.reshape(frames, -1, 1))[..., 0]


def _normal_equations(cameras, points, pixels, weight, a1, a2, index, size, scale):
    """IRLS Gauss-Newton system (size, size) and gradient (size,) at the current cameras.

    Increments are in each camera's frame: R <- exp([w]) R and o <- o + R^T d, so the per-point
    Jacobian needs no matrix products: dY/dw = -[Y]x and dY/dd = -I.
    """
    residual, camera_points, unit, length = point_residuals(cameras, points, pixels)
    distance = residual.norm(dim=-1)  # (F, N)
    floor = 1e-2 * distance.median(dim=1, keepdim=True).values.clamp_min(1e-12 * scale)
    w = a1 * weight / distance.clamp_min(floor)  # IRLS weights of the L1-type norm
    x, y, z = camera_points.unbind(-1)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    # r = Y - u (u . Y): a change dY moves r by dY - u (u . dY); a change du by -(du (u . Y) + u (du . Y)).
    moves = torch.stack(
        [torch.stack(c, dim=-1) for c in (
            (zero, -z, y), (z, zero, -x), (-y, x, zero),  # dY / dw_k = e_k x Y
            (-one, zero, zero), (zero, -one, zero), (zero, zero, -one),  # dY / dd_k = -e_k
        )],
        dim=-1,
    )  # (F, N, 3, 6)
    pose_columns = moves - unit[..., None] * (unit[..., None] * moves).sum(-2, keepdim=True)
    # The ray K^-1 (u, v, 1) = ((u - cx) / f, (v - cy) / f, 1) changes with log f by (-x_r, -y_r, 0), with cx by (-1/f, 0, 0).
    ray_moves = torch.stack(
        [torch.stack(c, dim=-1) for c in (
            (-unit[..., 0] * length[..., 0], -unit[..., 1] * length[..., 0], zero),
            (-one / cameras.focal[:, None], zero, zero),
            (zero, -one / cameras.focal[:, None], zero),
        )],
        dim=-1,
    )  # (F, N, 3, 3) d ray
    unit_moves = (ray_moves - unit[..., None] * (unit[..., None] * ray_moves).sum(-2, keepdim=True)) / length[..., None]
    along = (unit * camera_points).sum(-1)[..., None, None]  # (F, N, 1, 1)
    intrinsic_columns = -(unit_moves * along + unit[..., None] * (unit_moves * camera_points[..., None]).sum(-2, keepdim=True))
    jacobian = torch.cat([pose_columns, intrinsic_columns], dim=-1)  # (F, N, 3, 9)
    blocks, vectors = _weighted_gram(jacobian, w, residual)
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
    a2: float = 0.01,
    iterations: int = 15,
    shared_focal: bool = True,
    optimize_pp: bool = False,
) -> Cameras:
    """Levenberg-Marquardt on the IRLS objective; stops early when a step no longer helps."""
    weight = weight / weight.sum(dim=1, keepdim=True)
    frames = points.shape[0]
    index, size = _parameter_index(frames, shared_focal, optimize_pp, points.device)
    scale = float((points - cameras.centre[:, None]).norm(dim=-1).median())
    current = objective(cameras, points, pixels, weight, a1, a2)["total"]
    damping = 1e-6
    for _ in range(iterations):
        hessian, gradient = _normal_equations(cameras, points, pixels, weight, a1, a2, index, size, scale)
        diagonal = hessian.diagonal().clamp_min(1e-12 * hessian.diagonal().max())
        improved = False
        for _ in range(6):
            system = hessian + torch.diag(damping * diagonal)
            delta = -torch.linalg.solve(system, gradient)
            candidate = _apply_step(cameras, delta, index)
            value = objective(candidate, points, pixels, weight, a1, a2)["total"]
            if value <= current:
                improved = True
                break
            damping *= 10
        if not improved:
            break
        relative_gain = float((current - value) / current.clamp_min(1e-300))
        cameras, current = candidate, value
        damping = max(damping / 10, 1e-9)
        if relative_gain < 1e-10:
            break
    return cameras
