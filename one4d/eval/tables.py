"""Markdown tables laid out like the paper's Tables 3 (video depth), 4 (camera pose), 5 (sparse
frames) and 6 (CFG scale): the paper's published rows (One4D and every baseline it lists) beside
this evaluation's rows, plus a per-sequence table for each run.

A run record is what ``scripts/eval.py`` writes to ``metrics.json``: ``{"benchmark", "sparsity",
"guidance_scale", "label", "metrics", "result"}``; ``metrics`` is the benchmark's metrics group
(``depth_metrics`` options, ``protocol`` included), ``result`` comes from
``one4d.eval.runner.evaluate``. Each depth table names the protocol behind its rows. Skipped
sequences are listed under the tables and their run's row is marked †, and a number that averages
fewer than all of its benchmark's sequences (``one4d.eval.datasets.BENCHMARK_SEQUENCES``: Sintel
depth 23, Sintel pose 14, Bonn 5, TUM 8) says so in its cell, "(partial n/N)", so an average is
never silently partial.
"""

from __future__ import annotations

from one4d.eval.datasets import BENCHMARK_SEQUENCES

# ----------------------------------------------------------------------------- the paper's rows
# Transcribed from the One4D paper; "-" in the paper is None. Depth cells: (Abs Rel, delta<1.25 %);
# pose cells: (ATE, RPE-T, RPE-R in degrees).
TABLE3 = {
    "source": "One4D paper, Table 3",
    "note": "baselines from the MonST3R and Geo4D papers; CUT3R through Geo4D's evaluation scripts",
    "rows": [  # (method, task, Sintel, Bonn)
        ("Marigold", "R", (0.532, 51.5), (0.091, 93.1)),
        ("Depth-Anything", "R", (0.367, 55.4), (0.106, 92.1)),
        ("NVDS", "R", (0.408, 48.3), (0.167, 76.6)),
        ("ChronoDepth", "R", (0.687, 48.6), (0.100, 91.1)),
        ("DepthCrafter", "R", (0.270, 69.7), (0.071, 97.2)),
        ("Robust-CVD", "R", (0.703, 47.8), None),
        ("CasualSAM", "R", (0.387, 54.7), (0.169, 73.7)),
        ("MonST3R", "R", (0.335, 58.5), (0.063, 96.4)),
        ("CUT3R", "R", (0.311, 62.0), (0.070, 96.7)),
        ("Geo4D-ref", "R", (0.205, 73.5), (0.059, 97.2)),
        ("One4D", "G&R", (0.273, 70.4), (0.092, 93.7)),
    ],
}
TABLE4 = {
    "source": "One4D paper, Table 4",
    "rows": [  # (method, task, Sintel, TUM-dynamics)
        ("Robust-CVD", "R", (0.360, 0.154, 3.443), (0.153, 0.026, 3.528)),
        ("CasualSAM", "R", (0.141, 0.035, 0.615), (0.071, 0.010, 1.712)),
        ("MonST3R", "R", (0.108, 0.042, 0.732), (0.063, 0.009, 1.217)),
        ("CUT3R", "R", (0.208, 0.062, 0.610), (0.046, 0.014, 0.446)),
        ("Geo4D-ref", "R", (0.185, 0.063, 0.547), (0.073, 0.020, 0.635)),
        ("One4D", "G&R", (0.213, 0.057, 0.818), (0.129, 0.022, 1.447)),
    ],
}
TABLE5 = {
    "source": "One4D paper, Table 5",
    "rows": [  # (sparsity, Sintel, Bonn); sparsity None is the paper's "Full Model" row
        (0.50, (0.314, 70.3), (0.094, 93.5)),
        (0.25, (0.443, 67.7), (0.094, 93.3)),
        (0.10, (0.453, 64.0), (0.099, 92.9)),
        (0.05, (0.641, 57.6), (0.151, 87.2)),
        (0.04, None, (0.191, 82.5)),
        (0.03, None, (0.277, 71.1)),
        (None, (0.273, 70.4), (0.092, 93.7)),
    ],
}
TABLE6 = {
    "source": "One4D paper, Table 6",
    "note": "One4D's default is CFG=6 after 5.5K training steps; the Step rows are earlier checkpoints at CFG=6",
    "rows": [  # (setting, guidance scale or None, Sintel, Bonn)
        ("CFG=4", 4.0, (0.257, 71.5), (0.092, 94.0)),
        ("CFG=5", 5.0, (0.259, 70.9), (0.090, 94.1)),
        ("Step=1000", None, (0.331, 65.4), (0.114, 88.9)),
        ("Step=3000", None, (0.284, 68.1), (0.097, 91.8)),
        ("CFG=6", 6.0, (0.273, 70.4), (0.092, 93.7)),  # the paper's "One4D (Ours)" row
    ],
}
PAPER_TABLES = {3: TABLE3, 4: TABLE4, 5: TABLE5, 6: TABLE6}
DEFAULT_GUIDANCE = 6.0  # the paper's CFG in every main experiment; other scales belong to Table 6
TITLES = {"sintel": "Sintel", "bonn": "Bonn", "tum": "TUM-dynamics"}
DEPTH_BENCHMARKS, POSE_BENCHMARKS = ("sintel", "bonn"), ("sintel", "tum")
DEPTH_METRICS, POSE_METRICS = ("Abs Rel↓", "δ<1.25↑"), ("ATE↓", "RPE-T↓", "RPE-R↓")

