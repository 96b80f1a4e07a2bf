"""The paper's Tables 3-6 in tables.md: published rows transcribed, this evaluation's rows beside them
(by benchmark, sparsity and guidance scale), the depth protocol named, and one Hydra multirun filling them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf.errors import OmegaConfBaseException

from one4d.eval.datasets import BENCHMARK_SEQUENCES
from one4d.eval.driver import run_guidance, run_name
from one4d.eval.tables import (
    PAPER_TABLES, TABLE3, TABLE4, TABLE5, TABLE6, describe_protocol, render_report, render_run,
)
from test_eval_datasets import make_fake_bonn, make_fake_sintel

REPO = Path(__file__).resolve().parents[1]
BONN = ("balloon2", "crowd2", "crowd3", "person_tracking2", "synchronous")
GEO4D_SINTEL = {"align": "scale&shift", "max_depth": 70.0, "post_clip_max": 70.0, "protocol": "geo4d"}


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides))


def record(benchmark, sparsity=None, guidance=None, label="One4D (ours)", depth=(0.3, 0.7), pose=None,
           metrics=GEO4D_SINTEL, skipped=None) -> dict:
    """A run over the whole benchmark (every sequence counted), as the paper's rows are."""
    counts = {part: len(names) for part, names in BENCHMARK_SEQUENCES[benchmark].items()}
    average = {"depth": {"abs_rel": depth[0], "delta_1_25": depth[1], "sequences": counts.get("depth", 1)}}
    if pose:
        average["pose"] = {"ate": pose[0], "rpe_trans": pose[1], "rpe_rot": pose[2], "sequences": counts.get("pose", 1)}
    return {"benchmark": benchmark, "sparsity": sparsity, "guidance_scale": guidance, "label": label, "metrics": metrics,
            "result": {"sequences": {}, "skipped": skipped or {}, "average": average}}


def section(report: str, number: int) -> str:
    return report.split(f"## Table {number}:")[1].split("\n## ")[0]


def test_paper_rows_are_transcribed_whole():
    assert [len(PAPER_TABLES[n]["rows"]) for n in (3, 4, 5, 6)] == [11, 6, 7, 5]
    assert all(PAPER_TABLES[n]["source"] == f"One4D paper, Table {n}" for n in (3, 4, 5, 6))
    assert ("Robust-CVD", "R", (0.703, 47.8), None) in TABLE3["rows"]
    assert ("CUT3R", "R", (0.208, 0.062, 0.610), (0.046, 0.014, 0.446)) in TABLE4["rows"]
    assert (0.03, None, (0.277, 71.1)) in TABLE5["rows"] and (None, (0.273, 70.4), (0.092, 93.7)) in TABLE5["rows"]
    assert ("Step=3000", None, (0.284, 68.1), (0.097, 91.8)) in TABLE6["rows"]
    report = render_report([])
    for line in ("| Marigold (paper) | R | 0.532 | 51.5 | 0.091 | 93.1 |", "| Robust-CVD (paper) | R | 0.703 | 47.8 | - | - |",
                 "| Geo4D-ref (paper) | R | 0.185 | 0.063 | 0.547 | 0.073 | 0.020 | 0.635 |",
                 "| 0.04 | One4D (paper) | - | - | 0.191 | 82.5 |", "| Full | One4D (paper) | 0.273 | 70.4 | 0.092 | 93.7 |",
                 "| CFG=5 | One4D (paper) | 0.259 | 70.9 | 0.090 | 94.1 |", "| Step=1000 | One4D (paper) | 0.331 | 65.4 | 0.114 | 88.9 |"):
        assert line in report
    assert report.count("No run of this evaluation fills this table yet.") == 4


def test_guidance_runs_land_in_table_6_and_default_runs_in_tables_3_to_5():
    runs = [record("sintel", guidance=6.0, depth=(0.25, 0.71), pose=(0.2, 0.05, 0.8)), record("bonn", guidance=6.0, depth=(0.09, 0.94)),
            record("sintel", guidance=4.0, depth=(0.26, 0.72)), record("bonn", guidance=4.0, depth=(0.08, 0.95)),
            record("sintel", guidance=5.0, depth=(0.27, 0.73)), record("sintel", 0.5, guidance=6.0, depth=(0.31, 0.70)),
            record("bonn", 0.03, guidance=4.0, depth=(0.28, 0.71))]
    report = render_report(runs)
    table3, table4, table5, table6 = (section(report, n) for n in (3, 4, 5, 6))
    assert "| One4D (ours) | G&R | 0.250 | 71.0 | 0.090 | 94.0 |" in table3 and "CFG=4" not in table3
    assert "| One4D (ours) | G&R | 0.200 | 0.050 | 0.800 | - | - | - |" in table4
    assert "| 0.50 | One4D (ours) | 0.310 | 70.0 | - | - |" in table5
    assert "| 0.03 | One4D (ours), CFG=4 | - | - | 0.280 | 71.0 |" in table5  # a sparse run off the default scale says so
    assert "| Full | One4D (ours) | 0.250 | 71.0 | 0.090 | 94.0 |" in table5
    lines = table6.splitlines()
    at = lines.index("| CFG=4 | One4D (paper) | 0.257 | 71.5 | 0.092 | 94.0 |")
    assert lines[at + 1] == "| CFG=4 | One4D (ours) | 0.260 | 72.0 | 0.080 | 95.0 |"
    assert "| CFG=5 | One4D (ours) | 0.270 | 73.0 | - | - |" in lines and "| CFG=6 | One4D (ours) | 0.250 | 71.0 | 0.090 | 94.0 |" in lines
    assert "Geo4D protocol (scale&shift, Adam lr 1e-2, post-clip 70)" in table6.split("| Setting")[0]
    single = render_run(runs[2])
    assert "# Sintel, CFG 4" in single and "## Table 6" in single and "## Table 3" not in single


