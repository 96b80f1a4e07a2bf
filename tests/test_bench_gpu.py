"""benchmarks/bench_gpu.py: its --tiny run on the CPU measures every case through the 14B code path, and
without a GPU (and without --tiny) it refuses at once in one line."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
CASES = ["train_bf16", "train_fp8", "sample_bf16", "sample_fp8", "sample_offload"]


def run(*args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env)


def numbers(value):
    """Every number in a JSON value."""
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_tiny_run_measures_every_case(tmp_path):
    out = tmp_path / "results.json"
    result = run("--tiny", "--blocks", "2", "--warmup", "1", "--repeats", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert "mean nothing" in report["note"]
    assert report["shapes"]["link_layers"] == [1]  # a link among the blocks built
    assert [case["case"] for case in report["cases"]] == CASES
    for case in report["cases"]:
        assert case["status"] == "ok", case
        assert case["seconds"] > 0 and case["link_seconds"] > 0 and case["flops"] > 0
        assert case["at_40_blocks"]["seconds"] > 0 and case["at_40_blocks"]["flops"] > case["flops"]
        assert all(math.isfinite(n) for n in numbers(case)), case
    for name in ("train_bf16", "train_fp8"):  # fp8 storage trains: a finite loss, and the trainables moved
        case = next(case for case in report["cases"] if case["case"] == name)
        assert math.isfinite(case["loss"])
        assert case["trainables_changed"] == case["trainables"] > 0
    assert "| sample_offload |" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the script would run")
def test_without_a_gpu_it_exits_2_in_one_line(tmp_path):
    result = run("--out", str(tmp_path / "results.json"), timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("bench_gpu.py needs a CUDA GPU (none found); run it where one is lent, e.g. ")
    assert not (tmp_path / "results.json").exists()
