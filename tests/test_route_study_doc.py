"""The answer table of docs/route_study.md says what the study's JSON files hold."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results/route_study"
DOC = REPO / "docs/route_study.md"
sys.path.insert(0, str(REPO / "benchmarks"))
from ablation_report import mean_sd, run_metrics  # noqa: E402

# part -> (files holding its primary-only runs, files holding its three-route runs)
SOURCES = {
    "a": (["a_700it"], ["a_700it"]),
    "b": (["b_1400it"], ["b_1400it"]),
    "c": (["c_300q"], ["c_300q"]),
    "d": (["d_warm"], ["d_warm"]),
    "e": (["e_d256"], ["e_d256"]),
    "g": (["a_700it"], ["g_maxk2"]),
    "i": (["b_1400it", "j_primary_1400it"], ["i_maxk2_1400it"]),
    "h": (["h_warm_1400it"], ["h_warm_1400it"]),
    "k": (["k_primary_2100it"], ["k_maxk2_2100it"]),
}


def _section_table(heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading`` (a line starting with it), header row first."""
    text = DOC.read_text()
    section = text[text.index(heading) :]
    lines = section[section.index("\n|") + 1 :].split("\n\n")[0].splitlines()
    return [[c.strip().replace("**", "") for c in line.strip("|").split("|")] for line in lines]


def _answer_rows() -> dict[str, list[str]]:
    return {cells[0]: cells for cells in _section_table("## The answer so far")[2:]}


def _part_e_metrics() -> dict[str, dict[str, dict[int, float]]]:
    """Every metric of part e's runs by setting (``run_metrics``), from ``e_d256.json``."""
    runs = json.loads((RESULTS / "e_d256.json").read_text())["runs"]
    return {r["setting"]: run_metrics(r) for r in runs}


def _finals(files: list[str], setting: str) -> list[dict[str, float]]:
    """The last value of every metric, one dict per run of ``setting`` in ``files``."""
    finals = []
    for name in files:
        for run in json.loads((RESULTS / f"{name}.json").read_text())["runs"]:
            if run["setting"] == setting and run.get("complete", True):
                finals.append({k: v[max(v)] for k, v in run_metrics(run).items()})
    return finals


def test_every_part_of_the_answer_table_has_its_sources():
    assert set(_answer_rows()) == set(SOURCES)


@pytest.mark.parametrize("part", sorted(SOURCES))
def test_answer_table_row_matches_the_json(part):
    cells = _answer_rows()[part]
    primary_files, three_files = SOURCES[part]
    primary = _finals(primary_files, "primary only")
    three = _finals(three_files, "all three routes")
    assert primary and three

    def mean(runs, key):
        return statistics.mean(r[key] for r in runs)

    seeds = sorted({int(s) for s in re.findall(r"\d+", cells[2])})
    assert len(primary) == len(three) == len(seeds), cells
    gap = mean(three, "primary AP") - mean(primary, "primary AP")
    best_aux = max(mean(three, "instruct AP, NMS"), mean(three, "sep_ffn AP, NMS"))
    expected = [
        mean_sd([r["primary AP"] for r in primary], digits=1),
        mean_sd([r["primary AP"] for r in three], digits=1),
        f"{gap:+.1f}",
        f"{mean(primary, 'primary AP, NMS'):.1f}",
        f"{mean(three, 'primary AP, NMS'):.1f}",
        f"{best_aux:.1f}",
    ]
    assert cells[3:9] == expected, f"part {part}: doc {cells[3:9]} vs JSON {expected}"


def test_part_e_table_matches_its_json():
    """Section e's table (what the runs of part e measured so far, finished or not) says what
    ``e_d256.json`` holds: each row a metric of one setting, each column an evaluation."""
    header, _, *rows = _section_table("### e. ")
    columns = [int(c.replace(",", "")) for c in header[2:]]
    runs = _part_e_metrics()
    assert set(runs) == {"primary only", "all three routes"}
    assert rows
    for label, setting, *cells in rows:
        values = runs[setting][label]
        digits = 2 if "/" in label else 1
        expected = [f"{values[c]:.{digits}f}" for c in columns]
        assert cells == expected, f"{label}, {setting}: doc {cells} vs JSON {expected}"


def test_readmes_quote_part_e_as_its_json_holds():
    """The README and benchmarks/README.md figures of part e are the values in ``e_d256.json``."""
    runs = _part_e_metrics()
    p, t = runs["primary only"], runs["all three routes"]

    def text(path: str) -> str:
        return " ".join((REPO / path).read_text().split())

    readme, bench = text("README.md"), text("benchmarks/README.md")
    final = max(p["primary AP"])
    gap = p["primary AP"][final] - t["primary AP"][final]
    raw_final = f"{t['primary AP'][final]:.1f} against {p['primary AP'][final]:.1f} raw"
    nms_final = f"{t['primary AP, NMS'][final]:.1f} against {p['primary AP, NMS'][final]:.1f}"
    assert f"the gap is {gap:.1f} AP: {raw_final}" in readme and nms_final in readme
    evals = sorted(p["primary AP"])
    gaps = [f"{p['primary AP'][i] - t['primary AP'][i]:.1f}" for i in evals]
    assert f"the raw gap is {', '.join(gaps[:-1])} and {gaps[-1]} AP" in bench
    raw = ", ".join(f"{p['primary AP'][i]:.1f} vs {t['primary AP'][i]:.1f}" for i in evals)
    nms = [f"{t['primary AP, NMS'][i]:.1f} vs {p['primary AP, NMS'][i]:.1f}" for i in evals]
    assert raw in bench and all(n in bench for n in nms)