def test_header_names_each_rows_protocol_with_fallbacks():
    cut3r = {"align": "scale", "protocol": "cut3r", "post_clip_max": 70.0}
    assert describe_protocol(cut3r) == "CUT3R protocol (scale, 10 reweighting rounds, post-clip 70)"
    before_protocols = {"align": "scale&shift", "post_clip_max": None}
    assert describe_protocol(before_protocols) == "exact protocol (scale&shift, exact L1 fit)"
    assert describe_protocol(None) == "unknown protocol"
    old = record("bonn", label="old run", metrics=None)
    del old["metrics"], old["guidance_scale"]  # a record written before either was stored
    bonn = dict(GEO4D_SINTEL, post_clip_max=None, protocol="monst3r")
    table3 = section(render_report([record("sintel"), record("bonn", metrics=bonn), old]), 3)
    header = table3.split("| Method")[0]
    assert "Sintel: Geo4D protocol (scale&shift, Adam lr 1e-2, post-clip 70)" in header
    assert "Bonn: MonST3R protocol (scale&shift, Adam lr 1e-4) for One4D (ours) / unknown protocol for old run" in header
    assert "| old run | G&R | - | - | 0.300 | 70.0 |" in table3


def test_run_folder_names_and_recorded_guidance():
    assert run_name("sintel", 0.5) == "sintel_sparsity0.5" and run_name("tum", None) == "tum"  # existing names kept
    assert run_name("sintel", None, 6.0) == "sintel" and run_name("sintel", 0.5, 4.0) == "sintel_sparsity0.5_cfg4"
    assert run_name("bonn", None, 5) == "bonn_cfg5" and run_name("bonn", 0.25, 1.5) == "bonn_sparsity0.25_cfg1.5"
    assert run_guidance(config("root=/x")) == 6.0  # mode=model samples with the configured scale
    assert run_guidance(config("root=/x", "model_predictor.guidance_scale=4")) == 4.0
    assert run_guidance(config("root=/x", "mode=oracle")) is None


def test_root_comes_from_the_roots_map_or_root():
    assert config("benchmark=bonn", "roots.bonn=/data/bonn").root == "/data/bonn"
    assert config("benchmark=bonn", "roots.bonn=/data/bonn", "root=/elsewhere").root == "/elsewhere"
    with pytest.raises(OmegaConfBaseException, match="roots.tum"):
        _ = config("benchmark=tum", "roots.bonn=/data/bonn").root


def test_one_multirun_fills_tables_3_to_5(tmp_path):
    make_fake_sintel(tmp_path / "sintel")
    for name in BONN:
        make_fake_bonn(tmp_path / "bonn", name=name, frames=34)  # frames [30:140] leave 4
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "eval.py"), "-m", "benchmark=sintel,bonn", "sparsity=null,0.5",
                           "roots.sintel=sintel", "roots.bonn=bonn", "mode=oracle", "output_dir=out",
                           "strict=false"],  # the fake Sintel has 2 of its 23 sequences
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bonn", "out", "sintel"]  # Hydra wrote only into output_dir
    assert sorted(p.name for p in out.iterdir()) == ["multirun.yaml", "oracle_GT_noise", "tables.md"]
    assert sorted(p.name for p in (out / "oracle_GT_noise").iterdir()) == ["bonn", "bonn_sparsity0.5", "sintel", "sintel_sparsity0.5"]
    records = {p.parent.name: json.loads(p.read_text()) for p in out.glob("oracle_GT_noise/*/metrics.json")}
    assert all(r["guidance_scale"] is None for r in records.values())  # the oracle does not sample
    tables = (out / "tables.md").read_text()
    ours = [line for line in tables.splitlines() if "oracle (GT + noise)" in line]
    assert [line.split(" | ")[0] for line in ours] == ["| oracle (GT + noise)", "| oracle (GT + noise)", "| 0.50", "| Full"]
    cells = [[c.strip() for c in line.split("|")[3:7]] for line in (ours[0], ours[2], ours[3])]
    assert all(len(row) == 4 and "-" not in row for row in cells)  # Sintel and Bonn both filled
    assert "oracle" not in section(tables, 6) and "| MonST3R (paper) | R | 0.335 | 58.5 | 0.063 | 96.4 |" in tables
    for number, benchmark in ((3, "sintel"), (3, "bonn"), (5, "bonn")):
        assert describe_protocol(records[benchmark]["metrics"]) in section(tables, number).split("| ")[0]
