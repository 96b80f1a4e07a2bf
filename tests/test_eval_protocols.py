"""depth_metrics(protocol=P) against plain re-implementations of each peer's published depth evaluation.

The reference below follows the peers' own code structure (MonST3R and Geo4D ``dust3r/depth_eval.py``
``depth_evaluation``, CUT3R ``eval/video_depth/tools.py``; resize and call settings from MonST3R's
``depth_metric.ipynb``, CUT3R's ``eval_depth.py`` and Geo4D's ``infer_geo4d.py``), written out by hand:
Adam's update and the L1 gradient are spelled out rather than taken from torch.optim and autograd, and
MonST3R / CUT3R resize with OpenCV itself when it is installed (opencv-python-headless). Agreement is
required to 1e-4 relative on the metrics, and to 1e-5 on the fitted scale and shift.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from one4d.eval import depth_metrics
from one4d.eval.protocols import PROTOCOLS

import cv2  # the reference resize of MonST3R and CUT3R (opencv-python-headless, a dependency)

PEER_COMBINATIONS = [(p, a) for p in ("monst3r", "cut3r", "geo4d") for a in PROTOCOLS[p].solvers]
SETTINGS = {"monst3r": (1e-4, 1000), "cut3r": (1e-4, 1000), "geo4d": (1e-2, 5000)}  # lad2 (lr, max_iters)


# ----------------------------------------------------------------------------- the reference


def reference_adam_l1(p, g, lr, max_iters, tol=1e-6, reduce="sum", init="median"):
    """``absolute_value_scaling2`` from median scaling: Adam (beta 0.9 / 0.999, eps 1e-8) on (s, t), summed L1.

    Returns (s, t, iterations run). ``reduce`` / ``init`` exist only to show the tests would notice a wrong one.
    """
    ratio = torch.median(g) / torch.median(p) if init == "median" else torch.mean(g) / torch.mean(p)
    s = torch.tensor([ratio.item()], dtype=p.dtype)
    t = torch.tensor([0.0], dtype=p.dtype)
    moments = [(torch.zeros_like(s), torch.zeros_like(s)), (torch.zeros_like(t), torch.zeros_like(t))]
    previous = None
    for step in range(1, max_iters + 1):
        residual = s * p + t - g
        loss = torch.abs(residual).sum() if reduce == "sum" else torch.abs(residual).mean()
        sign = torch.sign(residual).to(p.dtype) / (1 if reduce == "sum" else residual.numel())  # d loss / d (s p + t)
        gradients = [(sign * p).sum().reshape(1), sign.sum().reshape(1)]
        for param, gradient, (first, second) in zip((s, t), gradients, moments):
            first.lerp_(gradient, 0.1)
            second.mul_(0.999).addcmul_(gradient, gradient, value=0.001)
            correction1, correction2 = 1 - 0.9**step, 1 - 0.999**step
            denominator = (second.sqrt() / math.sqrt(correction2)).add_(1e-8)
            param.addcdiv_(first, denominator, value=-lr / correction1)
        if previous is not None and torch.abs(previous - loss) < tol:
            break
        previous = loss.item()
    return s.item(), t.item(), step


def reference_depth_evaluation(pred, gt, max_depth, post_clip_max, align, lr=1e-4, max_iters=1000, **mutation):
    """The peers' ``depth_evaluation`` on (F, H, W) tensors: mask, align, post-clip, Abs Rel and delta < 1.25."""
    _, _, w = pred.shape
    pred, gt = pred.reshape(-1, w), gt.reshape(-1, w)  # their .view(-1, w)
    mask = (gt > 0) & (gt < max_depth)
    p, g = pred[mask], gt[mask]
    s, t = 1.0, 0.0
    if align == "scale&shift":  # align_with_lad2
        s, t, _ = reference_adam_l1(p, g, lr, max_iters, **mutation)
        p = s * p + t
    elif align == "scale":  # align_with_scale: Weiszfeld-style reweighted least squares, 10 rounds
        s = torch.nanmean(g) / torch.nanmean(p)
        for _ in range(mutation.get("rounds", 10)):
            residuals = s * p - g
            weights = 1.0 / (residuals.abs() + 1e-8)
            s = torch.sum(weights * p * g) / torch.sum(weights * p**2)
        s = s.clamp(min=1e-3)
        p = s * p
    elif align == "median":  # no flag: median scaling
        s = torch.median(g) / torch.median(p)
        p = p * s
    if post_clip_max is not None:
        p = torch.clamp(p, max=post_clip_max)
    abs_rel = torch.mean(torch.abs(p - g) / g).item()
    p = torch.clamp(p, min=1e-5)
    delta = torch.mean((torch.maximum(p / g, g / p) < 1.25).float()).item()
    return {"abs_rel": abs_rel, "delta_1_25": delta, "valid_pixels": int(mask.sum()), "scale": float(s), "shift": float(t)}


