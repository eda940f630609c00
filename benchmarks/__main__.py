"""Run the benchmark suite and write docs/bench/report.json, docs/bench/report.md and the README table.

    python -m benchmarks                      # everything, 3 repeats (what `make bench` runs)
    python -m benchmarks --quick              # 1 repeat, smallest sizes: a smoke test, ~6-10 min
    python -m benchmarks --only rollout,zero --repeats 5
    python -m benchmarks --quick --out /tmp/bench   # anywhere else: the README is left alone

A partial run (`--only`) replaces its sections in an existing report and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import shutil
import sys
import time
import traceback

from benchmarks import (
    async_sync,
    chaos,
    end_to_end,
    engines,
    families,
    hotpath,
    learner_peak,
    lora,
    report,
    rollout,
    scaling,
    soak,
    throttle,
    weight_push,
    zero,
)
from benchmarks.common import Context, start_ray

SUITE = [rollout, engines, zero, weight_push, async_sync, scaling, hotpath, throttle, families, lora, chaos, soak]
SUITE += [end_to_end, learner_peak]
NAMES = [m.NAME for m in SUITE]
DEFAULT_OUT = pathlib.Path("docs/bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, smallest sizes (a smoke test)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(NAMES)}")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per figure (default 3; --quick: 1)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="report folder (default docs/bench)")
    parser.add_argument("--model", default=Context.model, help="default policy checkpoint (built by SFT if missing)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (training runs, py-spy files)")
    parser.add_argument(
        "--readme", type=pathlib.Path, default=None, help="README to update (default: only with --out docs/bench)"
    )
    args = parser.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {NAMES}")
    args.only = only or NAMES
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.readme is None and args.out.resolve() == DEFAULT_OUT.resolve():
        args.readme = pathlib.Path("README.md")
    return args


def ensure_model(path: str) -> str:
    """The default policy: the NumberLine SFT checkpoint, built as `make train` builds it when missing."""
    if (pathlib.Path(path) / "config.json").exists():
        return path
    from cluster.train import ensure_sft_checkpoint
    from contracts.presets import numberline

    cfg = numberline()
    cfg.model.path = path
    return ensure_sft_checkpoint(cfg)


def write(out: pathlib.Path, rep: dict, readme: pathlib.Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / "report.md").write_text(report.render_markdown(rep))
    if readme is not None:
        readme.write_text(report.update_readme(readme.read_text(), report.headline_table(rep)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = Context(quick=args.quick, repeats=args.repeats, model=ensure_model(args.model))
    old_path = args.out / "report.json"
    old = json.loads(old_path.read_text()).get("sections", []) if old_path.exists() else []
    rep = {
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "repeats": args.repeats,
        "machine": report.machine_facts(),
        "started": report.machine_snapshot(),
        "sections": old,
    }
    start_ray(max(os.cpu_count() or 2, 3))  # logical CPUs: a 2-actor run asks for 3, as `make train` would
    failed = []
    for module in SUITE:
        if module.NAME not in args.only:
            continue
        print(f"[bench] {module.NAME}: {module.TITLE}", file=sys.stderr, flush=True)
        started, t0 = report.machine_snapshot(), time.perf_counter()
        try:
            section = module.run(ctx)
        except Exception as error:  # one broken comparison must not lose the others' numbers
            failed.append(module.NAME)
            traceback.print_exc()
            section = {"notes": [f"FAILED: {type(error).__name__}: {error}"]}
        section.update(name=module.NAME, title=module.TITLE, quick=args.quick)
        section.setdefault("repeats", args.repeats)  # a module that measures once says so itself
        section.update(started=started, ended=report.machine_snapshot(), seconds=time.perf_counter() - t0)
        rep["sections"] = report.merge_sections(rep["sections"], [section], NAMES)
        rep["ended"] = report.machine_snapshot()
        write(args.out, rep, args.readme)
        print(f"[bench] {module.NAME} done in {section['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(f"[bench] wrote {args.out / 'report.md'}" + (f" and {args.readme}" if args.readme else ""), file=sys.stderr)
    if args.keep:
        print(f"[bench] scratch kept in {ctx.work_dir}", file=sys.stderr)
    else:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    import ray

    from cluster.launch import shutdown_ray

    status = 1
    try:
        status = main()
    finally:
        if ray.is_initialized() and (kept := shutdown_ray(remove_temp_dir=status == 0)):
            print(f"[bench] Ray logs kept in {kept}", file=sys.stderr)
    sys.exit(status)
