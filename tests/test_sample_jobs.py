"""scripts/sample.py inputs=FILE: jobs files (JSONL or TSV) parsed line by line, a malformed line named by its number
while the other jobs run, finished jobs skipped on a re-run. One process here; several in tests/test_parallel_sampling.py."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from one4d.pipeline import cli
from one4d.pipeline.jobs import Job, parse_job, read_jobs, share

ROOT = Path(__file__).resolve().parents[1]
FAST = ["checkpoint=data/checkpoints/tiny", "steps=2", "num_frames=5", "height=32", "width=32", "progress=false",
        "postopt.enabled=false", "ply_stride=0"]


def sample(*overrides: str) -> int:
    """``scripts/sample.py`` in this process; the overrides are passed as given, so they win over the checkpoint's sampling.json."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("sample", overrides=list(overrides))
    return cli.sample(cfg, list(overrides))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "image.png"
    imageio.imwrite(path, (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8))
    return path


def test_json_and_tab_separated_lines_give_the_same_job():
    from_json = parse_job('{"task": "sparse", "input": "a.mp4", "prompt": "a dog", "out": "o/a", "seed": 3}', 1, 0)
    from_tsv = parse_job("sparse\ta.mp4\ta dog\to/a\t3", 1, 0)
    assert from_json == from_tsv == Job(1, "sparse", "a.mp4", "a dog", "o/a", 3)
    assert parse_job("full\tb.mp4\t\to/b", 7, 5) == Job(7, "full", "b.mp4", "", "o/b", 5)  # no seed column: the config's


@pytest.mark.parametrize("text, message", [
    ('{"task": "full", "input": "a.mp4", "out": "o"', "not valid JSON"),
    ('{"task": "full", "input": "a.mp4", "out": "o", "steps": 3}', "unknown key.*steps"),
    ("full\ta.mp4\to", "3 tab-separated columns"),
    ("dense\ta.mp4\t\to", "unknown task 'dense'"),
    ("full\ta.mp4\t\to\tthree", "seed must be a whole number, got 'three'"),
    ('{"task": "full", "input": "a.mp4", "out": "o", "seed": 1.5}', "seed must be a whole number"),
    ('{"task": "full", "out": "o"}', "missing input"),
])
def test_a_malformed_line_is_one_error_naming_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_job(text, 1, 0)


def test_read_jobs_names_bad_lines_by_number_and_keeps_the_others(tmp_path):
    path = tmp_path / "jobs.tsv"
    path.write_text("# task input prompt out seed\n\nsingle\ta.png\t\tout/a\t1\nbroken line\n"
                    "single\tb.png\tp\tout/b\n{\"task\": \"single\", \"input\": \"c.png\", \"out\": \"out/a\"}\n")
    jobs, errors = read_jobs(path, default_seed=9)
    assert [(job.line, job.out, job.seed) for job in jobs] == [(3, "out/a", 1), (5, "out/b", 9)]
    assert errors == [f"{path} line 4: 1 tab-separated columns; expected task, input, prompt, out[, seed]",
                      f"{path} line 6: out out/a is also line 3's"]
    with pytest.raises(ValueError, match="cannot be read"):
        read_jobs(tmp_path / "missing.tsv")


def test_jobs_are_dealt_round_robin_over_groups():
    jobs = [Job(i, "single", "x", "", f"o{i}", 0) for i in range(5)]
    assert [[job.line for job in share(jobs, 2, group)] for group in (0, 1)] == [[0, 2, 4], [1, 3]]
    assert share(jobs, 1, 0) == jobs


def test_a_jobs_file_samples_every_good_line_reports_the_bad_one_and_resumes(tmp_path, image, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join([
        json.dumps({"task": "single", "input": str(image), "prompt": "a", "out": str(tmp_path / "a"), "seed": 1}),
        json.dumps({"task": "single", "input": str(tmp_path / "missing.png"), "out": str(tmp_path / "m")}),
        "{not json",
        json.dumps({"task": "single", "input": str(image), "prompt": "b", "out": str(tmp_path / "b"), "seed": 2}),
    ]) + "\n")
    assert sample(f"inputs={jobs}", *FAST) == 2  # sampled the good jobs, then reported the bad ones
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert f"error: {jobs} line 3: not valid JSON (Expecting property name enclosed in double quotes at column 2)" in errors
    assert any(line.startswith(f"error: {jobs} line 2: input ") and "does not exist" in line for line in errors)
    assert "jobs: 2 sampled, 0 already finished, 2 failed" in captured.out
    for name, seed, prompt in (("a", 1, "a"), ("b", 2, "b")):
        settings = json.loads((tmp_path / name / "summary.json").read_text())["settings"]
        assert (settings["seed"], settings["prompt"], settings["inputs"]) == (seed, prompt, None)
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".*partial*"))
    # A different seed gives a different clip: the job's seed reached the sampler.
    with np.load(tmp_path / "a" / "pointmaps.npz") as a, np.load(tmp_path / "b" / "pointmaps.npz") as b:
        assert not np.array_equal(a["pointmaps"], b["pointmaps"])
    before = (tmp_path / "a" / "summary.json").stat().st_mtime_ns

    assert sample(f"inputs={jobs}", *FAST) == 2
    assert "jobs: 0 sampled, 2 already finished, 2 failed" in capsys.readouterr().out
    assert (tmp_path / "a" / "summary.json").stat().st_mtime_ns == before  # finished jobs are not sampled again


def test_a_jobs_file_equals_one_command_per_clip(tmp_path, image):
    jobs = tmp_path / "jobs.tsv"
    jobs.write_text(f"single\t{image}\ta red car\t{tmp_path / 'job'}\t4\n")
    assert sample(f"inputs={jobs}", *FAST) == 0
    assert sample(f"input={image}", "prompt=a red car", "seed=4", f"out={tmp_path / 'one'}", *FAST) == 0
    with np.load(tmp_path / "job" / "pointmaps.npz") as job, np.load(tmp_path / "one" / "pointmaps.npz") as one:
        assert np.array_equal(job["pointmaps"], one["pointmaps"]) and np.array_equal(job["rgb"], one["rgb"])


@pytest.mark.parametrize("overrides, message", [
    ([], "input=... is required"),
    (["input=x.png", "inputs=jobs.tsv"], "not both"),
    (["inputs=nope.tsv"], "inputs file nope.tsv cannot be read"),
])
def test_input_and_inputs_errors_are_one_line_before_loading(overrides, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("one4d.pipeline.loading.load_pipeline", lambda *a, **k: pytest.fail("a model was loaded"))
    assert sample(*overrides, "checkpoint=" + str(ROOT / "data/checkpoints/tiny")) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error
