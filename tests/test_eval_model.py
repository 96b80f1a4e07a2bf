"""scripts/eval.py mode=model: the tiny One4D (random weights) through sampling, windows and post-optimisation."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from one4d.eval import EvalSequence
from one4d.pipeline import ModelPredictor, load_pipeline
from one4d.pipeline.evaluation import covering_frame_count
from test_eval_datasets import make_fake_sintel, make_fake_tum

REPO = Path(__file__).resolve().parents[1]
# The eval config's own precision (model_predictor.dtype: bfloat16), as users run it.
TINY = ["model_predictor.preset=tiny", "model_predictor.components=tiny", "model_predictor.device=cpu",
        "model_predictor.num_inference_steps=2", "model_predictor.height=32",
        "model_predictor.width=32"]


def test_window_frame_counts_cover_their_inputs():
    assert [covering_frame_count(n) for n in (1, 5, 6, 9, 12, 81)] == [5, 5, 9, 9, 13, 81]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_long_sequences_go_through_merged_windows_and_map_back_to_every_frame(dtype):
    pipeline = load_pipeline(preset="tiny", components="tiny", lora_rank=4, dtype=dtype)
    # Guidance 1: random weights give pointmaps post-optimisation can fit only for some samples; this test is
    # about windows, and guidance (tests/test_eval_prompts.py) would draw other random samples.
    predictor = ModelPredictor(pipeline, num_frames=5, height=32, width=32, overlap=2, num_inference_steps=2, guidance_scale=1.0)
    frames = np.random.default_rng(1).integers(0, 255, (11, 40, 56, 3), dtype=np.uint8)
    # Windows start on observed frames: [0,5) [1,6) [4,9) [7,11), sharing 4, 2 and 2 frames.
    sparse = predictor(EvalSequence("seq", frames), observed=[0, 1, 4, 7, 10])
    assert sparse.depth.shape == (11, 32, 32) and sparse.camera_to_world.shape == (11, 4, 4)
    assert np.isfinite(sparse.depth).all() and np.isfinite(sparse.camera_to_world).all()


def test_eval_script_runs_the_tiny_model_on_fake_sintel_and_tum(tmp_path):
    make_fake_sintel(tmp_path / "sintel", sequences=("alley_2",))
    make_fake_tum(tmp_path / "tum", frames=12)
    out = tmp_path / "out"
    runs = (["benchmark=sintel", f"root={tmp_path / 'sintel'}", "sparsity=0.5", "benchmark.reader.sequences=[alley_2]"],
            ["benchmark=tum", f"root={tmp_path / 'tum'}", "benchmark.reader.sequences=[rgbd_dataset_freiburg3_walking_xyz]",
             "model_predictor.num_frames=9", "model_predictor.overlap=4"])
    for args in runs:
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "eval.py"), *args, "mode=model", *TINY,
                               "label=tiny", f"output_dir={out}"], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    sintel = json.loads((out / "tiny" / "sintel_sparsity0.5" / "metrics.json").read_text())["result"]
    assert np.isfinite(sintel["average"]["depth"]["abs_rel"]) and sintel["sequences"]["alley_2"]["observed_frames"] == 3
    tum = json.loads((out / "tiny" / "tum" / "metrics.json").read_text())["result"]
    assert np.isfinite(tum["average"]["pose"]["ate"])
    assert "| tiny | G&R |" in (out / "tables.md").read_text()
