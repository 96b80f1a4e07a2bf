"""One4D: unified 4D generation and reconstruction with Decoupled LoRA Control on Wan2.1."""

__version__ = "0.1.0"
