"""Recover intrinsics, camera poses and depth from generated pointmaps; write cameras.json, a TUM trajectory and depth.npz.

    python scripts/postopt.py input=outputs/sample_000 [output_dir=DIR] [window=81 overlap=16] [device=cuda]

See configs/postopt.yaml for every option.
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from one4d.postopt import recover_folder


@hydra.main(config_path="../configs", config_name="postopt", version_base="1.3")
def main(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg, resolve=True)
    result, paths = recover_folder(**{"input_path": options.pop("input"), **options})
    print(f"{result.depth.shape[0]} frames, focal {result.intrinsics[:, 0, 0].mean():.1f} px, losses {result.losses}")
    for name, path in paths.items():
        print(f"wrote {name}: {path}")


if __name__ == "__main__":
    main()
