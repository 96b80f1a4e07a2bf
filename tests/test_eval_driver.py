"""The evaluation driver end to end: configs compose, scripts/eval.py writes JSON and tables,
prediction folders are read (and refused when wrong), strict=false skips and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from one4d.eval import evaluate, sparse_frame_indices
from one4d.eval.datasets import sintel_sequences, tum_sequences
from one4d.eval.driver import build_predictor, run
from one4d.eval.predictions import OraclePredictor, PredictionFolder, read_prediction_trajectory, save_prediction
from one4d.eval.runner import Prediction
from test_eval_datasets import make_fake_sintel, make_fake_tum

REPO = Path(__file__).resolve().parents[1]
TUM_NAME = "rgbd_dataset_freiburg3_walking_xyz"


def config(*overrides: str, return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides), return_hydra_config=return_hydra_config)


@pytest.mark.parametrize("benchmark", ["sintel", "bonn", "tum"])
def test_every_benchmark_config_composes(benchmark):
    cfg = config(f"benchmark={benchmark}", "root=/nowhere", return_hydra_config=True)
    assert cfg.benchmark.name == benchmark and cfg.benchmark.reader._target_.startswith("one4d.eval.datasets.")
    assert cfg.hydra.output_subdir is None and cfg.hydra.run.dir == "."


def test_sparse_frame_indices_keep_first_last_and_spread():
    assert sparse_frame_indices(50, 0.1).tolist() == [0, 12, 25, 37, 49]
    assert sparse_frame_indices(110, 0.03).tolist() == [0, 55, 109]
    assert sparse_frame_indices(50, 0.01).tolist() == [0, 49]  # never fewer than 2
    with pytest.raises(ValueError, match="sparsity"):
        sparse_frame_indices(10, 1.5)


def test_script_end_to_end_on_fake_sintel_and_tum_writes_tables(tmp_path):
    make_fake_sintel(tmp_path / "sintel")
    make_fake_tum(tmp_path / "tum")
    out = tmp_path / "out"
    pick = "benchmark.reader.sequences=[alley_2,bamboo_1]"  # 2 of Sintel's 23: a strict run takes only those named
    for args in (["benchmark=sintel", f"root={tmp_path / 'sintel'}", pick],
                 ["benchmark=tum", f"root={tmp_path / 'tum'}", f"benchmark.reader.sequences=[{TUM_NAME}]"],
                 ["benchmark=sintel", f"root={tmp_path / 'sintel'}", "sparsity=0.5", pick]):
        subprocess.run([sys.executable, str(REPO / "scripts" / "eval.py"), *args, "mode=oracle", f"output_dir={out}"],
                       check=True, cwd=tmp_path, capture_output=True, text=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sintel", "tum"]  # Hydra left nothing behind
    record = json.loads((out / "oracle_GT_noise" / "sintel" / "metrics.json").read_text())
    assert set(record["result"]["sequences"]) == {"alley_2", "bamboo_1"}
    assert 0 < record["result"]["average"]["depth"]["abs_rel"] < 0.1
    assert record["result"]["average"]["pose"]["sequences"] == 1  # bamboo_1 is not a pose sequence
    sparse = json.loads((out / "oracle_GT_noise" / "sintel_sparsity0.5" / "metrics.json").read_text())
    assert sparse["result"]["sequences"]["alley_2"]["observed_frames"] == 3  # 0.5 * 5 frames rounds half up to 3
    tables = (out / "tables.md").read_text()
    assert "| One4D (paper) | G&R | 0.273 | 70.4 | 0.092 | 93.7 |" in tables
    assert "| One4D (paper) | G&R | 0.213 | 0.057 | 0.818 | 0.129 | 0.022 | 1.447 |" in tables
    assert "| 0.50 | oracle (GT + noise) |" in tables and "Table 5" in tables
    ours = [line for line in tables.splitlines() if line.startswith("| oracle (GT + noise) | G&R")]
    assert len(ours) == 2 and all("-" not in line.split("|")[-2] for line in ours[1:])


def test_predictions_folder_round_trip_is_perfect(tmp_path):
    truth = make_fake_sintel(tmp_path / "sintel", sequences=("alley_2",))
    depth, camera_to_world = truth["alley_2"]
    save_prediction(tmp_path / "pred" / "alley_2", Prediction(depth * 2 + 1, camera_to_world))
    assert sorted(p.name for p in (tmp_path / "pred" / "alley_2").iterdir())[:2] == ["frame_0000.npy", "frame_0001.npy"]
    np.testing.assert_allclose(read_prediction_trajectory(tmp_path / "pred" / "alley_2" / "pred_traj.txt"), camera_to_world, atol=1e-8)
    result = evaluate(sintel_sequences(tmp_path / "sintel"), PredictionFolder(tmp_path / "pred"),
                      depth_options={"protocol": "exact"}, log=lambda _: None)  # an exact affine fit: nothing lost
    assert result["average"]["depth"]["abs_rel"] < 1e-5 and result["average"]["depth"]["delta_1_25"] == 1.0
    assert result["average"]["pose"]["ate"] < 1e-7
    # the same file read with the other quaternion order is a different trajectory
    swapped = read_prediction_trajectory(tmp_path / "pred" / "alley_2" / "pred_traj.txt", quaternion_order="xyzw")
    assert np.abs(swapped - camera_to_world).max() > 1e-3


def test_wrong_frame_count_fails_strict_and_is_reported_when_not(tmp_path):
    truth = make_fake_sintel(tmp_path / "sintel")
    for name, (depth, camera_to_world) in truth.items():
        save_prediction(tmp_path / "pred" / name, Prediction(depth, camera_to_world))
    (tmp_path / "pred" / "bamboo_1" / "frame_0004.npy").unlink()
    sources = sintel_sequences(tmp_path / "sintel")
    with pytest.raises(ValueError, match=r"bamboo_1: 4 frame_XXXX\.npy files .* 5 frames"):
        evaluate(sources, PredictionFolder(tmp_path / "pred"), log=lambda _: None)
    result = evaluate(sources, PredictionFolder(tmp_path / "pred"), strict=False, log=lambda _: None)
    assert list(result["sequences"]) == ["alley_2"] and "bamboo_1" in result["skipped"]
    assert result["average"]["depth"]["sequences"] == 1


def test_bad_trajectory_file_names_sequence_and_file(tmp_path):
    make_fake_tum(tmp_path / "tum")
    sources = tum_sequences(tmp_path / "tum", sequences=[TUM_NAME])
    sequence = sources[0].load()
    save_prediction(tmp_path / "pred" / TUM_NAME, Prediction(None, sequence.camera_to_world[:-1]))
    with pytest.raises(ValueError, match=rf"{TUM_NAME}: .*pred_traj\.txt has 3 poses, the sequence has 4 frames"):
        evaluate(sources, PredictionFolder(tmp_path / "pred"), log=lambda _: None)


def test_missing_sequences_are_skipped_and_listed_in_the_table(tmp_path):
    make_fake_tum(tmp_path / "tum")
    cfg = config("benchmark=tum", f"root={tmp_path / 'tum'}", "mode=oracle", "strict=false", f"output_dir={tmp_path / 'out'}")
    record = run(cfg)
    assert len(record["result"]["skipped"]) == 7 and list(record["result"]["sequences"]) == [TUM_NAME]
    table = (tmp_path / "out" / "oracle_GT_noise" / "tum" / "table.md").read_text()
    assert "~~rgbd_dataset_freiburg3_sitting_rpy~~" in table and "oracle (GT + noise) †" in table
    with pytest.raises(ValueError, match=r"lacks 7 of its 8 sequences \(rgbd_dataset_freiburg3_sitting_static, "):  # strict: refused up front
        run(config("benchmark=tum", f"root={tmp_path / 'tum'}", "mode=oracle", f"output_dir={tmp_path / 'out'}"))


def test_root_without_sequences_is_refused(tmp_path):
    with pytest.raises(ValueError, match="none of the expected sequences"):
        run(config("benchmark=bonn", f"root={tmp_path}", "mode=oracle", f"output_dir={tmp_path / 'out'}"))


def test_model_mode_refuses_clearly_without_the_pipeline(monkeypatch):
    monkeypatch.setitem(sys.modules, "one4d.pipeline", None)  # makes `import one4d.pipeline` fail
    with pytest.raises(ValueError, match="one4d.pipeline cannot be imported.*predictions=DIR"):
        build_predictor(config("benchmark=sintel", "root=/nowhere"))
    assert isinstance(build_predictor(config("root=/x", "predictions=/tmp")), PredictionFolder)
    assert isinstance(build_predictor(config("root=/x", "mode=oracle")), OraclePredictor)
    with pytest.raises(ValueError, match="needs predictions=DIR"):
        build_predictor(config("root=/x", "mode=predictions"))
