"""Sample a 4D clip (RGB, pointmaps, cameras, depth) from an image, sparse frames or a video.

    python scripts/sample.py task=single input=photo.png prompt="a dog runs on the beach" out=outputs/dog
    python scripts/sample.py task=sparse input=clip.mp4 sparsity=0.1 out=outputs/sparse
    python scripts/sample.py task=full input=clip.mp4 checkpoint=data/checkpoints/tiny out=outputs/full

``checkpoint=`` a folder with a sampling.json (the shipped tiny model, any trainer checkpoint or run folder) brings
its model, training size and sampler settings; command-line values win. Options and the memory settings are in
configs/sample.yaml; bad input exits with code 2 and one line on stderr.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from one4d.runtime import check_required, one_line_errors, run_script


@hydra.main(version_base="1.3", config_path="../configs", config_name="sample")
@one_line_errors
def main(cfg: DictConfig) -> None:
    check_required(cfg)
    from one4d.pipeline.cli import sample  # after Hydra composed the config: a config error costs no torch import

    code = sample(cfg, list(HydraConfig.get().overrides.task))
    if code:
        sys.exit(code)


if __name__ == "__main__":
    run_script(main)
