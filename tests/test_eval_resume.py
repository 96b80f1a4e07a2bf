"""Resumable evaluation: each sequence's prediction is saved as it is made (MonST3R layout, written
atomically); a re-run reads back the finished ones, predicts only the rest and writes the same tables
as one uninterrupted run; a corrupt saved prediction is predicted again with a warning naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import one4d.eval.driver as driver
from one4d.eval.predictions import OraclePredictor
from test_eval_datasets import make_fake_sintel

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = ("alley_2", "bamboo_1", "cave_2", "market_2")  # alley_2, cave_2, market_2 are pose sequences
RUN = Path("oracle_GT_noise") / "sintel"


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=["strict=false", *overrides])  # the fake Sintels hold a few of its 23


class Recording:
    """The oracle, recording which sequences it predicts; interrupts (like Ctrl-C) at call ``stop_at``."""

    def __init__(self, stop_at: int | None = None, **oracle):
        self.oracle, self.calls, self.stop_at = OraclePredictor(**oracle), [], stop_at

    def __call__(self, sequence, observed):
        if len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        self.calls.append(sequence.name)
        return self.oracle(sequence, observed)


def oracle_factory(**_):
    """mode=model stand-in for a subprocess: appends each predicted sequence to $CALLS and kills its own
    process (SIGKILL, nothing cleaned up) when asked to predict sequence number $KILL_AT."""
    oracle, calls = OraclePredictor(), Path(os.environ["CALLS"])

    def predict(sequence, observed):
        done = calls.read_text().split() if calls.exists() else []
        if os.environ.get("KILL_AT") and len(done) == int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
        calls.write_text("\n".join([*done, sequence.name]) + "\n")
        return oracle(sequence, observed)
    return predict


def run_with(monkeypatch, predictor, *overrides):
    monkeypatch.setattr(driver, "build_predictor", lambda cfg: predictor)
    return driver.run(config(*overrides))


def outputs(out: Path, run: Path = RUN) -> tuple[str, str, str]:
    return tuple((out / name).read_text() for name in (run / "metrics.json", run / "table.md", "tables.md"))


@pytest.fixture
def sintel(tmp_path):
    make_fake_sintel(tmp_path / "sintel", sequences=SEQUENCES)
    return tmp_path / "sintel"


@pytest.fixture
def uninterrupted(tmp_path, sintel, monkeypatch):
    """Output folder of one uninterrupted oracle run on the four sequences."""
    predictor = Recording()
    run_with(monkeypatch, predictor, f"root={sintel}", "mode=oracle", f"output_dir={tmp_path / 'once'}")
    assert predictor.calls == list(SEQUENCES)
    return tmp_path / "once"


def test_interrupted_run_resumes_to_the_uninterrupted_tables(tmp_path, sintel, uninterrupted, monkeypatch):
    args = (f"root={sintel}", "mode=oracle", f"output_dir={tmp_path / 'out'}")
    with pytest.raises(KeyboardInterrupt):
        run_with(monkeypatch, Recording(stop_at=2), *args)
    saved = tmp_path / "out" / RUN / "predictions"
    assert sorted(p.name for p in saved.iterdir()) == ["alley_2", "bamboo_1", "settings.json"]
    second = Recording()
    run_with(monkeypatch, second, *args)
    assert second.calls == ["cave_2", "market_2"]  # only the n - k left
    assert outputs(tmp_path / "out") == outputs(uninterrupted)
    # the layout: MonST3R's, one depth .npy per frame and pred_traj.txt per sequence
    assert sorted(p.name for p in (saved / "alley_2").iterdir()) == [*(f"frame_{i:04d}.npy" for i in range(5)), "pred_traj.txt"]
    # which predictions= reads as any saved method, to the same metrics
    monkeypatch.undo()
    again = driver.run(config(f"root={sintel}", f"predictions={saved}", "label=saved", f"output_dir={tmp_path / 'read'}"))
    assert again["result"] == json.loads(outputs(uninterrupted)[0])["result"]


def test_process_killed_mid_evaluation_resumes(tmp_path, sintel, monkeypatch):
    """A real kill: SIGKILL from inside the predictor of a scripts/eval.py process at sequence 3 of 4."""
    options = [f"root={sintel}", "mode=model", "model_predictor._target_=test_eval_resume.oracle_factory",
               "model_predictor.components=none", "label='oracle (GT + noise)'", "strict=false"]
    monkeypatch.setenv("CALLS", str(tmp_path / "once.txt"))
    driver.run(config(*options, f"output_dir={tmp_path / 'once'}"))  # uninterrupted, in this process
    args = [sys.executable, str(REPO / "scripts" / "eval.py"), *options, f"output_dir={tmp_path / 'out'}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           "CALLS": str(tmp_path / "calls.txt"), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(args, env={**env, "KILL_AT": "2"}, cwd=tmp_path, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out" / RUN / "predictions").iterdir()) == ["alley_2", "bamboo_1", "settings.json"]
    assert not (tmp_path / "out" / RUN / "metrics.json").exists()
    resumed = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming: 2 saved predictions" in resumed.stdout
    assert (tmp_path / "calls.txt").read_text().split() == list(SEQUENCES)  # each predicted once over both processes
    assert outputs(tmp_path / "out") == outputs(tmp_path / "once")


def test_run_killed_while_writing_leaves_no_finished_looking_prediction(tmp_path, sintel, uninterrupted, monkeypatch):
    args = (f"root={sintel}", "mode=oracle", f"output_dir={tmp_path / 'out'}")
    save, written = np.save, []

    def interrupted_save(path, array, *a, **k):  # dies after two frames of the third sequence
        written.append(path)
        if len(written) == 2 * 5 + 2:
            raise KeyboardInterrupt
        return save(path, array, *a, **k)
    monkeypatch.setattr(np, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        run_with(monkeypatch, Recording(), *args)
    monkeypatch.setattr(np, "save", save)
    saved = tmp_path / "out" / RUN / "predictions"
    assert sorted(p.name for p in saved.iterdir()) == [".cave_2.partial", "alley_2", "bamboo_1", "settings.json"]
    second = Recording()
    run_with(monkeypatch, second, *args)
    assert second.calls == ["cave_2", "market_2"]
    assert not (saved / ".cave_2.partial").exists()
    assert outputs(tmp_path / "out") == outputs(uninterrupted)


def test_corrupt_saved_predictions_are_predicted_again_with_a_warning_naming_them(tmp_path, sintel, uninterrupted, monkeypatch):
    saved = uninterrupted / RUN / "predictions"
    truncated = saved / "alley_2" / "frame_0002.npy"
    truncated.write_bytes(truncated.read_bytes()[:-7])
    (saved / "bamboo_1" / "frame_0004.npy").unlink()  # wrong frame count
    trajectory = saved / "market_2" / "pred_traj.txt"
    trajectory.write_text(trajectory.read_text()[:-20])  # cut inside its last line
    before = outputs(uninterrupted)
    again = Recording()
    with pytest.warns(UserWarning) as caught:
        run_with(monkeypatch, again, f"root={sintel}", "mode=oracle", f"output_dir={uninterrupted}")
    messages = [str(w.message) for w in caught if "corrupt" in str(w.message)]
    assert again.calls == ["alley_2", "bamboo_1", "market_2"] and len(messages) == 3
    assert "alley_2" in messages[0] and "frame_0002.npy" in messages[0]
    assert "bamboo_1" in messages[1] and "4 frame_XXXX.npy files" in messages[1]
    assert "market_2" in messages[2] and "pred_traj.txt" in messages[2]
    assert outputs(uninterrupted) == before


def test_finished_run_rescored_without_the_model_other_settings_refused_resume_false_recomputes(tmp_path, sintel, uninterrupted, monkeypatch):
    args = (f"root={sintel}", "mode=oracle", f"output_dir={uninterrupted}")
    before = json.loads(outputs(uninterrupted)[0])["result"]["average"]["depth"]["abs_rel"]
    monkeypatch.setattr(driver, "build_predictor", lambda cfg: pytest.fail("a finished run loaded its predictor"))
    rescored = driver.run(config(*args, "benchmark.metrics.max_depth=4.0"))  # scoring options may change
    valid = rescored["result"]["sequences"]["alley_2"]["depth"]["valid_pixels"]
    assert rescored["metrics"]["max_depth"] == 4.0 and 0 < valid < 5 * 12 * 16  # fewer pixels than 5 frames hold
    with pytest.raises(ValueError, match=r"other settings \(oracle.depth_noise: 0.05 -> 0.2\); pass resume=false"):
        driver.run(config(*args, "oracle.depth_noise=0.2"))
    fresh = Recording(depth_noise=0.2)
    run_with(monkeypatch, fresh, *args, "oracle.depth_noise=0.2", "resume=false")
    assert fresh.calls == list(SEQUENCES)
    assert json.loads(outputs(uninterrupted)[0])["result"]["average"]["depth"]["abs_rel"] > before


def test_tiny_model_run_saves_predictions_that_resume_and_read_back(tmp_path, monkeypatch):
    from test_eval_model import TINY

    make_fake_sintel(tmp_path / "sintel", sequences=("alley_2",))
    args = (f"root={tmp_path / 'sintel'}", "mode=model", *TINY, "label=tiny", f"output_dir={tmp_path / 'out'}")
    first = driver.run(config(*args))
    saved = tmp_path / "out" / "tiny" / "sintel" / "predictions"
    assert sorted(p.name for p in (saved / "alley_2").iterdir())[-2:] == ["frame_0004.npy", "pred_traj.txt"]
    monkeypatch.setattr(driver, "build_predictor", lambda cfg: pytest.fail("the finished run loaded the model"))
    assert driver.run(config(*args))["result"] == first["result"]
    monkeypatch.undo()
    read = driver.run(config(f"root={tmp_path / 'sintel'}", f"predictions={saved}", f"output_dir={tmp_path / 'read'}"))
    assert read["result"] == first["result"]
