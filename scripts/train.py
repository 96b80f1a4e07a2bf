"""Train One4D: compose the Hydra config (configs/train.yaml) and run the trainer.

    python scripts/train.py experiment=tiny_cpu data.roots=[data/synthetic]
    torchrun --nproc_per_node 8 scripts/train.py experiment=one4d_14b data.roots=[...] model.transformer=... model.components=...
"""

import sys

import hydra

from one4d.training import run


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg) -> None:
    try:
        run(cfg)
    except ValueError as error:  # bad input: one clear line, non-zero exit
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
