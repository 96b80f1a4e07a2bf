"""Latent, text and CLIP caching: encode every clip once, then train without the VAE or the text encoder.

A cache folder holds safetensors shards (``shard-00000.safetensors`` ...) with, per sample ``i``:

    i.rgb_latents (16, f, h, w)  i.xyz_latents (16, f, h, w)  i.text_embeds (512, text_dim)
    i.image_embeds (tokens, image_dim)  i.cond.single / i.cond.full / i.cond.sparse<k> (20, f, h, w)

where ``cond.*`` are the UMC channels (mask 4 + condition latents 16) of each task's observed frames
(sparse: ``sparse_counts`` frames, first/last/uniform; default: the counts Table 5 evaluates, see
:func:`table5_sparse_counts`, since training from raw clips draws any count 2 .. F-1 and the cache can
hold only some). ``empty_prompt.safetensors`` holds the empty
prompt's embedding for prompt dropout, and ``cache.json`` the fingerprint: VAE hash, frame count,
resolution. A cache built for another VAE, size or frame count is refused at load.

The cache stores one sample per clip (the dataset's epoch-0 frames and crop); the training task is
drawn per (seed, epoch, index) among the cached ones with the configured probabilities.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from one4d.conditioning import TASKS, observed_frames, observed_mask, spread_frames
from one4d.encoding import Encoders, encode_prompt, encode_video
from one4d.runtime import ordered_in_processes, raise_if_stopped

from one4d.conditioning import UNOBSERVED_FILL
from one4d.encoding import condition_latents, first_observed_image_embeds

FORMAT_VERSION = 1
INDEX_NAME, EMPTY_PROMPT_NAME = "cache.json", "empty_prompt.safetensors"

# The sparsity ratios of the paper's Table 5 (sparse-frame reconstruction on Sintel and Bonn; issue 13).
TABLE5_SPARSITIES = (0.50, 0.25, 0.10, 0.05, 0.04, 0.03)


def table5_sparse_counts(num_frames: int = 81) -> tuple[int, ...]:
    """The observed-frame counts Table 5 evaluates on a clip of ``num_frames``: max(2, round(r F)) for its
    ratios (the evaluation rule, :func:`one4d.conditioning.observed_frames`); at 81 frames (2, 3, 4, 8, 20, 41)."""
    return tuple(sorted({len(observed_frames("sparse", num_frames, sparsity=r)) for r in TABLE5_SPARSITIES}))


def task_frame_sets(num_frames: int, sparse_counts: list[int]) -> dict[str, list[int]]:
    """The observed frames of every cached task: "single", "full" and "sparse<k>" for each count k."""
    sets = {"single": [0], "full": list(range(num_frames))}
    for count in sparse_counts:
        if 2 <= count < num_frames:
            sets[f"sparse{count}"] = spread_frames(count, num_frames)
    return sets


@torch.no_grad()
def build_cache(dataset, encoders: Encoders, folder: str | Path, vae: str, sparse_counts=None,
                shard_size: int = 256, dtype: torch.dtype = torch.float32, progress: bool = True,
                condition_fill: float = UNOBSERVED_FILL, workers: int = 1, load_encoders=None) -> Path:
    """Encode every sample of ``dataset`` (epoch 0) into shards under ``folder``; ``vae`` is the encoders' fingerprint.
    ``sparse_counts``: the sparse tasks' observed-frame counts; None: Table 5's at the clips' frame count.
    ``workers`` > 1: encode in that many CPU processes of one thread, each with its own encoders from
    ``load_encoders()`` (a picklable callable; models themselves lose transformers' output hooks when pickled): for
    small encoders, the tiny build's, whose encodes are as fast on one thread as on two and the same bit for bit."""
    if workers > 1 and load_encoders is None:
        raise ValueError("encoding in several processes needs load_encoders, a callable that loads them in each")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dataset.set_epoch(0)
    num_frames = dataset.num_frames
    tasks = task_frame_sets(num_frames, list(table5_sparse_counts(num_frames) if sparse_counts is None else sparse_counts))
    shards, tensors = [], {}

    def flush():
        if tensors:
            name = f"shard-{len(shards):05d}.safetensors"
            save_file(tensors, folder / name)
            shards.append(name)
            tensors.clear()

    job, indices = (dataset, encoders, tasks, condition_fill, dtype), range(len(dataset))
    with _entries(job, indices, workers, load_encoders) as entries:
        numbered = zip(indices, entries)
        if progress:
            from tqdm.auto import tqdm

            numbered = tqdm(numbered, total=len(indices), desc="cache", dynamic_ncols=True)
        for index, entry in numbered:
            raise_if_stopped()
            for key, value in entry.items():
                tensors[f"{index}.{key}"] = value
            if len(tensors) >= shard_size * len(entry):
                flush()
    flush()
    save_file({"text_embeds": encode_prompt(encoders.tokenizer, encoders.text_encoder, [""])[0].contiguous()}, folder / EMPTY_PROMPT_NAME)
    index = {
        "format_version": FORMAT_VERSION,
        "fingerprint": {"vae": vae, "num_frames": num_frames, "height": dataset.height, "width": dataset.width},
        "count": len(dataset), "shards": shards, "tasks": sorted(tasks), "shard_size": shard_size,
    }
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=1))
    return folder


