"""Write a tiny random diffusers-format Wan I2V directory (for tests and the CPU demo).

    python scripts/make_tiny_components.py OUT_DIR [--seed 0]

The directory has the layout of the real Wan2.1 I2V diffusers repos (transformer/ with the ``tiny``
preset, vae/, text_encoder/, tokenizer/, image_encoder/, image_processor/, scheduler/,
model_index.json) and loads with ``one4d.weights.load_diffusers_components``.
"""

from pathlib import Path

from one4d.runtime import ArgumentParser, run_script


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write; must be absent or empty")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        parser.error(f"{args.out_dir} exists and is not empty; choose a new folder")
    from one4d.components import build_tiny_directory  # after the arguments are checked: transformers is slow to import

    print(build_tiny_directory(args.out_dir, seed=args.seed))


if __name__ == "__main__":
    run_script(main)