# ----------------------------------------------------------------------------- protocol names
PROTOCOL_NAMES = {"geo4d": "Geo4D", "monst3r": "MonST3R", "cut3r": "CUT3R", "exact": "exact"}
SOLVERS = {("geo4d", "scale&shift"): "Adam lr 1e-2", ("monst3r", "scale&shift"): "Adam lr 1e-4",
           ("cut3r", "scale&shift"): "Adam lr 1e-4", ("cut3r", "scale"): "10 reweighting rounds",
           ("exact", "scale&shift"): "exact L1 fit", ("exact", "scale"): "exact L1 fit"}


def describe_protocol(metrics: dict | None) -> str:
    """E.g. "Geo4D protocol (scale&shift, Adam lr 1e-2, post-clip 70)"; "exact" for runs recorded
    before protocols existed, "unknown" when the record has no metrics options at all."""
    if metrics is None:
        return "unknown protocol"
    protocol, align = metrics.get("protocol") or "exact", metrics.get("align", "scale&shift")
    details = [align, SOLVERS.get((protocol, align), "median ratio" if align == "median" else "")]
    if metrics.get("post_clip_max") is not None:
        details.append(f"post-clip {metrics['post_clip_max']:g}")
    return f"{PROTOCOL_NAMES.get(protocol, protocol)} protocol ({', '.join(d for d in details if d)})"


def protocol_line(runs: list[dict]) -> str:
    """The header line naming the depth protocol of each benchmark's rows."""
    parts = []
    order = list(TITLES)
    for benchmark in sorted({run["benchmark"] for run in runs}, key=lambda b: order.index(b) if b in order else len(order)):
        names: dict[str, list[str]] = {}
        for run in (r for r in runs if r["benchmark"] == benchmark):
            names.setdefault(describe_protocol(run.get("metrics")), []).append(row_name(run))
        if len(names) > 1:  # rows measured differently: say which is which
            names = {f"{name} for {', '.join(dict.fromkeys(rows))}": rows for name, rows in names.items()}
        parts.append(f"{TITLES.get(benchmark, benchmark)}: {' / '.join(names)}")
    return ("Depth of this evaluation's rows: " + "; ".join(parts)) if parts else ""


