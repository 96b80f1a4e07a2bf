"""The latent cache stores the sparse counts Table 5 evaluates (issue 13, item 5); the tiny model's experiments keep theirs."""

import json

import pytest

from one4d.eval.runner import sparse_frame_indices
from one4d.training.cache import TABLE5_SPARSITIES, cache_from_config, table5_sparse_counts, task_frame_sets
from one4d.training.testing import compose_train_config, write_synthetic_clips


def test_table5_counts_at_81_frames():
    """max(2, round(r 81)) for r = 0.50 0.25 0.10 0.05 0.04 0.03: 41 20 8 4 3 2, as the evaluation observes them."""
    assert TABLE5_SPARSITIES == (0.50, 0.25, 0.10, 0.05, 0.04, 0.03)
    assert table5_sparse_counts() == table5_sparse_counts(81) == (2, 3, 4, 8, 20, 41)
    assert set(table5_sparse_counts(81)) == {len(sparse_frame_indices(81, r)) for r in TABLE5_SPARSITIES}
    assert sorted(task_frame_sets(81, table5_sparse_counts())) == [
        "full", "single", "sparse2", "sparse20", "sparse3", "sparse4", "sparse41", "sparse8"]
    assert task_frame_sets(81, [41])["sparse41"][:3] == [0, 2, 4] and task_frame_sets(81, [41])["sparse41"][-1] == 80


@pytest.mark.parametrize("experiment", ["tiny_base", "tiny_one4d"])
def test_the_shipped_tiny_models_experiments_keep_their_counts(experiment):
    assert list(compose_train_config([f"experiment={experiment}"]).cache_sparse_counts) == [2, 3]


@pytest.mark.parametrize("override, tasks", [
    ([], ["full", "single", "sparse2", "sparse5"]),  # Table 5's at 9 frames: max(2, round(r 9)) = 5 (0.5), else 2
    (["+cache_sparse_counts=[3]"], ["full", "single", "sparse3"]),
])
def test_the_cache_defaults_to_table5s_counts_and_takes_others(tmp_path, override, tasks):
    clips = write_synthetic_clips(tmp_path / "clips", count=1, num_frames=9, size=32)
    cfg = compose_train_config(["experiment=tiny_cpu", f"run_dir={tmp_path / 'run'}", f"data.roots=[{clips}]",
                                "data.num_frames=9", f"+cache_dir={tmp_path / 'cache'}", *override])
    folder = cache_from_config(cfg)
    assert json.loads((folder / "cache.json").read_text())["tasks"] == tasks
