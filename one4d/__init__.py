"""One4D: unified 4D generation and reconstruction with Decoupled LoRA Control on Wan2.1."""

from one4d.runtime import quiet_known_notices

__version__ = "0.1.0"

quiet_known_notices()  # before anything imports transformers: one4d.runtime says which notice and why
