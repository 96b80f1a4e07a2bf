"""Evaluation across processes (issue 16 item 4): two CPU processes (torchrun, gloo) split the sequences,
save their predictions in the one resumable folder and write the same metrics.json and tables as one process;
bad input on one rank stops every rank with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import one4d.eval.driver as driver
from test_eval_datasets import make_fake_sintel

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = ("alley_2", "bamboo_1", "cave_2", "market_2", "shaman_2")
RUN = Path("oracle_GT_noise") / "sintel"

pytestmark = pytest.mark.multicore  # two processes in every test


def torchrun(*args: str, port_offset: int = 0) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(29700 + (os.getpid() + port_offset) % 200),
               str(REPO / "scripts" / "eval.py"), *args]
    return subprocess.run(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)


def test_two_processes_write_the_metrics_and_tables_of_one(tmp_path, capsys):
    make_fake_sintel(tmp_path / "sintel", sequences=SEQUENCES)
    (tmp_path / "sintel" / "training" / "depth" / "cave_2" / "frame_0003.dpt").write_bytes(b"\0")  # skipped by strict=false
    options = [f"root={tmp_path / 'sintel'}", "mode=oracle", "strict=false"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        one = driver.run(compose(config_name="eval", overrides=[*options, f"output_dir={tmp_path / 'one'}"]))
    assert set(one["result"]["sequences"]) == set(SEQUENCES) - {"cave_2"} and set(one["result"]["skipped"]) == {"cave_2"}

    result = torchrun(*options, f"output_dir={tmp_path / 'two'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 of 2: 3 of 5 sequences" in result.stdout and "rank 1 of 2: 2 of 5 sequences" in result.stdout
    for name in (RUN / "metrics.json", RUN / "table.md", "tables.md"):  # no timing field: every byte equal
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    saved = sorted(p.name for p in (tmp_path / "two" / RUN / "predictions").iterdir() if not p.name.startswith("."))
    assert saved == sorted([*set(SEQUENCES) - {"cave_2"}, "settings.json"])  # both ranks saved into the one folder

    again = torchrun(*options, f"output_dir={tmp_path / 'two'}", port_offset=1)  # resumes: reads back, predicts nothing
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming: 4 saved predictions" in again.stdout
    assert (tmp_path / "two" / RUN / "metrics.json").read_text() == (tmp_path / "one" / RUN / "metrics.json").read_text()

    (tmp_path / "two" / RUN / "metrics.json").unlink()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):  # and with another process count
        driver.run(compose(config_name="eval", overrides=[*options, f"output_dir={tmp_path / 'two'}"]))
    assert "resuming: 4 saved predictions" in capsys.readouterr().out
    assert (tmp_path / "two" / RUN / "metrics.json").read_text() == (tmp_path / "one" / RUN / "metrics.json").read_text()


def test_a_bad_sequence_on_one_rank_stops_both_with_one_line(tmp_path):
    make_fake_sintel(tmp_path / "sintel", sequences=SEQUENCES[:2])
    (tmp_path / "sintel" / "training" / "depth" / "bamboo_1" / "frame_0002.dpt").write_bytes(b"\0")  # rank 1's sequence
    result = torchrun(f"root={tmp_path / 'sintel'}", "benchmark.reader.sequences=[alley_2,bamboo_1]", "mode=oracle",
                      f"output_dir={tmp_path / 'out'}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all("bamboo_1" in line for line in errors), result.stderr[-3000:]  # one line per rank, never interleaved (one4d.runtime.say)
    assert not (tmp_path / "out" / RUN / "metrics.json").exists()


def test_tiny_model_on_two_processes_scores_as_one(tmp_path):
    """mode=model: each rank loads the model on its own device (``device: auto``: the CPU here) and samples its
    sequence; the seed is per sequence, so the split changes nothing."""
    make_fake_sintel(tmp_path / "sintel", sequences=SEQUENCES[:2])
    options = [f"root={tmp_path / 'sintel'}", "benchmark.reader.sequences=[alley_2,bamboo_1]", "mode=model", "label=tiny",
               "model_predictor.preset=tiny", "model_predictor.components=tiny", "model_predictor.num_inference_steps=2",
               "model_predictor.height=32", "model_predictor.width=32"]
    one = subprocess.run([sys.executable, str(REPO / "scripts" / "eval.py"), *options, f"output_dir={tmp_path / 'one'}"],
                         cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(*options, f"output_dir={tmp_path / 'two'}", port_offset=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 1 of 2: 1 of 2 sequences" in two.stdout
    run = Path("tiny") / "sintel" / "metrics.json"
    assert (tmp_path / "two" / run).read_text() == (tmp_path / "one" / run).read_text()
