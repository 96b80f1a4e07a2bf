"""Markdown tables laid out like the paper's Tables 3 (video depth), 4 (camera pose) and 5 (sparse
frames), with the paper's One4D row beside ours, plus a per-sequence table for each run.

A run record is what ``scripts/eval.py`` writes to ``metrics.json``: ``{"benchmark", "sparsity",
"label", "result"}`` with ``result`` from ``one4d.eval.runner.evaluate``. Skipped sequences are
listed under the tables and their run's row is marked, so an average is never silently partial.
"""

from __future__ import annotations

# The paper's One4D numbers (paper section 4.3): Abs Rel, delta < 1.25 in percent.
PAPER_DEPTH = {"sintel": (0.273, 70.4), "bonn": (0.092, 93.7)}
# ATE, RPE-T, RPE-R (degrees).
PAPER_POSE = {"sintel": (0.213, 0.057, 0.818), "tum": (0.129, 0.022, 1.447)}
# Table 5: sparsity ratio -> benchmark -> (Abs Rel, delta %).
PAPER_SPARSE = {
    0.50: {"sintel": (0.314, 70.3), "bonn": (0.094, 93.5)},
    0.25: {"sintel": (0.443, 67.7), "bonn": (0.094, 93.3)},
    0.10: {"sintel": (0.453, 64.0), "bonn": (0.099, 92.9)},
    0.05: {"sintel": (0.641, 57.6), "bonn": (0.151, 87.2)},
    0.04: {"bonn": (0.191, 82.5)},
    0.03: {"bonn": (0.277, 71.1)},
}
TITLES = {"sintel": "Sintel", "bonn": "Bonn", "tum": "TUM-dynamics"}
DEPTH_BENCHMARKS, POSE_BENCHMARKS = ("sintel", "bonn"), ("sintel", "tum")


def _depth_cells(values) -> list[str]:
    return ["-", "-"] if values is None else [f"{values[0]:.3f}", f"{values[1]:.1f}"]


def _pose_cells(values) -> list[str]:
    return ["-", "-", "-"] if values is None else [f"{values[0]:.3f}", f"{values[1]:.3f}", f"{values[2]:.3f}"]


def _ours_depth(run) -> tuple[float, float] | None:
    depth = run["result"]["average"].get("depth") if run else None
    return (depth["abs_rel"], 100 * depth["delta_1_25"]) if depth else None


def _ours_pose(run) -> tuple[float, float, float] | None:
    pose = run["result"]["average"].get("pose") if run else None
    return (pose["ate"], pose["rpe_trans"], pose["rpe_rot"]) if pose else None


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _labels(runs: list[dict]) -> list[str]:
    return list(dict.fromkeys(run.get("label") or "Ours" for run in runs))


def _find(runs: list[dict], label: str, benchmark: str, sparsity=None) -> dict | None:
    for run in runs:
        if (run.get("label") or "Ours") == label and run["benchmark"] == benchmark and run.get("sparsity") == sparsity:
            return run
    return None


def _full_video_table(runs: list[dict], benchmarks: tuple[str, ...], metrics: tuple[str, ...], paper: dict, cells, ours) -> str:
    """Paper row then one row per label over full-video runs of ``benchmarks``; a run with skipped sequences is marked."""
    full = [r for r in runs if r.get("sparsity") is None and r["benchmark"] in benchmarks]
    lines = [_row(["Method", "Task"] + [f"{TITLES[b]} {m}" for b in benchmarks for m in metrics]),
             _row(["---"] * (2 + len(benchmarks) * len(metrics))),
             _row(["One4D (paper)", "G&R"] + [c for b in benchmarks for c in cells(paper[b])])]
    for label in _labels(full):
        found = [_find(full, label, b) for b in benchmarks]
        marked = any(run and run["result"]["skipped"] for run in found)
        lines.append(_row([label + (" †" if marked else ""), "G&R"] + [c for run in found for c in cells(ours(run))]))
    return "\n".join(lines)


def depth_table(runs: list[dict]) -> str:
    """Table 3: full-video depth on Sintel and Bonn."""
    return _full_video_table(runs, DEPTH_BENCHMARKS, ("Abs Rel↓", "δ<1.25↑"), PAPER_DEPTH, _depth_cells, _ours_depth)


def pose_table(runs: list[dict]) -> str:
    """Table 4: camera pose on Sintel and TUM-dynamics."""
    return _full_video_table(runs, POSE_BENCHMARKS, ("ATE↓", "RPE-T↓", "RPE-R↓"), PAPER_POSE, _pose_cells, _ours_pose)


