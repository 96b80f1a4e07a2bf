"""Recover intrinsics, camera poses and depth from generated pointmaps; write cameras.json, a TUM trajectory and depth.npz.

    python scripts/postopt.py input=outputs/sample_000 [output_dir=DIR] [window=81 overlap=16] [device=cuda] [fps=16]

See configs/postopt.yaml for every option; bad input exits with code 2 and one line on stderr.
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from one4d.postopt import recover_folder
from one4d.postopt.io import recorded_frame_rate
from one4d.runtime import check_required, one_line_errors, run_script


@hydra.main(config_path="../configs", config_name="postopt", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    check_required(cfg)
    options = OmegaConf.to_container(cfg, resolve=True)
    input_path, fps = options.pop("input"), options.pop("fps")
    if fps is not None and (isinstance(fps, (bool, str)) or not fps > 0):
        raise ValueError(f"fps must be a positive number of frames per second, got {fps!r}")
    rate = float(fps) if fps is not None else recorded_frame_rate(input_path)
    result, paths = recover_folder(input_path, frame_rate=rate, **options)
    print(f"{result.depth.shape[0]} frames, focal {result.intrinsics[:, 0, 0].mean():.1f} px, losses {result.losses}")
    if rate is None:
        print("no frame rate known (not a sampler output, no fps=): trajectory timestamps are frame indices; give fps= for seconds")
    for name, path in paths.items():
        print(f"wrote {name}: {path}")


if __name__ == "__main__":
    run_script(main)