# ----------------------------------------------------------------------------- cells and rows
def coverage(run: dict | None, part: str) -> tuple[int, int] | None:
    """(sequences behind the run's ``part`` average, sequences of its benchmark); None when either is unknown."""
    expected = BENCHMARK_SEQUENCES.get(run["benchmark"], {}).get(part) if run else None
    average = run["result"]["average"].get(part) if run else None
    if expected is None or not average:
        return None
    covered = average.get("sequences", sum(part in m for m in run["result"]["sequences"].values()))
    return int(covered), len(expected)


def partial_mark(run: dict | None, part: str) -> str:
    """" (partial n/N)" when the run's ``part`` numbers average n < N of the benchmark's sequences, else ""."""
    counts = coverage(run, part)
    return f" (partial {counts[0]}/{counts[1]})" if counts and counts[0] < counts[1] else ""


PARTIAL_NOTE = ("(partial n/N): the number averages n of the benchmark's N sequences, so it does not compare with the "
                "paper's rows; every other number of this evaluation covers all N.")


def _cells(values, width: int, mark: str = "") -> list[str]:
    if values is None:
        return ["-"] * width
    if width == 2:
        return [f"{values[0]:.3f}{mark}", f"{values[1]:.1f}{mark}"]
    return [f"{v:.3f}{mark}" for v in values]


def _ours_depth(run) -> tuple[float, float] | None:
    depth = run["result"]["average"].get("depth") if run else None
    return (depth["abs_rel"], 100 * depth["delta_1_25"]) if depth else None


def _ours_pose(run) -> tuple[float, float, float] | None:
    pose = run["result"]["average"].get("pose") if run else None
    return (pose["ate"], pose["rpe_trans"], pose["rpe_rot"]) if pose else None


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(first: list[str], benchmarks: tuple[str, ...], metrics: tuple[str, ...]) -> list[str]:
    cells = first + [f"{TITLES[b]} {m}" for b in benchmarks for m in metrics]
    return [_row(cells), _row(["---"] * len(cells))]


def guidance(run: dict) -> float | None:
    """The run's CFG scale when it is not the default (None: default, or not a model run)."""
    scale = run.get("guidance_scale")
    return None if scale is None or float(scale) == DEFAULT_GUIDANCE else float(scale)


def row_name(run: dict) -> str:
    scale = guidance(run)
    return (run.get("label") or "Ours") + ("" if scale is None else f", CFG={scale:g}")


def _find(runs: list[dict], name: str, benchmark: str, sparsity=None) -> dict | None:
    for run in runs:
        if row_name(run) == name and run["benchmark"] == benchmark and run.get("sparsity") == sparsity:
            return run
    return None


def _our_rows(runs: list[dict], benchmarks, width: int, ours, sparsity=None, before=(), after=()) -> list[str]:
    """One row per row name over ``runs`` at ``sparsity``; a run with skipped sequences is marked †, a number
    over part of its benchmark "(partial n/N)"."""
    lines, part = [], "depth" if width == 2 else "pose"
    for name in dict.fromkeys(map(row_name, runs)):
        found = [_find(runs, name, b, sparsity) for b in benchmarks]
        if any(found):
            marked = " †" if any(run and run["result"]["skipped"] for run in found) else ""
            cells = [c for run in found for c in _cells(ours(run), width, partial_mark(run, part))]
            lines.append(_row([*before, name + marked, *after] + cells))
    return lines


def _full(runs: list[dict], benchmarks) -> list[dict]:
    """Full-video runs of ``benchmarks`` at the default guidance (Tables 3, 4 and 5's Full rows)."""
    return [r for r in runs if r.get("sparsity") is None and guidance(r) is None and r["benchmark"] in benchmarks]


def _depth_runs(runs: list[dict], sparse: bool) -> list[dict]:
    """Sintel and Bonn runs, sparse-frame (Table 5, any guidance) or full-video."""
    return [r for r in runs if (r.get("sparsity") is not None) == sparse and r["benchmark"] in DEPTH_BENCHMARKS]


def _sampled(runs: list[dict]) -> list[dict]:
    """Full-video depth runs that sampled with a known guidance scale (Table 6), the default one included."""
    return [r for r in _depth_runs(runs, sparse=False) if r.get("guidance_scale") is not None]