def _sample_entry(job: tuple, index: int) -> dict[str, torch.Tensor]:
    """One sample's cache entry (names without the index) from ``job`` = (dataset, encoders, tasks, fill, dtype)."""
    dataset, encoders, tasks, condition_fill, dtype = job
    num_frames = dataset.num_frames
    sample = dataset[index]
    rgb, xyz = sample["rgb"][None], sample["xyz"][None]  # (1, 3, F, H, W)
    entry = {
        "rgb_latents": encode_video(encoders.vae, rgb)[0],  # (16, f, h, w): the posterior mode
        "xyz_latents": encode_video(encoders.vae, xyz)[0],
        "text_embeds": encode_prompt(encoders.tokenizer, encoders.text_encoder, [sample["caption"]])[0],  # (512, D)
    }
    image = first_observed_image_embeds(encoders, rgb, observed_mask([0], num_frames)[None])
    if image is not None:
        entry["image_embeds"] = image[0]
    for task, frames in tasks.items():
        entry[f"cond.{task}"] = condition_latents(encoders, rgb, observed_mask(frames, num_frames)[None], condition_fill)[0]  # (20, f, h, w)
    return {key: value.to(dtype).contiguous() for key, value in entry.items()}


@contextlib.contextmanager
def _entries(job: tuple, indices, workers: int, load_encoders):
    """The entries of ``indices`` in order: here, or in ``workers`` processes (one4d.runtime.ordered_in_processes)."""
    if workers == 1:
        yield (_sample_entry(job, index) for index in indices)
        return
    dataset, _, *rest = job
    with ordered_in_processes(_worker_entry, list(indices), workers, initializer=_receive_job,
                              initargs=((dataset, load_encoders, *rest),)) as entries:
        yield entries


_JOB: tuple | None = None  # a cache worker's (dataset, encoders, tasks, fill, dtype)


def _receive_job(job: tuple) -> None:
    """A worker's start: the job with ``load_encoders`` in the encoders' place, which it calls."""
    global _JOB
    dataset, load_encoders, *rest = job
    _JOB = (dataset, load_encoders().to("cpu"), *rest)  # .to: eval mode and frozen, as the parent's


def _worker_entry(index: int) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return _sample_entry(_JOB, index)

