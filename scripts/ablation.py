"""DLC vs channel-wise vs spatial-wise concatenation from the shipped tiny base (make ablation; the paper's Fig. 3).

    python scripts/ablation.py              # writes data/checkpoints/tiny/ABLATION.md (needs make tiny-model's cache)
"""

from one4d.ablation import main
from one4d.runtime import run_script

if __name__ == "__main__":
    run_script(main)