# ----------------------------------------------------------------------------- the four tables
def depth_table(runs: list[dict]) -> str:
    """Table 3: full-video depth on Sintel and Bonn."""
    lines = _header(["Method", "Task"], DEPTH_BENCHMARKS, DEPTH_METRICS)
    lines += [_row([f"{m} (paper)", t] + _cells(s, 2) + _cells(b, 2)) for m, t, s, b in TABLE3["rows"]]
    return "\n".join(lines + _our_rows(_full(runs, DEPTH_BENCHMARKS), DEPTH_BENCHMARKS, 2, _ours_depth, after=["G&R"]))


def pose_table(runs: list[dict]) -> str:
    """Table 4: camera pose on Sintel and TUM-dynamics."""
    lines = _header(["Method", "Task"], POSE_BENCHMARKS, POSE_METRICS)
    lines += [_row([f"{m} (paper)", t] + _cells(s, 3) + _cells(u, 3)) for m, t, s, u in TABLE4["rows"]]
    return "\n".join(lines + _our_rows(_full(runs, POSE_BENCHMARKS), POSE_BENCHMARKS, 3, _ours_pose, after=["G&R"]))


def sparsity_table(runs: list[dict]) -> str:
    """Table 5: depth from sparse frames, per ratio the paper's row then ours; the full-video rows last."""
    paper, sparse = {ratio: (s, b) for ratio, s, b in TABLE5["rows"]}, _depth_runs(runs, sparse=True)
    ratios = sorted({r for r in paper if r is not None} | {float(r["sparsity"]) for r in sparse}, reverse=True)
    lines = _header(["Sparsity", "Method"], DEPTH_BENCHMARKS, DEPTH_METRICS)
    for ratio in ratios + [None]:
        label = "Full" if ratio is None else f"{ratio:.2f}"
        s, b = paper.get(ratio, (None, None))
        lines.append(_row([label, "One4D (paper)"] + _cells(s, 2) + _cells(b, 2)))
        pool = _full(runs, DEPTH_BENCHMARKS) if ratio is None else sparse
        lines += _our_rows(pool, DEPTH_BENCHMARKS, 2, _ours_depth, ratio, before=[label])
    return "\n".join(lines)


def guidance_table(runs: list[dict]) -> str:
    """Table 6: full-video depth per CFG scale, the paper's row then ours; the paper's Step rows last."""
    model, paper = _sampled(runs), {g: (setting, s, b) for setting, g, s, b in TABLE6["rows"] if g is not None}
    scales = sorted(set(paper) | {float(r["guidance_scale"]) for r in model})
    lines = _header(["Setting", "Method"], DEPTH_BENCHMARKS, DEPTH_METRICS)
    for scale in scales:
        setting, s, b = paper.get(scale, (f"CFG={scale:g}", None, None))
        lines.append(_row([setting, "One4D (paper)"] + _cells(s, 2) + _cells(b, 2)))
        at_scale = [dict(r, guidance_scale=None) for r in model if float(r["guidance_scale"]) == scale]
        lines += _our_rows(at_scale, DEPTH_BENCHMARKS, 2, _ours_depth, before=[setting])
    steps = [(setting, s, b) for setting, g, s, b in TABLE6["rows"] if g is None]
    return "\n".join(lines + [_row([setting, "One4D (paper)"] + _cells(s, 2) + _cells(b, 2)) for setting, s, b in steps])


