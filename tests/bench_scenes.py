"""What the benchmark tests share: the shipped tiny checkpoint whose VAE and One4D they run, and the held-out scenes
(the demo's first seeds) at 5 frames so that each test stays a few seconds."""

from pathlib import Path

CHECKPOINT = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "tiny"
SETTINGS = {"num_frames": 5, "height": 48, "width": 64}
SEEDS = range(1_000_000, 1_000_002)
