"""Evaluate on Sintel, Bonn or TUM-dynamics and write metrics JSON and paper-style tables.

    python scripts/eval.py benchmark=sintel root=/data/sintel [sparsity=0.5] [predictions=DIR] [strict=false]

See configs/eval.yaml for every option and data/benchmarks.md for the dataset layouts.
"""

import hydra
from omegaconf import DictConfig

from one4d.eval.driver import run
from one4d.runtime import one_line_errors, run_script


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)  # bad input (data, weights, options): one clear line, exit 2


if __name__ == "__main__":
    run_script(main)