def reference(protocol, align, pred, gt, post_clip_max, **mutation):
    """The peer's whole procedure on arrays: read dtypes, resize to the gt size, then ``depth_evaluation``."""
    h, w = gt.shape[1:]
    pred = np.asarray(pred, np.float32)  # their saved predictions are float32 .npy
    if protocol == "geo4d":  # torchvision Resize(BICUBIC) on a float tensor, torch 2.0: no antialias; both .float()
        pred = torch.from_numpy(pred)
        if pred.shape[1:] != (h, w):
            pred = F.interpolate(pred[None], size=(h, w), mode="bicubic", align_corners=False)[0]
        gt = torch.from_numpy(np.asarray(gt, np.float32))
    else:  # cv2.resize(np.load(path), (W, H), interpolation=cv2.INTER_CUBIC) per frame; gt as their readers give it
        if pred.shape[1:] != (h, w):
            pred = np.stack([cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC) for frame in pred])
        pred, gt = torch.from_numpy(pred), torch.from_numpy(np.asarray(gt))
    lr, max_iters = SETTINGS[protocol]
    return reference_depth_evaluation(pred, gt, 70, post_clip_max, align, mutation.pop("lr", lr),
                                      mutation.pop("max_iters", max_iters), **mutation)


# ----------------------------------------------------------------------------- cases


