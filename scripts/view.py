"""View a sample's 4D output in the browser (viser): point clouds over time, camera frustums, a time slider.

    python scripts/view.py outputs/dog                      # then open http://localhost:8080
    python scripts/view.py outputs/dog --stride 4 --max-points 5000 --port 8081
"""

import argparse
import sys

from one4d.runtime import THREADS_HELP, ArgumentParser, configure_cpu_threads, run_script
from one4d.viewer import view


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="an output folder of scripts/sample.py (holds pointmaps.npz)")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--stride", type=int, default=1, help="show every N-th frame")
    parser.add_argument("--max-points", type=int, default=20000, help="points per frame (random subset)")
    parser.add_argument("--point-size", type=float, default=None, help="default: 0.5%% of the scene's extent")
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    args = parser.parse_args()
    try:
        configure_cpu_threads(args.threads)
        viewer = view(args.folder, args.host, args.port, args.stride, args.max_points, args.point_size)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"viewing {args.folder} at http://{args.host}:{viewer.port} (Ctrl+C to stop)", flush=True)
    try:
        viewer.play()
    except KeyboardInterrupt:
        pass
    finally:  # also on SIGTERM (one4d.runtime raises it here): a running server would keep the process alive
        viewer.stop()
    return 0


if __name__ == "__main__":
    run_script(main)
