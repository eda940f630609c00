"""The paper-style results table from finished runs, beside the paper's own numbers (RL4VLM Tables 2 and 3).

    python -m benchmarks.paper_table                    # newest finished run per task and prompt under runs/
    python -m benchmarks.paper_table runs/nl4 runs/ezp2 # these runs only
    make table

Success is the held-out rate (episode return > 0) from each run's eval.json: the SFT start and after RL.
Points24 also shows the rate over solvable deals, since not every deal can make 24, and each run the task's
own noiseless expert on the same held-out deals (eval.json `expert_success`; Blackjack: basic strategy).
"""

from __future__ import annotations

import argparse
import json
import pathlib

TASKS = ("numberline", "ezpoints", "points24", "blackjack")  # the gym_cards table's columns
ORDER = (*TASKS, "alfworld")
SHORT = {"numberline": "NL", "ezpoints": "EZP", "points24": "P24", "blackjack": "BJ", "alfworld": "ALF"}
PAPER_ALFWORLD_RL = 21.7  # paper: ALFWorld average after RL (official games; ours are generated, see README)
PAPER = {  # success %, paper Table 2 (LLaVA-sft start and after RL) and Table 3 (RL without CoT)
    "sft": {"numberline": 24.8, "ezpoints": 23.0, "points24": 2.6, "blackjack": 23.1},
    "rl": {"numberline": 89.4, "ezpoints": 50.0, "points24": 2.3, "blackjack": 40.2},
    "rl_no_cot": {"numberline": 26.9, "ezpoints": 29.9, "points24": 0.0, "blackjack": 40.4},
}
# The field since the paper, after RL (success %; each paper against its own RL4VLM re-run, validation success
# where RL4VLM reported running training success): ../shared/notes/peers.md §7.
ANCHORS = (
    ("CoSo, LLaVA-7B (ICML 2025)", {"numberline": 100.0, "ezpoints": 50.0, "points24": 5.8, "blackjack": 41.5}),
    ("GTR, LLaVA-7B + GPT-4o on the thoughts (ICCV 2025)", {"numberline": 100.0, "ezpoints": 100.0, "points24": 17.5}),
    ("GTR-Turbo, Qwen2.5-VL-7B (CVPR 2026)", {"points24": 53.5}),
    ("GiGPO, Qwen2.5-VL-3B (verl-agent README)", {"numberline": 100.0, "ezpoints": 100.0}),
)
ANCHORS_NOTE = (
    "Field rows: published after-RL success of each method on its own protocol (not re-run here). ALFWorld "
    "(image + text): CoSo 26.5 % on the official games, which are not the generated games of ours."
)


def find_runs(paths: list[str], runs_dir: str = "runs") -> dict[tuple[str, bool], dict]:
    """eval.json of each (task, cot): the given run folders, or else the newest finished run of each."""
    files = [pathlib.Path(p) / "eval.json" for p in paths] or sorted(
        pathlib.Path(runs_dir).glob("*/eval.json"), key=lambda f: f.stat().st_mtime
    )
    found = {}
    for path in files:
        result = json.loads(path.read_text())
        result["run"] = path.parent.name
        found[(result["task"], result.get("cot", True))] = result  # later (newer) runs win
    return found


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _avg(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values) / len(values)


def table(found: dict[tuple[str, bool], dict]) -> str:
    def ours(key: str, cot: bool = True) -> list[float | None]:
        return [found[(t, cot)][key] if (t, cot) in found else None for t in TASKS]

    def paper(key: str) -> list[float]:
        return [PAPER[key][t] / 100 for t in TASKS]

    rows = [
        ("paper: LLaVA-1.6-7B SFT start", paper("sft")),
        ("paper: after RL (CoT)", paper("rl")),
        ("ours: SFT start (CoT)", ours("sft_success")),
        ("ours: after RL (CoT)", ours("final_success")),
        ("paper: after RL, w/o CoT", paper("rl_no_cot")),
        ("ours: SFT start, w/o CoT", ours("sft_success", cot=False)),
        ("ours: after RL, w/o CoT", ours("final_success", cot=False)),
        *((f"field: {name}", [rates[t] / 100 if t in rates else None for t in TASKS]) for name, rates in ANCHORS),
    ]
    header = "| success % (held-out) | " + " | ".join(SHORT[t] for t in TASKS) + " | avg |"
    lines = [header, "|---" * (len(TASKS) + 2) + "|"]
    lines += [f"| {name} | " + " | ".join(map(_pct, v)) + f" | {_pct(_avg(v))} |" for name, v in rows]
    details = [
        "",
        ANCHORS_NOTE,
        "",
        "| run | task | CoT | episodes | SFT | after RL | expert, same deals | solvable deals: SFT → RL | updates "
        "| env steps | SFT min | PPO min |",
        "|---" * 12 + "|",
    ]
    for (task, cot), r in sorted(found.items(), key=lambda kv: (ORDER.index(kv[0][0]), not kv[0][1])):
        solvable = (
            f"{_pct(r.get('sft_success_on_solvable'))} → {_pct(r.get('final_success_on_solvable'))}"
            if r.get("solvable_frac", 1.0) < 1.0  # only Points24 deals can be unsolvable
            else "–"
        )
        sft_min = f"{r['sft_wall_clock_s'] / 60:.1f}" if r.get("sft_wall_clock_s") else "–"
        details.append(
            f"| {r['run']} | {SHORT[task]} | {'✓' if cot else '✗'} | {r['episodes']} | {_pct(r['sft_success'])} "
            f"| {_pct(r['final_success'])} | {_pct(r.get('expert_success'))} | {solvable} | {r['updates']} "
            f"| {r['train_env_steps']} | {sft_min} | {r['wall_clock_s'] / 60:.1f} |"
        )
    if ("alfworld", True) in found:  # per task type, beside the paper's average (not the same games)
        r = found[("alfworld", True)]
        types = sorted(r.get("final_success_by_type", {}))
        details += [
            "",
            f"| ALFWorld (paper after RL: {PAPER_ALFWORLD_RL} % avg) | " + " | ".join(types) + " |",
            "|---" * (len(types) + 1) + "|",
        ]
        for name, key in (("SFT start", "sft"), ("after RL", "final")):
            rates = r.get(f"{key}_success_by_type", {})
            details.append(f"| ours: {name} | " + " | ".join(_pct(rates.get(t)) for t in types) + " |")
    return "\n".join(lines + details)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper_table", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders (default: the newest finished run per task)")
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args(argv)
    found = find_runs(args.runs, args.runs_dir)
    if not found:
        raise SystemExit(f"no finished runs (eval.json) under {args.runs_dir}/ or in {args.runs}")
    print(table(found))


if __name__ == "__main__":
    main()
