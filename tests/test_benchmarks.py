"""benchmarks: the pure report logic (stats, ratios, Markdown, README table), the profile and history
summaries, the CLI, and one slow smoke run of a cheap comparison in --quick mode into a tmp dir."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import cores, end_to_end, hotpath, learner_peak, report, throttle
from benchmarks.__main__ import NAMES, parse_args
from benchmarks.common import RunSpec, summarize_history


# ---- statistics and ratios -------------------------------------------------------------------------------------
def test_summarize_gives_min_median_max_and_drops_non_finite():
    s = report.summarize([3.0, 1.0, float("nan"), 2.0, 10.0, float("inf")])
    assert (s["min"], s["median"], s["max"], s["n"]) == (1.0, 2.5, 10.0, 4)
    empty = report.summarize([])
    assert empty["n"] == 0 and math.isnan(empty["median"])


def test_ratios_pair_repeats_when_both_sides_ran_in_every_repeat():
    assert report.paired_ratios([2.0, 9.0], [1.0, 3.0]) == [2.0, 3.0]  # per repeat, not 9/1
    assert sorted(report.paired_ratios([4.0], [1.0, 2.0])) == [2.0, 4.0]  # unequal counts: every pair
    assert report.paired_ratios([1.0, 2.0], [0.0, 1.0]) == [2.0]  # a zero denominator is skipped


def test_ratio_targets_in_both_directions():
    up = report.ratio("speed-up", [3.0, 1.0, 2.0], [1.0, 1.0, 1.0], target=1.5)
    assert up["median"] == 2.0 and up["min"] == 1.0 and up["max"] == 3.0 and up["met"] is True
    assert report.ratio("x", [1.0], [1.0], target=1.5)["met"] is False
    share = report.ratio("push share", [0.2], [10.0], target=0.05, direction="max", unit="fraction")
    assert share["median"] == pytest.approx(0.02) and share["met"] is True
    assert report.ratio("x", [1.0], [10.0], target=0.05, direction="max")["met"] is False
    assert report.ratio("no target", [1.0], [1.0])["met"] is None
    assert report.ratio("nothing measured", [], [], target=1.0)["met"] is False
    with pytest.raises(ValueError):
        report.ratio("x", [1.0], [1.0], target=1.0, direction="up")


def test_fmt_reads_well():
    assert report.fmt(1234.5) == "1,234" or report.fmt(1234.5) == "1,235"
    assert report.fmt(12.345) == "12.3" and report.fmt(0.0452) == "0.0452" and report.fmt(0.001) == "1.00e-03"
    assert report.fmt(float("nan")) == "n/a" and report.fmt(None) == "–" and report.fmt(0) == "0"


# ---- rendering -------------------------------------------------------------------------------------------------
def sample_report() -> dict:
    section = {
        "name": "rollout",
        "title": "1. Rollout",
        "setup": "one actor",
        "metrics": [report.metric("actor: env steps/s", "steps/s", [70.0, 72.0, 71.0])],
        "ratios": [
            report.ratio("actor / loop", [70.0, 72.0, 71.0], [10.0, 12.0, 10.0], target=10.0, headline=True),
            report.ratio("tokens", [1.0], [1.0]),
        ],
        "tables": [{"title": "by size", "columns": ["model", "s"], "rows": [["tiny", 0.5]]}],
        "notes": ["a note"],
        "started": {"time": "2026-11-24 10:00:00", "loadavg": [1.0, 1.0, 1.0]},
        "ended": {"loadavg": [1.5, 1.0, 1.0]},
        "seconds": 12.0,
        "repeats": 3,
        "quick": False,
    }
    return {
        "generated": "2026-11-24 10:00",
        "command": "python -m benchmarks",
        "quick": False,
        "repeats": 3,
        "machine": {"cores": 2, "cpu": "test CPU"},
        "started": {"loadavg": [1.0, 1.0, 1.0]},
        "ended": {"loadavg": [2.0, 1.0, 1.0]},
        "sections": [section],
    }


def test_markdown_has_headline_sections_and_load():
    md = report.render_markdown(sample_report())
    assert "## Headline ratios" in md and "## 1. Rollout" in md
    headline = md.split("## Headline ratios")[1].split("## 1. Rollout")[0]
    assert "actor / loop" in headline and "| tokens |" not in headline  # only headline ratios up top
    assert "| actor / loop | 6 | 7 | 7.1 | ≥ 10 | no | 3 |" in md  # paired: 7.0, 6.0, 7.1 -> median 7 < 10
    assert "**by size**" in md and "- a note" in md and "3 repeat(s), 12 s, load average 1.0 → 1.5" in md
    assert "load average (1/5/15 min) at start [1.0, 1.0, 1.0], at end [2.0, 1.0, 1.0]" in md


def test_readme_table_is_replaced_between_markers_only():
    readme = f"# Title\n\n## Benchmarks\n\n{report.README_START}\nold table\n{report.README_END}\n\n## Next\n"
    table = report.headline_table(sample_report())
    once = report.update_readme(readme, table)
    assert "old table" not in once and table in once
    assert once.startswith("# Title\n\n## Benchmarks\n\n") and once.endswith(f"{report.README_END}\n\n## Next\n")
    assert report.update_readme(once, table) == once  # idempotent
    assert "docs/bench/report.md" in table and "| actor / loop |" in table and "| tokens |" not in table
    quick = sample_report()
    quick["sections"][0].update(quick=True, repeats=1)
    assert "| 1, quick |" in report.headline_table(quick)
    with pytest.raises(ValueError):
        report.update_readme("# no markers\n", table)
    with pytest.raises(ValueError):
        report.update_readme(readme + readme, table)


def test_partial_runs_replace_their_sections_and_keep_suite_order():
    old = [{"name": "zero", "v": 1}, {"name": "rollout", "v": 1}]
    merged = report.merge_sections(old, [{"name": "zero", "v": 2}, {"name": "scaling", "v": 2}], NAMES)
    assert [s["name"] for s in merged] == ["rollout", "zero", "scaling"]
    assert [s["v"] for s in merged] == [1, 2, 2]


# ---- profile and run summaries ---------------------------------------------------------------------------------
def test_collapsed_stacks_give_group_shares_busy_and_top_frames():
    text = "\n".join(
        [
            # the learner's real call paths, in the qualified names benchmarks/hotpath.py groups by
            'process 1:"ray::LearnerWorker";LearnerWorker.update (learner/learner.py:148);'
            "ppo_update (learner/ppo_update.py:213);proximal_pass (learner/ppo_update.py:97);"
            "WrappedModelStep.score (learner/step_model.py:34);mm (t.py:9) 60",
            "LearnerWorker.update (learner/learner.py:148);ppo_update (learner/ppo_update.py:220);"
            "ppo_epochs (learner/ppo_update.py:165);WrappedModelStep.backward (learner/step_model.py:51);"
            "DeepSpeedEngine.backward (e.py:3);run (g.py:1) 30",
            "LearnerWorker.update (learner/learner.py:148);ppo_update (learner/ppo_update.py:220);"
            "ppo_epochs (learner/ppo_update.py:160);LearnerWorker._collate (learner/learner.py:134);"
            "collate (learner/batch.py:109) 10",
            "garbage line",
        ]
    )
    stacks = hotpath.parse_collapsed(text)
    assert len(stacks) == 3 and stacks[0][0][0].startswith("LearnerWorker.update")  # process frame dropped
    out = hotpath.summarize_profile(stacks, hotpath.ROLES["LearnerWorker"], window_s=4.0)
    assert out["samples"] == 100 and out["busy"] == pytest.approx(100 / (hotpath.RATE * 4.0))
    shares = out["shares"]
    assert shares["forward passes (proximal + PPO)"] == pytest.approx(0.6)
    assert shares["backward"] == pytest.approx(0.3) and shares["collate (pixels, padding)"] == pytest.approx(0.1)
    assert shares["optimizer step"] == 0.0
    assert out["top_self"][0] == ("mm (t.py:9)", pytest.approx(0.6))


def test_history_summary_counts_the_ppo_loop_only():
    rows = [
        {"update": 0, "eval/success": 0.5, "time/elapsed_s": 10.0},
        {"update": 1, "learner/samples": 260.0, "rollout/env_steps": 500.0, "learner/staleness_mean": 0.0},
        {"update": 2, "learner/samples": 258.0, "rollout/env_steps": 300.0, "learner/staleness_mean": 1.0},
        {"update": 2, "eval/success": 0.9, "time/elapsed_s": 99.0},  # final evaluation: not in the loop
    ]
    for r, t, s in zip(rows[1:3], (20.0, 40.0), (5.0, 7.0)):
        r.update({"time/elapsed_s": t, "timing/train_s": s, "replay/evicted_steps": 100.0 * r["update"]})
    out = summarize_history(rows)
    assert out["updates"] == 2 and out["loop_s"] == 30.0 and out["steady_s"] == 20.0
    assert out["collected_steps"] == 800.0 and out["used_steps"] == 518.0
    assert out["used_frac"] == pytest.approx(518 / 800) and out["staleness"] == 0.5
    assert out["evicted_steps"] == 200.0 and out["train_s_median"] == 7.0


def test_throttle_notes_say_what_the_numbers_show():
    def notes(wall: float, learner: float = 1.05, work: float = 0.19) -> str:
        ratios = [report.ratio("wall", [wall], [1.0]), report.ratio("learner", [learner], [1.0])]
        ratios.append(report.ratio("work", [work], [1.0]))
        return throttle.notes(ratios, [{"used_frac": 0.14}], [{"used_frac": 0.71}])[0]

    assert "14% -> 71%" in notes(1.0) and "0.19x" in notes(1.0)
    assert "did not change (1.00x)" in notes(1.0)
    assert "faster (1.47x" in notes(1.47)
    assert "slower (0.80x" in notes(0.8)


def test_async_bound_and_hidden_share_come_from_the_learner_time():
    rows = [{"update": 0, "time/elapsed_s": 10.0}]
    rows += [
        {
            "update": u,
            "learner/samples": 256.0,
            "learner/staleness_mean": 0.0,
            "timing/train_s": 20.0,
            "time/elapsed_s": 10.0 + 25.0 * u,
        }
        for u in (1, 2, 3)
    ]
    summary = summarize_history(rows)
    assert summary["train_s_total"] == 60.0
    assert summary["loop_s"] / summary["train_s_total"] == pytest.approx(1.25)


def test_run_specs_name_their_runs_and_pass_the_throttle():
    assert RunSpec("sync", 1.0).args() == ["--run.mode", "sync", "--rollout.num-actors", "1"] + [
        "--rollout.max-backlog-updates",
        "1.0",
    ]
    assert "--rollout.max-backlog-updates" not in RunSpec().args()
    assert RunSpec("async", 0.0).key() != RunSpec("async", 1.0).key() != RunSpec().key()


# ---- CLI -------------------------------------------------------------------------------------------------------
def test_cli_defaults_subsets_and_readme_only_for_the_default_out(tmp_path):
    full = parse_args([])
    assert full.only == NAMES and full.repeats == 3 and full.readme is not None
    quick = parse_args(["--quick", "--only", "zero,rollout", "--out", str(tmp_path)])
    assert quick.repeats == 1 and quick.only == ["zero", "rollout"] and quick.readme is None
    assert parse_args(["--quick", "--repeats", "2"]).repeats == 2
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])
    with pytest.raises(SystemExit):
        parse_args(["--repeats", "0"])


def test_every_comparison_module_is_in_the_suite_and_small():
    import pathlib

    import benchmarks as pkg

    folder = pathlib.Path(pkg.__file__).parent
    comparisons = {p.stem for p in folder.glob("*.py") if re.search(r"^NAME = ", p.read_text(), re.M)}
    assert len(comparisons) >= 12 and len(NAMES) == len(set(NAMES)) == len(comparisons)  # none left out
    for path in folder.glob("*.py"):
        assert len(path.read_text().splitlines()) < 400, path


# ---- smoke: the real suite, quick, one cheap comparison ------------------------------------------------------------
@pytest.mark.slow
def test_quick_suite_writes_a_report(ray_cluster, tiny_model_path, tmp_path):
    from benchmarks.__main__ import main

    out = tmp_path / "bench"
    assert main(["--quick", "--only", "scaling", "--out", str(out), "--model", tiny_model_path]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["quick"] is True and rep["repeats"] == 1 and rep["machine"]["cores"] >= 1
    assert len(rep["started"]["loadavg"]) == 3 and len(rep["ended"]["loadavg"]) == 3
    [section] = rep["sections"]
    assert section["name"] == "scaling" and section["seconds"] > 0 and "FAILED" not in str(section.get("notes"))
    for m in section["metrics"]:
        assert m["n"] == 1 and 0 < m["min"] <= m["median"] <= m["max"]
    headline = [r for r in section["ratios"] if r["headline"]]
    assert headline and all(r["n"] == 1 and r["median"] > 0 for r in section["ratios"])
    md = (out / "report.md").read_text()
    assert "## Headline ratios" in md and section["title"] in md and headline[0]["label"] in md


# ---- end to end, cores busy, learner FLOPs ---------------------------------------------------------------------
def test_time_to_success_is_the_first_evaluation_at_the_target_after_the_start():
    rows = [
        {"update": 0, "eval/success": 0.95, "time/elapsed_s": 10.0},  # the SFT start does not count
        {"update": 5, "eval/success": 0.7, "time/elapsed_s": 60.0},
        {"update": 10, "eval/success": 0.92, "time/elapsed_s": 110.0},
        {"update": 25, "eval/success": 0.96, "time/elapsed_s": 300.0},
    ]
    assert end_to_end.time_to_success(rows, 0.9) == (100.0, 0.96)
    assert math.isnan(end_to_end.time_to_success(rows, 0.99)[0])


def test_core_sampler_counts_a_busy_child_over_the_window(tmp_path):
    history = tmp_path / "history.jsonl"
    with cores.CoreSampler(history, interval=0.05) as sampler:
        history.write_text("{}\n")
        time.sleep(0.3)
        busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1: pass"])
        busy.wait()
        time.sleep(0.2)
        history.write_text("{}\n{}\n")
        time.sleep(0.2)
    out = sampler.busy(0, 1)
    # The child spun ~1 s of a ~1.5 s window; its title is no actor's, so it is "other". (This session's own
    # Ray processes, descendants of pytest too, may add a little to every group.)
    assert out["other"] * out["capacity_s"] > 0.8 and 1.3 < out["capacity_s"] / (os.cpu_count() or 1) < 3
    assert out["all"] == pytest.approx(out["cpu_s"] / out["capacity_s"]) and out["all"] <= 1.0


def test_processes_are_grouped_by_the_title_ray_gives_an_actor():
    class Titled:
        def __init__(self, title):
            self.title = title

        def cmdline(self):
            return self.title.split()

    assert cores.group_of(Titled("ray::RolloutActor.collect")) == "rollout"
    assert cores.group_of(Titled("ray::LearnerWorker.update")) == "learner"
    assert cores.group_of(Titled("ray::IDLE")) == cores.group_of(Titled("python -m cluster.train")) == "other"


def test_update_flops_and_padding_from_the_rows_lengths():
    table = pa.table({"prompt_ids": [[1] * 10, [1] * 10, [1] * 12], "response_ids": [[2] * 4, [2] * 2, [2] * 4]})
    flops = {(10, 4): (1.0, 3.0), (10, 2): (2.0, 5.0), (12, 4): (4.0, 9.0)}
    # proximal 1 + 2 + 4, then 2 micro-batches of 2 rows at the mean forward + backward cost (17 / 3)
    assert learner_peak.update_flops([table], flops, 2, 2) == pytest.approx(7 + 4 * 17 / 3)
    rng = np.random.default_rng(0)
    waste = learner_peak.padding_waste([table], 3, rng)  # one micro-batch of all three, padded to 16 tokens
    assert waste == pytest.approx(48 / 42)
    assert learner_peak.padding_waste([table], 1, rng) == 1.0
