"""The training dataset: clip folders -> RGB, normalised XYZ, cameras, observed frames and caption.

One sample is F = 4k + 1 frames taken with a stride from a random start, cropped to the target
aspect ratio and resized to (H, W) (multiples of 16), with pointmaps re-expressed in the
SAMPLED first frame's camera and normalised by one similarity for the whole sample (one4d.geometry
.pointmap_normalization). The stored meta.json normalisation is for the whole stored clip; a sample starting
later or cropped differently needs its own, so it is recomputed here and returned.

Several roots can be mixed with weights (the paper mixes synthetic and real clips). Bad clips
(:class:`ClipError`) are skipped, counted in ``bad_clips`` (per process) and logged once; the
sample is replaced by a deterministic draw of another clip. Everything random comes from a
generator seeded by (seed, epoch, index), so results do not depend on the worker layout.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from one4d.conditioning import TASK_PROBABILITIES, observed_mask, sample_observed
from one4d.data.clip import ClipError, read_clip, read_meta
from one4d.geometry import (
    crop_intrinsics,
    invert_pose,
    normalize_pointmaps,
    pointmap_normalization,
    relative_to_first,
    resize_intrinsics,
    transform_points,
)

logger = logging.getLogger(__name__)
MAX_REPLACEMENTS = 16  # consecutive bad clips tolerated for one sample before giving up
NORMALISATION_POINTS = 1 << 20  # points used to estimate a sample's normalisation bounds


class ClipDataset(Dataset):
    """Samples of ``num_frames`` frames at ``height`` x ``width`` from clip folders under ``roots``.

    Args:
        roots: one folder or a list of folders; each holds one sub-folder per clip.
        num_frames: frames per sample, 4k + 1 (Wan VAE).
        height, width: output size, multiples of 16 (VAE x8, patch x2).
        frame_stride: step between sampled frames of the stored clip.
        weights: per-root sampling weights. None: every clip once per epoch in order (shuffle
            with the DataLoader). Given: each index draws a root by weight, then a clip.
        seed: base seed; with :meth:`set_epoch` and the index it fixes every random choice.
        length: samples per epoch (default: the number of usable clips).
        crop: "center" or "random" placement of the aspect-ratio crop.
        task_probabilities: single / sparse / full draw for the observed frames.
        quantile: robust bound used by the per-sample pointmap normalisation.
    """

    def __init__(
        self,
        roots,
        num_frames: int,
        height: int,
        width: int,
        frame_stride: int = 1,
        weights=None,
        seed: int = 0,
        length: int | None = None,
        crop: str = "center",
        task_probabilities=TASK_PROBABILITIES,
        quantile: float = 0.02,
    ):
        if num_frames < 1 or (num_frames - 1) % 4 != 0:
            raise ValueError(f"num_frames must be 4k + 1 (Wan VAE), got {num_frames}")
        if height <= 0 or width <= 0 or height % 16 or width % 16:
            raise ValueError(f"height and width must be positive multiples of 16 (VAE x8, patch x2), got {height}x{width}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be at least 1, got {frame_stride}")
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
        roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(root) for root in roots]
        if not roots:
            raise ValueError("ClipDataset needs at least one dataset root")
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(roots) or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"weights must be one non-negative number per root with a positive sum, got {weights} for {len(roots)} roots")
        self.num_frames, self.height, self.width = num_frames, height, width
        self.frame_stride, self.seed, self.crop = frame_stride, seed, crop
        self.task_probabilities, self.quantile = tuple(task_probabilities), quantile
        self.span = (num_frames - 1) * frame_stride + 1  # stored frames one sample covers
        self.epoch = 0
        self.bad_clips: dict[str, str] = {}  # clip folder -> problem, in this process

        self.clips: list[list[tuple[Path, dict]]] = [self._scan(root) for root in roots]
        self._usable, self._usable_for = self.clips, len(self.bad_clips)  # clips not known to be bad
        self.flat = [clip for clips in self.clips for clip in clips]
        self.weights = weights
        self.length = len(self.flat) if length is None else int(length)
        if self.length < 1:
            raise ValueError(f"length must be at least 1, got {length}")

    # ------------------------------------------------------------------ construction

    def _scan(self, root: Path) -> list[tuple[Path, dict]]:
        """Usable clips of one root, with their meta; fails now rather than an hour into training."""
        if not root.is_dir():
            raise ValueError(f"dataset root {root} does not exist or is not a folder")
        folders = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
        if not folders:
            raise ValueError(f"dataset root {root} holds no clip folder; write clips with scripts/make_dataset.py or see data/README.md")
        clips = []
        for folder in folders:
            try:
                meta = read_meta(folder)
                if int(meta["num_frames"]) < self.span:
                    raise ClipError(folder, f"has {meta['num_frames']} frames, fewer than one sample needs ({self.num_frames} frames at stride {self.frame_stride} = {self.span})")
            except ClipError as error:
                self._skip(error)
                continue
            clips.append((folder, meta))
        if not clips:
            raise ValueError(f"dataset root {root}: none of its {len(folders)} clip folders is usable (see the warnings above)")
        return clips

    def _skip(self, error: ClipError) -> None:
        """Count a bad clip and log it the first time this process sees it."""
        if error.folder not in self.bad_clips:
            self.bad_clips[error.folder] = error.problem
            logger.warning("skipping %s (%d bad clips so far in this process)", error, len(self.bad_clips))

    # ------------------------------------------------------------------ sampling

    def set_epoch(self, epoch: int) -> None:
        """Change every random choice for a new epoch (call before creating the loader's iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _draw_clip(self, generator: torch.Generator) -> tuple[Path, dict]:
        """A clip by root weight, then uniformly within the root (known-bad clips excluded)."""
        weights = torch.tensor(self.weights if self.weights is not None else [len(c) for c in self.clips], dtype=torch.float64)
        if self._usable_for != len(self.bad_clips):  # refilter only when a new bad clip was found
            self._usable = [[clip for clip in clips if str(clip[0]) not in self.bad_clips] for clips in self.clips]
            self._usable_for = len(self.bad_clips)
        usable = self._usable
        weights = weights * torch.tensor([bool(clips) for clips in usable], dtype=torch.float64)
        if weights.sum() <= 0:
            raise RuntimeError(f"every clip of this dataset is bad ({len(self.bad_clips)} skipped); see the warnings above")
        clips = usable[int(torch.multinomial(weights, 1, generator=generator))]
        return clips[int(torch.randint(len(clips), (1,), generator=generator))]

    def __getitem__(self, index: int) -> dict:
        generator = self._generator(index)
        clip = self.flat[index % len(self.flat)] if self.weights is None else self._draw_clip(generator)
        skipped = 0
        for _ in range(MAX_REPLACEMENTS):
            if str(clip[0]) not in self.bad_clips:
                try:
                    sample = self.load_sample(clip[0], int(clip[1]["num_frames"]), generator)
                    sample["skipped"] = skipped
                    return sample
                except ClipError as error:
                    self._skip(error)
            skipped += 1
            clip = self._draw_clip(generator)
        raise RuntimeError(f"{MAX_REPLACEMENTS} clips in a row were bad while building sample {index}; check the dataset (warnings above)")

    def load_sample(self, folder: Path, stored_frames: int, generator: torch.Generator) -> dict:
        """Read, crop, resize and normalise one sample of a clip; raises ClipError on bad data."""
        start = int(torch.randint(stored_frames - self.span + 1, (1,), generator=generator))
        frames = list(range(start, start + self.span, self.frame_stride))
        clip = read_clip(folder, frames)

        # Pointmaps were stored in the clip's frame 0; move them to the sampled first frame.
        pointmaps = clip.pointmaps  # (F, h, w, 3)
        if start != 0:
            stored_to_first = (clip.world_to_camera[0] @ invert_pose(clip.reference_world_to_camera)).float()
            pointmaps = transform_points(pointmaps, stored_to_first.expand(len(frames), 4, 4))
        rgb, pointmaps, depth, intrinsics = self._crop_and_resize(clip.rgb, pointmaps, clip.depth, clip.intrinsics.float(), generator)
        valid = depth > 0  # (F, H, W)
        if not valid.any():
            raise ClipError(folder, f"no valid depth (> 0) in frames {frames[0]}..{frames[-1]}")
        # Robust bounds from a regular pixel subsample of about NORMALISATION_POINTS points: the 2%
        # quantiles barely move, and exact ones over 81x352x624 points cost seconds per sample.
        step = max(1, int((valid.numel() / NORMALISATION_POINTS) ** 0.5))
        centre, scale = pointmap_normalization(pointmaps[:, ::step, ::step], valid[:, ::step, ::step], self.quantile)
        xyz = normalize_pointmaps(pointmaps, centre, scale) * valid[..., None]  # invalid pixels at 0

        task, observed = sample_observed(self.num_frames, generator, self.task_probabilities)
        return {
            "rgb": rgb.permute(3, 0, 1, 2) * 2 - 1,  # (3, F, H, W) in [-1, 1]
            "xyz": xyz.permute(3, 0, 1, 2).contiguous(),  # (3, F, H, W) in [-1, 1]
            "depth": depth,  # (F, H, W) metric z, 0 = invalid
            "valid": valid,  # (F, H, W)
            "intrinsics": intrinsics,  # (F, 3, 3) at (H, W)
            "world_to_camera": relative_to_first(clip.world_to_camera).float(),  # (F, 4, 4), frame 0 == identity
            "norm_centre": centre.float(),  # (3,)
            "norm_scale": scale.float(),  # ()
            "observed": observed_mask(observed, self.num_frames),  # (F,) bool
            "task": task,
            "frames": torch.tensor(frames),  # (F,) stored frame indices
            "caption": str(clip.meta.get("caption", "")),
            "source": str(clip.meta.get("source", "unknown")),
            "clip": clip.name,
        }

    def _crop_and_resize(self, rgb, pointmaps, depth, intrinsics, generator):
        """Crop to the target aspect ratio, then resize: RGB bilinear (antialiased), geometry nearest.

        Nearest for pointmaps and depth: interpolating across a depth edge would invent points
        floating between foreground and background.
        """
        height, width = rgb.shape[1:3]
        scale = max(self.height / height, self.width / width)
        crop_h, crop_w = min(height, round(self.height / scale)), min(width, round(self.width / scale))
        if self.crop == "center":
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
        else:
            top = int(torch.randint(height - crop_h + 1, (1,), generator=generator))
            left = int(torch.randint(width - crop_w + 1, (1,), generator=generator))
        window = (slice(None), slice(top, top + crop_h), slice(left, left + crop_w))
        rgb, pointmaps, depth = rgb[window], pointmaps[window], depth[window]
        intrinsics = crop_intrinsics(intrinsics, top, left)
        if (crop_h, crop_w) != (self.height, self.width):
            size = (self.height, self.width)
            rgb = F.interpolate(rgb.permute(0, 3, 1, 2), size=size, mode="bilinear", antialias=True, align_corners=False)
            rgb = rgb.clamp(0, 1).permute(0, 2, 3, 1)  # (F, H, W, 3)
            pointmaps = F.interpolate(pointmaps.permute(0, 3, 1, 2), size=size, mode="nearest-exact").permute(0, 2, 3, 1)
            depth = F.interpolate(depth[:, None], size=size, mode="nearest-exact")[:, 0]  # (F, H, W)
            intrinsics = resize_intrinsics(intrinsics, self.width / crop_w, self.height / crop_h)
        return rgb.contiguous(), pointmaps.contiguous(), depth.contiguous(), intrinsics
