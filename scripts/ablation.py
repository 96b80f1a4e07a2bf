"""DLC vs channel-wise vs spatial-wise concatenation from the shipped tiny base (make ablation; the paper's Fig. 3).

    python scripts/ablation.py              # writes data/checkpoints/tiny/ABLATION.md (needs make tiny-model's cache)
"""

import sys

from one4d.ablation import main

if __name__ == "__main__":
    sys.exit(main())
