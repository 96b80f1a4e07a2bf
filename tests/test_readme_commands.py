"""The READMEs' command blocks run as printed, in order, in a folder laid out like a fresh checkout (tests/fresh_layout.py:
the project's .venv, nothing activated), at tiny size; a printed command that does not work fails here.

What is changed to keep them cheap is listed in ``TINY``; what is not run is listed in ``SKIPPED`` with the reason.
Viewer commands serve until stopped: they run last (they need a sample's output), until the viewer says it serves.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fresh_layout import ROOT, free_port, fresh_env, make_layout, run_shell

DOCUMENTS = ("README.md", "one4d/pipeline/README.md")

# Not run, and why (first matching rule wins). Each is still checked as far as it can be: the executable it names
# exists in the layout, and a make target exists (make -n).
SKIPPED = (
    ("torchrun", "needs 8 GPUs and the Wan2.1-Fun-14B weights"),
    ("experiment=one4d_14b", "needs the Wan2.1-Fun-14B weights"),
    ("model=wan2.1-fun-14b-inp", "needs the Wan2.1-Fun-14B weights"),
    ("scripts/eval.py", "needs a benchmark download (MPI-Sintel, TUM-dynamics); tests/test_eval_*.py run it on fakes"),
    ("scripts/eval_tables.sh", "needs the three benchmark downloads; tests/test_eval_tables.py runs the sweep on fakes"),
    ("scripts/prepare_data.py", "needs a dataset download; tests/test_prepare_sources_*.py convert fixtures in each dataset's layout"),
    ("scripts/caption_clips.py", "needs a local vision-language model; tests/test_captioner.py runs it on a tiny random LLaVA"),
    ("make test", "the test suite itself"),
    ("make tiny-model", "27 minutes of training; tests/test_tiny_model.py runs its stages at reduced size"),
    ("make ablation", "9 minutes of training"),
    ("make demo", "2-4 min at full size; tests/test_demo.py runs its path at reduced size"),
)

# How a command is made tiny (script -> replacements and additions); the folder and input names stay as printed.
TINY = {
    "scripts/make_dataset.py": {"--num-clips": "2", "--frames": "5", "--height": "32", "--width": "32"},
    "scripts/train.py": {"train.checkpoint_every": "1", "train.report_to": "null", "train.progress_bar": "false",
                         "train.log_every": "0"},  # and train.steps: 2, or the printed count / 100 (400 -> 4)
    "scripts/sample.py": {"steps": "2", "postopt.iterations": "2", "progress": "false", "ply_stride": "0"},  # unless printed
}

# What each command must print besides exiting 0 (a substring of the command -> regexes on its stdout).
EXPECTED = {
    "run_dir=outputs/train/tiny train.resume=latest": [r"run directory: outputs/train/tiny \(resuming .*step-0000002\)",
                                                       r"checkpoint: outputs/train/tiny/checkpoints/step-0000004"],
    "run_dir=outputs/train/tiny": [r"run directory: outputs/train/tiny\n", r"checkpoint: outputs/train/tiny/checkpoints/step-0000002",
                                   r"continue this run .*: \.venv/bin/python scripts/train\.py .*train\.resume=latest"],
    "scripts/export_lora.py": [r"wrote outputs/lora/pytorch_lora_weights\.safetensors and .*comfyui\.safetensors"],
    "checkpoint=data/checkpoints/tiny": [r"from its sampling\.json", r"\(9 frames at 48x64", r"view it in 4D: \.venv/bin/python scripts/view\.py"],
    "checkpoint=outputs/train/tiny": [r"\(5 frames at 32x32"],
}


def documented_commands() -> list[tuple[str, str, str]]:
    """(document, line as printed, command without its comment) for every command of every ```bash block, in order;
    continuation lines are joined."""
    commands = []
    for document in DOCUMENTS:
        text = (ROOT / document).read_text()
        for block in re.findall(r"^[ \t]*```bash\n(.*?)^[ \t]*```", text, flags=re.S | re.M):
            pending = ""
            for line in block.splitlines():
                line = pending + line.strip()
                if line.endswith("\\"):
                    pending = line[:-1] + " "
                    continue
                pending = ""
                if line and not line.startswith("#"):
                    commands.append((document, line, shlex.join(shlex.split(line, comments=True))))
    return commands


def skip_reason(command: str) -> str | None:
    return next((reason for pattern, reason in SKIPPED if pattern in command), None)


def tiny(tokens: list[str]) -> list[str]:
    """The command at tiny size (see ``TINY``)."""
    script = next((token for token in tokens if token.startswith("scripts/")), None)
    changes = dict(TINY.get(script, {}))
    if script == "scripts/train.py":
        steps = next((t.split("=", 1)[1] for t in tokens if t.startswith("train.steps=")), None)
        changes["train.steps"] = str(max(2, int(steps) // 100)) if steps else "2"
    out, given = [], set()
    for index, token in enumerate(tokens):
        key = token.split("=", 1)[0]
        flag = tokens[index - 1] if index > 0 else None
        if key in changes and "=" in token:
            given.add(key)
            if script != "scripts/sample.py":  # a printed sampler setting is kept as printed
                token = f"{key}={changes[key]}"
        elif flag in changes:
            given.add(flag)
            token = changes[flag]
        out.append(token)
    for key, value in changes.items():
        if key not in given:
            out += [key, value] if key.startswith("--") else [f"{key}={value}"]
    return out


def is_viewer(command: str) -> bool:
    return "scripts/view.py" in command or command.startswith("make view")


def viewer_command(command: str) -> str:
    """A viewer command on a free port; plain ``make view`` opens the sampled full video (the demo is skipped)."""
    port = free_port()
    if command.startswith("make view"):
        folder = "" if "FOLDER=" in command else " FOLDER=outputs/full"
        return f"make -o .venv/.installed {command[len('make '):]}{folder} VIEW_ARGS='--port {port}'"
    return f"{command} --port {port}"


def serve_until_ready(command: str, cwd: Path, timeout: float = 120) -> str:
    """Start a viewer command, wait for its "viewing ... at http" line, stop it; returns what it printed."""
    process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=fresh_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    printed, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            printed.append(line)
            if line.startswith("viewing ") and "http://" in line:
                return "".join(printed)
        raise AssertionError(f"{command!r} did not start serving:\n{''.join(printed)[-3000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_every_printed_command_starts_without_an_activated_environment():
    # scripts/eval_tables.sh runs the repository's .venv/bin/python itself
    assert ".venv/bin/python" in (ROOT / "scripts" / "eval_tables.sh").read_text()
    bare = [line for _, line, _ in documented_commands() if not line.startswith((".venv/bin/", "make ", "scripts/eval_tables.sh "))]
    assert bare == [], "print .venv/bin/python (or a make target): nothing activates the environment"


def test_the_skip_list_is_explicit_and_used():
    commands = [command for _, _, command in documented_commands()]
    for pattern, reason in SKIPPED:
        assert reason and any(pattern in command for command in commands), f"unused skip rule {pattern!r}"


def test_readme_command_blocks_run_as_printed(tmp_path):
    layout = make_layout(tmp_path / "one4d")
    ran, skipped, viewers = [], [], []
    for document, line, command in documented_commands():
        tokens = shlex.split(command)
        reason = skip_reason(command)
        if reason:
            skipped.append((command, reason))
            if tokens[0] == "make":
                dry = run_shell(f"make -n -o .venv/.installed {tokens[1]}", layout)
                assert dry.returncode == 0, f"{document}: make target of `{line}` is missing: {dry.stderr}"
            else:
                assert (layout / tokens[0]).exists(), f"{document}: {tokens[0]} does not exist in a fresh layout"
                script = next((t for t in tokens if t.startswith("scripts/")), None)
                assert script is None or (layout / script).is_file(), f"{document}: {script} does not exist"
            continue
        if command in ran or command in viewers:
            continue  # printed twice (both READMEs): run once
        if is_viewer(command):
            viewers.append(command)
            continue
        run_as = shlex.join(tiny(tokens))
        result = run_shell(run_as, layout, timeout=600)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (
            f"{document}: `{line}` (run as `{run_as}`) failed with exit {result.returncode}:\n{result.stderr[-3000:]}")
        for pattern, expected in EXPECTED.items():
            if pattern in command:
                for regex in expected:
                    assert re.search(regex, result.stdout), f"{document}: `{line}` did not print /{regex}/:\n{result.stdout[-3000:]}"
                break
        ran.append(command)
    for command in viewers:
        serve_until_ready(viewer_command(command), layout)
        ran.append(command)
    assert len(ran) >= 12, ran
    assert not list((layout / "outputs").glob("train/20*")), "a command left a timestamped run folder"


@pytest.mark.parametrize("tokens, expected", [
    (["scripts/make_dataset.py", "--out", "data/synthetic", "--num-clips", "64"],
     ["scripts/make_dataset.py", "--out", "data/synthetic", "--num-clips", "2", "--frames", "5", "--height", "32", "--width", "32"]),
    (["scripts/sample.py", "steps=4", "out=x"], ["scripts/sample.py", "steps=4", "out=x", "postopt.iterations=2", "progress=false", "ply_stride=0"]),
])
def test_tiny_rewrites_only_what_it_lists(tokens, expected):
    assert tiny(tokens) == expected
