"""Encode every clip once (VAE latents, UMT5 and CLIP embeddings) into a latent cache for training.

    python scripts/cache_latents.py data.roots=[data/synthetic] +cache_dir=outputs/cache/tiny
    python scripts/train.py experiment=tiny_cpu data.cache=outputs/cache/tiny
Uses the same config as training (configs/train.yaml), so the cache matches the run's size and VAE; it writes
nothing but the cache (no run folder). ``threads=N`` sets the CPU threads (one4d.runtime).
The sparse task is cached at the observed-frame counts the paper's Table 5 evaluates (at 81 frames:
2, 3, 4, 8, 20, 41; one4d.training.cache.table5_sparse_counts); `cache_sparse_counts: [...]` in an
experiment (or +cache_sparse_counts=[...]) stores others, as the tiny model's experiments pin [2, 3].
"""

import hydra

from one4d.runtime import check_required, configure_cpu_threads, one_line_errors, run_script


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
@one_line_errors
def main(cfg) -> None:
    check_required(cfg)
    from one4d.training.cache import cache_from_config  # after Hydra composed the config

    configure_cpu_threads(cfg.get("threads"))
    print(cache_from_config(cfg))


if __name__ == "__main__":
    run_script(main)