def sparsity_table(runs: list[dict]) -> str:
    """Table 5: depth from sparse frames, paper rows and ours per ratio, then the full-video rows."""
    sparse = [r for r in runs if r.get("sparsity") is not None and r["benchmark"] in DEPTH_BENCHMARKS]
    ratios = sorted(set(PAPER_SPARSE) | {float(r["sparsity"]) for r in sparse}, reverse=True)
    header = [_row(["Sparsity", "Method"] + [f"{TITLES[b]} {m}" for b in DEPTH_BENCHMARKS for m in ("Abs Rel↓", "δ<1.25↑")]),
              _row(["---"] * 6)]
    lines = []
    for ratio in ratios:
        paper = PAPER_SPARSE.get(ratio, {})
        lines.append(_row([f"{ratio:.2f}", "One4D (paper)"] + [c for b in DEPTH_BENCHMARKS for c in _depth_cells(paper.get(b))]))
        for label in _labels(sparse):
            found = {b: _find(sparse, label, b, ratio) for b in DEPTH_BENCHMARKS}
            if any(found.values()):
                marked = any(run and run["result"]["skipped"] for run in found.values())
                lines.append(_row([f"{ratio:.2f}", label + (" †" if marked else "")]
                                  + [c for b in DEPTH_BENCHMARKS for c in _depth_cells(_ours_depth(found[b]))]))
    lines.append(_row(["Full", "One4D (paper)"] + [c for b in DEPTH_BENCHMARKS for c in _depth_cells(PAPER_DEPTH[b])]))
    return "\n".join(header + lines)


def sequence_table(run: dict) -> str:
    """Per-sequence metrics of one run, its averages, and its skipped sequences with the reason."""
    result = run["result"]
    lines = [_row(["Sequence", "Frames", "Observed", "Abs Rel↓", "δ<1.25↑", "ATE↓", "RPE-T↓", "RPE-R↓"]), _row(["---"] * 8)]
    for name, metrics in result["sequences"].items():
        depth, pose = metrics.get("depth"), metrics.get("pose")
        lines.append(_row([name, str(metrics["frames"]), str(metrics.get("observed_frames", "-"))]
                          + _depth_cells((depth["abs_rel"], 100 * depth["delta_1_25"]) if depth else None)
                          + _pose_cells((pose["ate"], pose["rpe_trans"], pose["rpe_rot"]) if pose else None)))
    lines.append(_row(["**average**", "", ""] + _depth_cells(_ours_depth(run)) + _pose_cells(_ours_pose(run))))
    for name, reason in result["skipped"].items():
        lines.append(_row([f"~~{name}~~", "skipped", "", reason, "", "", "", ""]))
    return "\n".join(lines)


def _skipped_notes(runs: list[dict]) -> str:
    notes = [f"- {run['benchmark']} ({run.get('label') or 'Ours'}, sparsity {run.get('sparsity')}): {reason}"
             for run in runs for name, reason in run["result"]["skipped"].items()]
    return ("† averages over the remaining sequences; skipped:\n" + "\n".join(notes)) if notes else ""


def render_run(run: dict) -> str:
    """Markdown for one run: the paper table it belongs to, then its per-sequence table."""
    benchmark, sparsity = run["benchmark"], run.get("sparsity")
    title = f"# {TITLES.get(benchmark, benchmark)}" + (f", sparsity {sparsity}" if sparsity is not None else "")
    parts = [title]
    if sparsity is not None:
        parts += ["## Table 5 layout: sparse-frame depth", sparsity_table([run])]
    else:
        if benchmark in DEPTH_BENCHMARKS:
            parts += ["## Table 3 layout: video depth", depth_table([run])]
        if benchmark in POSE_BENCHMARKS:
            parts += ["## Table 4 layout: camera pose", pose_table([run])]
    parts += ["## Per sequence", sequence_table(run), _skipped_notes([run])]
    return "\n\n".join(p for p in parts if p) + "\n"


def render_report(runs: list[dict]) -> str:
    """Tables 3, 4 and 5 from every run found (any benchmark, sparsity and label)."""
    parts = ["# One4D evaluation", "## Table 3: video depth", depth_table(runs), "## Table 4: camera pose", pose_table(runs)]
    if any(r.get("sparsity") is not None for r in runs):
        parts += ["## Table 5: sparse-frame depth", sparsity_table(runs)]
    parts.append(_skipped_notes(runs))
    return "\n\n".join(p for p in parts if p) + "\n"
