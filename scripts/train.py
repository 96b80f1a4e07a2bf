"""Train One4D: compose the Hydra config (configs/train.yaml) and run the trainer.

    python scripts/train.py experiment=tiny_cpu data.roots=[data/synthetic] run_dir=outputs/train/tiny
    python scripts/train.py experiment=tiny_cpu data.roots=[data/synthetic] run_dir=outputs/train/tiny train.resume=latest
    torchrun --nproc_per_node 8 scripts/train.py experiment=one4d_14b data.roots=[...] model.transformer=... model.components=...

Prints its run directory, each checkpoint and the command that continues the run; ``threads=N`` sets the CPU
threads (one4d.runtime). Bad input: one line on stderr, exit 2.
"""

import hydra
from hydra.core.hydra_config import HydraConfig

from one4d.runtime import check_required, configure_cpu_threads, one_line_errors, run_script


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
@one_line_errors
def main(cfg) -> None:
    check_required(cfg)
    from one4d.training import run  # after Hydra composed the config: a config error costs no torch import

    configure_cpu_threads(cfg.get("threads"))
    run(cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    run_script(main)
