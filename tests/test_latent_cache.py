"""LatentCacheDataset keeps one open handle per shard and still pickles (DataLoader workers, spawn)."""

import pickle

import torch
from safetensors import safe_open
from torch.utils.data import DataLoader

from one4d.training.cache import LatentCacheDataset, cache_from_config
from one4d.training.testing import compose_train_config, write_synthetic_clips


def test_reads_are_the_shards_tensors_in_every_process(tmp_path):
    clips = write_synthetic_clips(tmp_path / "clips", count=3, num_frames=5, size=32)
    cfg = compose_train_config(["experiment=tiny_cpu", f"run_dir={tmp_path / 'run'}", f"data.roots=[{clips}]",
                                "data.num_frames=5", f"+cache_dir={tmp_path / 'cache'}"])
    folder = cache_from_config(cfg)
    dataset = LatentCacheDataset(folder, num_frames=5, height=32, width=32)
    first = dataset[1]
    with safe_open(folder / dataset._keys["1.xyz_latents"], "pt") as handle:
        assert torch.equal(first["xyz_latents"], handle.get_tensor("1.xyz_latents").float())
    assert dataset._handles  # the shard stays open after a read

    copy = pickle.loads(pickle.dumps(dataset))  # what a spawned worker receives: no handles, opened there again
    assert copy._handles == {}
    for key, value in copy[1].items():
        assert torch.equal(value, first[key]), key

    def batches(workers: int) -> list[dict]:
        return list(DataLoader(dataset, batch_size=2, num_workers=workers, shuffle=False))

    for in_process, in_worker in zip(batches(0), batches(1)):
        assert in_process.keys() == in_worker.keys()
        for key in in_process:
            assert torch.equal(in_process[key], in_worker[key]), key


def test_a_cache_encoded_in_two_processes_is_the_same_file_by_file(tmp_path):
    """make tiny-model encodes its cache in one process per thread (+cache_workers); shards, index and order must not
    depend on it."""
    clips = write_synthetic_clips(tmp_path / "clips", count=5, num_frames=5, size=32)
    folders = {}
    for workers in (1, 2):
        cfg = compose_train_config(["experiment=tiny_cpu", f"run_dir={tmp_path / 'run'}", f"data.roots=[{clips}]",
                                    "data.num_frames=5", f"+cache_dir={tmp_path / f'cache{workers}'}",
                                    f"+cache_workers={workers}"])
        folders[workers] = cache_from_config(cfg)
    names = sorted(path.name for path in folders[1].iterdir())
    assert names == sorted(path.name for path in folders[2].iterdir()) and "cache.json" in names
    for name in names:
        assert (folders[1] / name).read_bytes() == (folders[2] / name).read_bytes(), name
