#!/usr/bin/env bash
# Fill the paper's Tables 3-6 in one go: four scripts/eval.py runs (three Hydra multiruns) into the
# same output_dir, whose tables.md then holds every table beside the paper's rows.
#   scripts/eval_tables.sh roots.sintel=/data/sintel roots.bonn=/data/bonn roots.tum=/data/tum \
#       model_predictor.checkpoint=/ckpt model_predictor.components=/weights/Wan2.1-Fun-14B-InP \
#       [output_dir=outputs/eval] [label=...] [any other scripts/eval.py option]
# Every option given here goes to every run; relative paths are taken from the current folder.
# PYTHON picks the interpreter (default: the repository's .venv/bin/python, else python on the PATH), so the
# command works as printed in a fresh shell. The CFG sweep only means something in mode=model.
set -euo pipefail
venv_python="$(dirname "$0")/../.venv/bin/python"
[ -x "$venv_python" ] || venv_python=python
eval_py=("${PYTHON:-$venv_python}" "$(dirname "$0")/eval.py")
"${eval_py[@]}" -m benchmark=sintel,bonn sparsity=null,0.5,0.25,0.1,0.05 "$@"  # Table 3, Table 5, Sintel of Table 4
"${eval_py[@]}" -m benchmark=bonn sparsity=0.04,0.03 "$@"                     # Table 5: the paper runs these on Bonn only
"${eval_py[@]}" benchmark=tum "$@"                                             # Table 4, TUM-dynamics
"${eval_py[@]}" -m benchmark=sintel,bonn model_predictor.guidance_scale=4,5 "$@"  # Table 6 (CFG=6 is the default run above)