class LatentCacheDataset(Dataset):
    """Samples of a cache folder, checked against the run's frame count, resolution and VAE fingerprint."""

    def __init__(self, folder, num_frames: int, height: int, width: int, vae: str | None = None, seed: int = 0,
                 task_probabilities=(0.35, 0.30, 0.35)):
        self.folder = Path(folder)
        path = self.folder / INDEX_NAME
        if not path.is_file():
            raise ValueError(f"data.cache={folder} is not a latent cache (no {INDEX_NAME}); build one with scripts/cache_latents.py")
        index = json.loads(path.read_text())
        found = index["fingerprint"]
        expected = {"num_frames": num_frames, "height": height, "width": width}
        if vae is not None:
            expected["vae"] = vae
        wrong = [f"{key} {found.get(key)} (run: {value})" for key, value in expected.items() if found.get(key) != value]
        if wrong:
            raise ValueError(f"latent cache {folder} was built for another setup: {', '.join(wrong)}; rebuild it with scripts/cache_latents.py")
        self.num_frames, self.height, self.width = num_frames, height, width
        self.count, self.shards, self.tasks = int(index["count"]), index["shards"], index["tasks"]
        self.shard_size, self.seed, self.epoch = int(index["shard_size"]), seed, 0
        self.task_probabilities = tuple(float(p) for p in task_probabilities)
        self.empty_prompt = load_file(self.folder / EMPTY_PROMPT_NAME)["text_embeds"]
        self._keys = {}
        for shard in self.shards:
            with safe_open(self.folder / shard, "pt") as handle:
                for key in handle.keys():
                    self._keys[key] = shard
        self._handles = {}  # shard -> open safe_open handle, opened on first read in each process

    def __getstate__(self) -> dict:
        """Pickled (DataLoader workers under spawn) without the open handles: each process opens its own."""
        return {**self.__dict__, "_handles": {}}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.count

    def _task(self, index: int) -> str:
        """A cached task drawn with the training probabilities (sparse: one of the cached sparse sets)."""
        state = np.random.SeedSequence([self.seed, self.epoch, index, 7]).generate_state(2, dtype=np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        sparse = [task for task in self.tasks if task.startswith("sparse")]
        weights = torch.tensor([p if (task != "sparse" or sparse) else 0.0 for task, p in zip(TASKS, self.task_probabilities)], dtype=torch.float64)
        task = TASKS[int(torch.multinomial(weights, 1, generator=generator))]
        if task == "sparse":
            return sparse[int(torch.randint(len(sparse), (1,), generator=generator))]
        return task

    def read(self, index: int, name: str) -> torch.Tensor | None:
        key = f"{index}.{name}"
        if key not in self._keys:
            return None
        shard = self._keys[key]
        if shard not in self._handles:  # reopening a shard per tensor parses its 2048-key header each time: 1.7 ms
            self._handles[shard] = safe_open(self.folder / shard, "pt")  # a read, 65 ms of a 0.43 s tiny One4D step
        return self._handles[shard].get_tensor(key).float()

    def __getitem__(self, index: int) -> dict:
        sample = {name: self.read(index, name) for name in ("rgb_latents", "xyz_latents", "text_embeds", "image_embeds")}
        sample["condition"] = self.read(index, f"cond.{self._task(index)}")  # (20, f, h, w)
        if sample["image_embeds"] is None:
            sample.pop("image_embeds")
        return sample


__all__ = ["build_cache", "LatentCacheDataset", "task_frame_sets", "table5_sparse_counts"]


def cache_from_config(cfg) -> Path:
    """The body of ``scripts/cache_latents.py``: raw clips of ``cfg.data`` encoded with ``cfg.model.components`` into ``cfg.cache_dir``;
    ``cache_sparse_counts`` (optional, e.g. ``+cache_sparse_counts=[2,3]``) overrides Table 5's counts;
    ``cache_workers`` (optional, ``+cache_workers=2``) encodes in that many CPU processes (see :func:`build_cache`;
    with a GPU the encoders run in this process)."""
    from one4d.encoding import load_encoders, vae_fingerprint

    from .builders import build_dataset, encoder_dtype, encoder_settings

    if not cfg.get("cache_dir"):
        raise ValueError("give the output folder: +cache_dir=<folder>")
    from omegaconf import OmegaConf

    dataset = build_dataset(OmegaConf.merge(cfg.data, {"cache": None}), seed=int(cfg.train.seed))
    encoders = load_encoders(cfg.model.components, dtype=encoder_dtype(cfg.model), seed=int(cfg.model.components_seed))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoders.to(device)
    workers = int(cfg.get("cache_workers") or 1) if device == "cpu" else 1
    if workers < 1:
        raise ValueError(f"cache_workers must be at least 1, got {workers}")
    fingerprint = vae_fingerprint(cfg.model.components, int(cfg.model.components_seed), encoder_settings(cfg.model))
    counts = cfg.get("cache_sparse_counts")
    counts = None if counts is None else tuple(int(count) for count in counts)
    reload = functools.partial(load_encoders, cfg.model.components, dtype=encoder_dtype(cfg.model),
                               seed=int(cfg.model.components_seed))  # what each CPU worker loads
    return build_cache(dataset, encoders, cfg.cache_dir, vae=fingerprint, sparse_counts=counts,
                       condition_fill=float(cfg.model.condition_fill), workers=workers, load_encoders=reload)
