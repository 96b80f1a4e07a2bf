"""Depth evaluation protocols as data: how MonST3R, CUT3R and Geo4D align and score video depth.

A depth number can be set beside a peer's table only if it is computed with that peer's procedure, step
by step (the facts, each with its source line in the peer's code, are in this module's ``PROTOCOLS`` table). Each peer's
evaluation script is one row of ``PROTOCOLS``: the resize filter, the dtypes it computes in, and the solver
(with its settings) behind each alignment its script offers. "exact" is this project's own exact LAD fit:
an extra, labelled protocol whose numbers belong in their own column.

The peers' solvers are written here in their code's order of operations and dtypes, because their
fixed-iteration loops end where float32 rounding takes them: Geo4D's Adam stops when two float32 losses
tie, so float64, a regrouped product or a fused optimiser moves its Abs Rel by up to 3e-2 on some inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

Solver = Callable[[torch.Tensor, torch.Tensor], tuple]  # (pred (N,), gt (N,)) -> (scale, shift)


# ----------------------------------------------------------------------------- the peers' solvers


def adam_lad(pred: torch.Tensor, gt: torch.Tensor, lr: float, steps: int, tol: float = 1e-6) -> tuple[float, float]:
    """``align_with_lad2`` of the peers' ``depth_evaluation`` (MonST3R and Geo4D ``dust3r/depth_eval.py``,
    CUT3R ``eval/video_depth/tools.py``): Adam on (s, t) in the prediction's dtype from s = median(g) / median(p)
    (torch's lower median), t = 0; loss = SUM |s p + t - g|; after each step, stop once the loss equals the
    previous one to ``tol`` (``absolute_value_scaling2``). Plain single-tensor Adam, as torch picks on the CPU.
    """
    s_init = (torch.median(gt) / torch.median(pred)).item()
    s = torch.tensor([s_init], requires_grad=True, device=pred.device, dtype=pred.dtype)
    t = torch.tensor([0.0], requires_grad=True, device=pred.device, dtype=pred.dtype)
    optimizer = torch.optim.Adam([s, t], lr=lr, foreach=False, fused=False)
    previous = None
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.sum(torch.abs(s * pred + t - gt))
        loss.backward()
        optimizer.step()
        if previous is not None and torch.abs(previous - loss) < tol:
            break
        previous = loss.item()
    return s.detach().item(), t.detach().item()


def irls_scale(pred: torch.Tensor, gt: torch.Tensor, rounds: int = 10) -> tuple[torch.Tensor, float]:
    """``align_with_scale`` of the same ``depth_evaluation``: s = mean(g) / mean(p), then ``rounds`` reweighted
    least-squares steps w = 1 / (|s p - g| + 1e-8), s = sum(w p g) / sum(w p^2) (not converged after 10), then s >= 1e-3."""
    s = torch.nanmean(gt) / torch.nanmean(pred)
    for _ in range(rounds):
        weights = 1.0 / ((s * pred - gt).abs() + 1e-8)
        s = torch.sum(weights * pred * gt) / torch.sum(weights * pred**2)
    return s.clamp(min=1e-3), 0.0


def median_scale(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, float]:
    """s = median(g) / median(p): ``depth_evaluation`` with no alignment flag set (torch's lower median)."""
    return torch.median(gt) / torch.median(pred), 0.0


def no_alignment(pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, float]:
    """The prediction as it is (CUT3R's ``metric_scale``)."""
    return 1.0, 0.0


# ----------------------------------------------------------------------------- the exact LAD fits ("exact")


FIT_PIXELS = 1 << 20  # the optional strided-subset size (``depth_metrics(fit_pixels=FIT_PIXELS)``)


def fit_subset(pred: torch.Tensor, gt: torch.Tensor, max_pixels: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Evenly strided subset of at most ``max_pixels`` pixels (None: all): the fit, not the metric, uses it."""
    if max_pixels is None:
        return pred, gt
    step = -(-pred.numel() // max_pixels)
    return pred[::step], gt[::step]


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Smallest value whose cumulative weight reaches half the total weight."""
    order = torch.argsort(values)
    cumulative = torch.cumsum(weights[order], 0)
    index = torch.searchsorted(cumulative, cumulative[-1] / 2)
    return values[order][index.clamp(max=values.numel() - 1)]


def lad_scale(pred: torch.Tensor, gt: torch.Tensor, max_pixels: int | None = FIT_PIXELS) -> torch.Tensor:
    """argmin_s sum |g - s p|: sum |p| |g / p - s| is minimised by the |p|-weighted median of g / p."""
    pred, gt = fit_subset(pred, gt, max_pixels)
    usable = pred != 0
    return _weighted_median(gt[usable] / pred[usable], pred[usable].abs())


def lad_scale_shift(
    pred: torch.Tensor, gt: torch.Tensor, iterations: int = 48, max_pixels: int | None = FIT_PIXELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_(s, t) sum |g - (s p + t)|, started from median scaling.

    For a fixed s the best t is median(g - s p), and f(s) = min_t sum |g - s p - t| is convex, with
    slope -sum p sign(g - s p - t). Bracket the slope's sign change around the median-scaling start,
    then bisect: exact to ~2^-48 of the bracket, with no step size to tune (unlike an Adam or IRLS loop).
    """
    pred, gt = fit_subset(pred, gt, max_pixels)

    def slope_and_shift(scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        residual = gt - scale * pred
        shift = residual.median()
        return -(pred * torch.sign(residual - shift)).sum(), shift

    start = gt.median() / pred.median()
    if not torch.isfinite(start):  # over half the predictions are 0 (invalid depth after post-optimisation)
        nonzero = pred[pred != 0]
        start = gt.median() / nonzero.median() if nonzero.numel() else torch.ones((), dtype=pred.dtype, device=pred.device)
    width = start.abs().clamp_min(1e-6)
    low, high = start - width, start + width
    for _ in range(60):
        if slope_and_shift(low)[0] <= 0:
            break
        low, width = low - width, 2 * width
    for _ in range(60):
        if slope_and_shift(high)[0] >= 0:
            break
        high, width = high + width, 2 * width
    for _ in range(iterations):
        middle = (low + high) / 2
        slope, _ = slope_and_shift(middle)
        if slope == 0:
            low = high = middle
            break
        low, high = (middle, high) if slope < 0 else (low, middle)
    scale = (low + high) / 2
    return scale, slope_and_shift(scale)[1]


def _exact(align: str) -> Solver:
    """The exact fits on every pixel they are given (``depth_metrics`` takes the optional subset first)."""
    zero = lambda p: torch.zeros((), dtype=p.dtype, device=p.device)  # noqa: E731
    return {
        "scale&shift": lambda p, g: lad_scale_shift(p, g, max_pixels=None),
        "scale": lambda p, g: (lad_scale(p, g, max_pixels=None), zero(p)),
        "median": lambda p, g: (g.median() / p.median(), zero(p)),
        "none": lambda p, g: (torch.ones((), dtype=p.dtype, device=p.device), zero(p)),
    }[align]


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Protocol:
    """One evaluation procedure. The aligned prediction is ``scale * pred + shift`` of the solver's output."""

    source: str  # where the procedure is read from
    resize: str  # how the prediction reaches the gt resolution: ``metrics.resize_depth`` mode
    dtype: torch.dtype  # the prediction's (and the solver parameters') dtype
    gt_dtype: torch.dtype | None  # None: the gt's own dtype, float64 kept (their Bonn reader gives float64)
    vote_dtype: torch.dtype  # dtype in which delta's 0/1 votes are averaged
    solvers: dict[str, Solver]  # align -> solver


PEER_SCALE_SHIFT = partial(adam_lad, lr=1e-4, steps=1000)  # absolute_value_scaling2's defaults

PROTOCOLS = {
    # depth_metric.ipynb: cv2.resize(INTER_CUBIC) per frame of float32 predictions, depth_evaluation(
    # align_with_lad2=True, max_depth=70, post_clip_max=70 on Sintel only); "set align_with_lad2=False to use
    # median alignment"; depth_eval.py also has align_with_scale. GT: Sintel .dpt float32, Bonn PNG float64.
    "monst3r": Protocol("Junyi42/monst3r depth_metric.ipynb, dust3r/depth_eval.py", "opencv_cubic", torch.float32, None,
                        torch.float32, {"scale&shift": PEER_SCALE_SHIFT, "scale": irls_scale, "median": median_scale}),
    # eval/video_depth/eval_depth.py --align {scale&shift, scale, metric} (run.sh: scale); resize, readers and
    # post-clip as MonST3R; tools.py's depth_evaluation is MonST3R's plus metric_scale.
    "cut3r": Protocol("CUT3R/CUT3R eval/video_depth/eval_depth.py, tools.py, run.sh", "opencv_cubic", torch.float32, None,
                      torch.float32, {"scale&shift": PEER_SCALE_SHIFT, "scale": irls_scale, "none": no_alignment}),
    # scripts/evaluation/infer_geo4d.py: torchvision Resize(BICUBIC) on the (T, H, W) tensor (torch 2.0: no
    # antialias), both arrays .float(), depth_evaluation(max_depth=70, align_with_lad2=True, post_clip_max=70,
    # lr=1e-2, max_iters=5000) on every set but KITTI. Its align_mask (Geo4D's own sky / far-point mask)
    # has no counterpart in our predictions: every valid pixel is fitted.
    "geo4d": Protocol("jzr99/Geo4D scripts/evaluation/infer_geo4d.py, dust3r/depth_eval.py", "bicubic", torch.float32,
                      torch.float32, torch.float32, {"scale&shift": partial(adam_lad, lr=1e-2, steps=5000)}),
    # This project's exact L1 optimum (bisection; weighted median), float64, bilinear resize.
    "exact": Protocol("one4d.eval.protocols", "bilinear", torch.float64, torch.float64, torch.float64,
                      {align: _exact(align) for align in ("scale&shift", "scale", "median", "none")}),
}


def protocol_solver(protocol: str, align: str) -> tuple[Protocol, Solver]:
    """The protocol's row and its solver for ``align``; a one-line ValueError lists every valid combination."""
    row = PROTOCOLS.get(protocol)
    if row is None or align not in row.solvers:
        valid = "; ".join(f"{name}: {', '.join(entry.solvers)}" for name, entry in PROTOCOLS.items())
        raise ValueError(f"depth_metrics: no alignment {align!r} in protocol {protocol!r}; valid (protocol: alignments) are {valid}")
    return row, row.solvers[align]
