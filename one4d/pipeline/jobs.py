"""A jobs file: many clips sampled by one command, shared out over data-parallel groups (issue 16 item 3).

    torchrun --nproc_per_node 8 scripts/sample.py inputs=jobs.jsonl checkpoint=... parallel.cfg=2

One job a line, either a JSON object or tab-separated columns, in the order task, input, prompt, out, seed::

    {"task": "full", "input": "clips/a.mp4", "prompt": "a dog runs", "out": "outputs/a", "seed": 0}
    sparse<TAB>clips/b.mp4<TAB>a cat sleeps<TAB>outputs/b<TAB>3

``prompt`` may be empty and ``seed`` left out (the config's ``seed``). Blank lines and lines starting with ``#``
are skipped; paths are relative to the current folder, like ``input=`` and ``out=``; every other setting is the
command line's. A job whose ``out`` holds a finished output (``summary.json``, written last) is skipped, so a
re-run resumes. A malformed line is one error line naming its line number; the other jobs still run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from one4d.conditioning import TASKS

from .outputs import SUMMARY_NAME

COLUMNS = ("task", "input", "prompt", "out", "seed")


@dataclass(frozen=True)
class Job:
    line: int
    task: str
    input: str
    prompt: str
    out: str
    seed: int

    @property
    def finished(self) -> bool:
        return (Path(self.out) / SUMMARY_NAME).is_file()

    def overrides(self) -> dict:
        """The config keys this job sets."""
        return {"task": self.task, "input": self.input, "prompt": self.prompt, "out": self.out, "seed": self.seed}


def parse_job(text: str, line: int, default_seed: int) -> Job:
    """One line (JSON object or tab-separated columns) -> a Job; ValueError naming what is wrong."""
    if text.lstrip().startswith("{"):
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(fields, dict):
            raise ValueError("a JSON line must be one object")
        unknown = sorted(set(fields) - set(COLUMNS))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; a job has {', '.join(COLUMNS)}")
    else:
        values = text.rstrip("\r\n").split("\t")
        if not 4 <= len(values) <= 5:
            raise ValueError(f"{len(values)} tab-separated columns; expected task, input, prompt, out[, seed]")
        fields = dict(zip(COLUMNS, values))
    missing = [key for key in ("task", "input", "out") if not fields.get(key)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if fields["task"] not in TASKS:
        raise ValueError(f"unknown task {fields['task']!r}; expected one of {', '.join(TASKS)}")
    seed = fields.get("seed", default_seed)
    if isinstance(seed, str):  # a TSV column (empty: the config's seed)
        seed = int(seed) if seed.strip().lstrip("-").isdigit() else (default_seed if not seed.strip() else seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be a whole number, got {fields.get('seed')!r}")
    prompt = fields.get("prompt") or ""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be text, got {prompt!r}")
    return Job(line, fields["task"], str(fields["input"]), prompt, str(fields["out"]), seed)


def read_jobs(path: str | Path, default_seed: int = 0) -> tuple[list[Job], list[str]]:
    """Every well-formed job of the file, and one error line per malformed line (with its line number).

    Two jobs writing the same ``out`` are an error on the second one. A missing or unreadable file is a ValueError.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"inputs file {path} cannot be read ({getattr(error, 'strerror', None) or error})") from None
    jobs, errors, outs = [], [], {}
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            job = parse_job(text, number, default_seed)
            out = Path(job.out).absolute()
            if out in outs:
                raise ValueError(f"out {job.out} is also line {outs[out]}'s")
        except ValueError as error:
            errors.append(f"{path} line {number}: {error}")
            continue
        outs[out] = number
        jobs.append(job)
    if not jobs and not errors:
        raise ValueError(f"inputs file {path} lists no jobs")
    return jobs, errors


def share(jobs: list[Job], groups: int, group: int) -> list[Job]:
    """The jobs of data-parallel group ``group`` of ``groups``: every groups-th, so long and short jobs mix."""
    return jobs[group::groups]
