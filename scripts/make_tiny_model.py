"""Train the shipped tiny One4D from nothing: synthetic clips, tiny VAE, base video model, then DLC.

    python scripts/make_tiny_model.py                      # all stages (make tiny-model), writes data/checkpoints/tiny/
    python scripts/make_tiny_model.py --stages base,one4d  # rerun the trainer stages only
Stages, settings and the record of the shipped run: one4d/training/tiny_model.py, data/checkpoints/tiny/README.md.
"""

from one4d.runtime import run_script, spin_waiting_threads

spin_waiting_threads()  # the build owns the machine's CPUs; before torch is imported (one4d.runtime)

from one4d.training.tiny_model import main  # noqa: E402  (imports torch)

if __name__ == "__main__":
    run_script(main)
