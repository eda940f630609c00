"""benchmarks/paper_table.py: picks the newest run per task and prompt, prints ours beside the paper's numbers."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.paper_table import find_runs, main, table


def write_run(root, name, task, sft, final, cot=True, mtime=0, **extra):
    folder = root / name
    folder.mkdir()
    result = {"task": task, "cot": cot, "episodes": 200, "sft_success": sft, "final_success": final, "updates": 25}
    result.update(train_env_steps=6000, wall_clock_s=600.0, sft_wall_clock_s=270.0, **extra)
    (folder / "eval.json").write_text(json.dumps(result))
    os.utime(folder / "eval.json", (mtime, mtime))


def test_table_rows_averages_and_newest_run_wins(tmp_path, capsys):
    write_run(tmp_path, "nl-old", "numberline", 0.2, 0.5, mtime=100)
    write_run(tmp_path, "nl-new", "numberline", 0.3, 0.9, mtime=200)
    write_run(tmp_path, "ezp", "ezpoints", 0.25, 0.6, mtime=150)
    write_run(
        tmp_path,
        "p24",
        "points24",
        0.02,
        0.04,
        mtime=150,
        solvable_frac=0.7,
        sft_success_on_solvable=0.025,
        final_success_on_solvable=0.05,
    )
    write_run(tmp_path, "bj", "blackjack", 0.3, 0.41, mtime=150, expert_success=0.442)
    write_run(tmp_path, "nl-nocot", "numberline", 0.3, 0.35, cot=False, mtime=150)
    found = find_runs([], str(tmp_path))
    assert found[("numberline", True)]["run"] == "nl-new"
    text = table(found)
    assert "| ours: after RL (CoT) | 90.0 | 60.0 | 4.0 | 41.0 | 48.8 |" in text
    assert "| paper: after RL (CoT) | 89.4 | 50.0 | 2.3 | 40.2 | 45.5 |" in text
    assert "| ours: after RL, w/o CoT | 35.0 | – | – | – | – |" in text  # no average over missing tasks
    assert "2.5 → 5.0" in text  # Points24 over solvable deals
    assert "| bj | BJ | ✓ | 200 | 30.0 | 41.0 | 44.2 | – |" in text  # basic strategy on the same deals
    assert "| field: CoSo, LLaVA-7B (ICML 2025) | 100.0 | 50.0 | 5.8 | 41.5 | 49.3 |" in text
    assert "| field: GTR-Turbo, Qwen2.5-VL-7B (CVPR 2026) | – | – | 53.5 | – | – |" in text
    main(["--runs-dir", str(tmp_path)])
    assert "nl-new" in capsys.readouterr().out


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no finished runs"):
        main(["--runs-dir", str(tmp_path)])


def test_alfworld_run_gets_a_detail_row_and_per_type_rates(tmp_path):
    by_type = {"pick_and_place_simple": 0.4, "pick_two_obj_and_place": 0.0}
    write_run(tmp_path, "alf", "alfworld", 0.1, 0.2, sft_success_by_type=by_type, final_success_by_type=by_type)
    write_run(tmp_path, "nl", "numberline", 0.3, 0.9, mtime=1)
    out = table(find_runs([str(tmp_path / "alf"), str(tmp_path / "nl")]))
    assert "| alf | ALF | ✓ |" in out
    assert "| ours: after RL | 40.0 | 0.0 |" in out
    assert out.splitlines()[0].count("|") == 7  # the gym_cards table keeps its four task columns
