"""The main job on the embedded default (make demo): single-image, sparse and full-video 4D with the shipped tiny One4D.

    python scripts/demo.py        # writes outputs/demo/ (per-task sampler outputs, contact_sheet.png, metrics.md, summary.json)
How the model was made: data/checkpoints/tiny/README.md; what the demo measures: one4d/demo.py.
"""

from one4d.demo import main
from one4d.runtime import run_script

if __name__ == "__main__":
    run_script(main)