def make_case(frames, height, width, seed, half=False, gt_dtype=np.float32, scale=0.4, shift=1.5, outliers=0.1):
    """Structured depth (slanted planes and moving waves), invalid zeros and far pixels, a prediction that is
    the gt under a scale and shift with noise and outliers (some negative), optionally at half resolution."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    gt = np.stack([2 + 6 * y + 1.5 * np.sin(2 * np.pi * (2 * x + f / max(frames, 1))) + 3 * (x > 0.6 + 0.05 * f)
                   for f in range(frames)])
    pred = (scale * gt + shift) * (1 + 0.05 * rng.standard_normal(gt.shape))
    bad = rng.random(gt.shape) < outliers
    pred[bad] = rng.uniform(-1.0, 30.0, int(bad.sum()))
    gt[rng.random(gt.shape) < 0.05] = 0.0  # holes
    gt[:, : height // 6, : width // 5] = 1e3  # beyond max_depth (sky)
    if half:
        pred = pred[:, ::2, ::2]
    return pred.astype(np.float32), gt.astype(gt_dtype)


CASES = {
    "one frame": dict(frames=1, height=40, width=56, seed=0),
    "three frames, half resolution": dict(frames=3, height=36, width=48, seed=1, half=True),
    "six frames, float64 gt (Bonn)": dict(frames=6, height=20, width=28, seed=2, gt_dtype=np.float64),
    "large offsets": dict(frames=2, height=30, width=40, seed=3, scale=0.05, shift=-0.2),  # Geo4D: all 5000 steps
    "large offsets, half resolution": dict(frames=2, height=30, width=40, seed=3, half=True, scale=0.05, shift=-0.2),
    "clean, pure scale": dict(frames=4, height=24, width=30, seed=4, shift=0.0, outliers=0.0),
}


def assert_agrees(ours: dict, theirs: dict, tolerance: float = 1e-4) -> None:
    assert ours["valid_pixels"] == theirs["valid_pixels"]
    for key in ("abs_rel", "delta_1_25"):
        assert ours[key] == pytest.approx(theirs[key], rel=tolerance), key
    for key in ("scale", "shift"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-9), key


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("protocol, align", PEER_COMBINATIONS)
def test_protocol_agrees_with_the_peer_reference(protocol, align, case):
    pred, gt = make_case(**CASES[case])
    for clip in (None, 70.0) if protocol != "geo4d" else (70.0,):  # MonST3R / CUT3R: Sintel 70, Bonn none
        ours = depth_metrics(pred, gt, align=align, max_depth=70.0, post_clip_max=clip, protocol=protocol)
        assert ours["protocol"] == protocol
        assert_agrees(ours, reference(protocol, align, pred, gt, clip))


def test_cases_are_not_trivial():
    """Every case has offsets for alignment to remove, pixels for the mask and the clip to drop."""
    for case, settings in CASES.items():
        pred, gt = make_case(**settings)
        raw = depth_metrics(pred, gt, align="none", protocol="exact")
        assert raw["abs_rel"] > 0.2 and raw["valid_pixels"] < gt.size, case
    pred, gt = make_case(**CASES["one frame"])
    assert depth_metrics(pred, gt, post_clip_max=5.0)["abs_rel"] != depth_metrics(pred, gt, post_clip_max=None)["abs_rel"]


def test_the_early_stop_is_reached_in_some_cases_and_not_in_others():
    """Geo4D's 5000 Adam steps end on a float32 loss tie in some cases; MonST3R's 1000 run to the end."""
    runs = {}
    for case, settings in CASES.items():
        pred, gt = make_case(**{**settings, "half": False})
        valid = (gt > 0) & (gt < 70)
        p, g = torch.from_numpy(pred)[torch.from_numpy(valid)], torch.from_numpy(gt.astype(np.float32))[torch.from_numpy(valid)]
        runs[case] = (reference_adam_l1(p, g, 1e-2, 5000)[2], reference_adam_l1(p, g, 1e-4, 1000)[2])
    assert any(geo4d < 5000 for geo4d, _ in runs.values()) and any(geo4d == 5000 for geo4d, _ in runs.values()), runs
    assert all(monst3r == 1000 for _, monst3r in runs.values()), runs


@pytest.mark.parametrize("protocol", ["monst3r", "geo4d"])
def test_a_wrong_setting_would_be_caught(protocol):
    """The reference with one setting changed disagrees with depth_metrics: the cases pin each setting down."""
    lr, steps = SETTINGS[protocol]
    mutations = {"lr": dict(lr=lr * 1.5), "mean loss": dict(reduce="mean"), "mean init": dict(init="mean"),
                 "steps": dict(max_iters=steps - 1)}
    for name, mutation in mutations.items():
        caught = []
        for case, settings in CASES.items():
            pred, gt = make_case(**{**settings, "half": False})
            ours = depth_metrics(pred, gt, max_depth=70.0, post_clip_max=70.0, protocol=protocol)
            wrong = reference(protocol, "scale&shift", pred, gt, 70.0, **dict(mutation))
            caught.append(abs(wrong["shift"] - ours["shift"]) > 1e-6 * (1 + abs(ours["shift"]))
                          or abs(wrong["abs_rel"] - ours["abs_rel"]) > 1e-4 * ours["abs_rel"])
        assert any(caught), f"{protocol}: a wrong {name} goes unnoticed"


def test_scale_rounds_median_and_resize_would_be_caught():
    pred, gt = make_case(**CASES["three frames, half resolution"])
    ours = depth_metrics(pred, gt, align="scale", post_clip_max=70.0, protocol="cut3r")
    assert reference("cut3r", "scale", pred, gt, 70.0, rounds=9)["scale"] != pytest.approx(ours["scale"], rel=1e-6)
    bilinear = F.interpolate(torch.from_numpy(pred)[None], size=gt.shape[1:], mode="bilinear", align_corners=False)[0]
    assert depth_metrics(bilinear.numpy(), gt, protocol="geo4d")["abs_rel"] != pytest.approx(
        depth_metrics(pred, gt, protocol="geo4d")["abs_rel"], rel=1e-4)
    gt = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)  # an even count: torch's lower median 2, not 2.5
    assert depth_metrics(np.ones_like(gt), gt, align="median", protocol="monst3r")["scale"] == 2.0


@pytest.mark.parametrize("size", [(218, 512, 436, 1024), (30, 40, 47, 61), (48, 64, 24, 32)])
def test_torch_bicubic_is_opencv_inter_cubic_up_to_rounding(size):
    h, w, height, width = size
    image = (1 + 20 * np.random.default_rng(0).random((h, w))).astype(np.float32)
    theirs = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    ours = F.interpolate(torch.from_numpy(image)[None, None], size=(height, width), mode="bicubic", align_corners=False)[0, 0]
    assert np.abs(ours.numpy() - theirs).max() <= 1e-5 * np.abs(theirs).max()


# ----------------------------------------------------------------------------- bad input


def test_unknown_protocol_or_unsupported_alignment_is_one_line_listing_the_combinations():
    pred, gt = make_case(**CASES["one frame"])
    for protocol, align in (("dust3r", "scale&shift"), ("geo4d", "scale"), ("monst3r", "none"), ("cut3r", "median")):
        with pytest.raises(ValueError) as error:
            depth_metrics(pred, gt, align=align, protocol=protocol)
        message = str(error.value)
        assert "\n" not in message and repr(protocol) in message and repr(align) in message
        assert "monst3r: scale&shift, scale, median; cut3r: scale&shift, scale, none; geo4d: scale&shift;" in message


def test_solvers_run_on_the_prediction_device_in_float32():
    pred, gt = make_case(**CASES["one frame"])
    result = depth_metrics(torch.from_numpy(pred).double(), torch.from_numpy(gt), protocol="geo4d")
    assert result == depth_metrics(pred, gt, protocol="geo4d")  # a float64 prediction is read as float32, as theirs
