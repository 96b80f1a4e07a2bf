"""Write N synthetic 4D clips as a dataset folder (the clip format of data/README.md).

    python scripts/make_dataset.py --out data/synthetic --num-clips 50 --frames 17 --height 64 --width 64
"""

import argparse

from one4d.data.synthetic import write_synthetic_dataset
from one4d.runtime import ArgumentParser, run_script


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset root to create (one sub-folder per clip)")
    parser.add_argument("--num-clips", type=int, default=50)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="clip i uses scene seed seed + i")
    parser.add_argument("--rgb-format", choices=("mp4", "png"), default="mp4")
    args = parser.parse_args()
    folders = write_synthetic_dataset(args.out, args.num_clips, args.frames, args.height, args.width, args.seed, args.rgb_format)
    print(f"wrote {len(folders)} clips to {args.out}")


if __name__ == "__main__":
    run_script(main)