# ----------------------------------------------------------------------------- reports
def sequence_table(run: dict) -> str:
    """Per-sequence metrics of one run, its averages, and its skipped sequences with the reason."""
    result = run["result"]
    lines = [_row(["Sequence", "Frames", "Observed", *DEPTH_METRICS, *POSE_METRICS]), _row(["---"] * 8)]
    for name, metrics in result["sequences"].items():
        depth, pose = metrics.get("depth"), metrics.get("pose")
        lines.append(_row([name, str(metrics["frames"]), str(metrics.get("observed_frames", "-"))]
                          + _cells((depth["abs_rel"], 100 * depth["delta_1_25"]) if depth else None, 2)
                          + _cells((pose["ate"], pose["rpe_trans"], pose["rpe_rot"]) if pose else None, 3)))
    lines.append(_row(["**average**", "", ""] + _cells(_ours_depth(run), 2, partial_mark(run, "depth"))
                      + _cells(_ours_pose(run), 3, partial_mark(run, "pose"))))
    for name, reason in result["skipped"].items():
        lines.append(_row([f"~~{name}~~", "skipped", "", reason, "", "", "", ""]))
    return "\n".join(lines)


def _skipped_notes(runs: list[dict]) -> str:
    notes = [f"- {run['benchmark']} ({row_name(run)}, sparsity {run.get('sparsity')}): {reason}"
             for run in runs for name, reason in run["result"]["skipped"].items()]
    return ("† averages over the remaining sequences; skipped:\n" + "\n".join(notes)) if notes else ""


def _section(number: int, title: str, table: str, runs: list[dict], depth: bool = True) -> list[str]:
    """Heading, the paper rows' source, the protocol of this evaluation's rows (or that none fill it), the table."""
    paper = PAPER_TABLES[number]
    notes = [f"Paper rows: {paper['source']}" + (f" ({paper['note']})." if "note" in paper else "."),
             "No run of this evaluation fills this table yet." if not runs else protocol_line(runs) if depth else "",
             PARTIAL_NOTE if any(partial_mark(run, "depth" if depth else "pose") for run in runs) else ""]
    return [f"## Table {number}: {title}", "\n".join(n for n in notes if n), table]


def _tables(runs: list[dict], numbers=(3, 4, 5, 6)) -> list[str]:
    """The sections of tables ``numbers``; each names the protocol of the runs that fill it."""
    full = _full(runs, DEPTH_BENCHMARKS)
    sections = {3: ("video depth", depth_table, full),
                4: ("camera pose", pose_table, _full(runs, POSE_BENCHMARKS)),
                5: ("sparse-frame depth", sparsity_table, _depth_runs(runs, sparse=True) + full),
                6: ("CFG scale", guidance_table, _sampled(runs))}
    parts = []
    for n in numbers:
        title, table, rows = sections[n]
        parts += _section(n, title, table(runs), rows, depth=n != 4)
    return parts


def render_run(run: dict) -> str:
    """Markdown for one run: the paper tables it belongs to, then its per-sequence table."""
    benchmark, sparsity, scale = run["benchmark"], run.get("sparsity"), guidance(run)
    title = f"# {TITLES.get(benchmark, benchmark)}" + (f", sparsity {sparsity}" if sparsity is not None else "")
    title += f", CFG {scale:g}" if scale is not None else ""
    if sparsity is not None:
        numbers = (5,) if benchmark in DEPTH_BENCHMARKS else ()
    elif scale is not None:
        numbers = (6,) if benchmark in DEPTH_BENCHMARKS else ()
    else:
        numbers = tuple(n for n, benchmarks in ((3, DEPTH_BENCHMARKS), (4, POSE_BENCHMARKS)) if benchmark in benchmarks)
    partial = [f"{part} {counts[0]} of {counts[1]} sequences" for part in ("depth", "pose")
               if (counts := coverage(run, part)) and counts[0] < counts[1]]
    title += f" (partial: {', '.join(partial)})" if partial else ""
    parts = [title, *_tables([run], numbers), "## Per sequence", sequence_table(run), _skipped_notes([run])]
    return "\n\n".join(p for p in parts if p) + "\n"


def render_report(runs: list[dict]) -> str:
    """Tables 3 to 6 from every run found (any benchmark, sparsity, guidance and label)."""
    parts = ["# One4D evaluation", *_tables(runs), _skipped_notes(runs)]
    return "\n\n".join(p for p in parts if p) + "\n"
