"""2. Inference engines: vLLM against HF transformers `generate` at batch 1, 16 and 64, on the default model and
on the ~100M-parameter variant.

Both engines are the project's own (actors/engines.py: the same sampling, banned tokens and processed
log-probs); each runs in its own 1-CPU Ray actor, and the two alternate call by call so that a busy moment of
the shared machine lands on both. Prompts are NumberLine prompts with their frames (different seeds per row).
"""

from __future__ import annotations

import time

import ray

from benchmarks import report
from benchmarks.common import Context, kill, kv_env, remote
from contracts.config import RolloutConfig

NAME = "engines"
TITLE = "2. Inference engines: vLLM vs HF generate at batch 1 / 16 / 64, default model and ~100M variant"
BACKENDS = ("vllm", "hf")


class EngineProbe:
    """One engine and a fixed set of prompts; `generate(batch)` times one batched call inside the actor."""

    def __init__(self, backend: str, model_path: str, max_new_tokens: int, rows: int = 64):
        from actors.engines import make_engine
        from envs import make_env
        from envs.prompts import task_prompt

        self.engine = make_engine(RolloutConfig(backend=backend, max_new_tokens=max_new_tokens), model_path, seed=0)
        env = make_env("numberline")
        frames = [env.reset(seed=i) for i in range(rows)]
        self.prompts = [self.engine.chat_prompt(task_prompt("numberline", info)) for _, info in frames]
        self.images = [obs for obs, _ in frames]

    def generate(self, batch: int) -> dict[str, float]:
        t0 = time.perf_counter()
        gens = self.engine.generate(self.prompts[:batch], self.images[:batch])
        seconds = time.perf_counter() - t0
        return {"tokens": float(sum(len(g.response_ids) for g in gens)), "seconds": seconds}


def run(ctx: Context) -> dict:
    batches = ctx.size((1, 16), (1, 16, 64))
    metrics, ratios, notes = [], [], []
    for m, (label, path) in enumerate(ctx.models()):
        big = m > 0
        max_new = ctx.size(16, RolloutConfig.max_new_tokens) if big else RolloutConfig.max_new_tokens
        probes = {b: remote(EngineProbe, env=kv_env(path, ctx)).remote(b, path, max_new) for b in BACKENDS}
        ray.get([p.generate.remote(1) for p in probes.values()])  # warm-up (first calls compile and allocate)
        for batch in batches:
            tps = {b: [] for b in BACKENDS}
            for _ in range(ctx.repeats):
                for backend, probe in probes.items():
                    out = ray.get(probe.generate.remote(batch))
                    tps[backend].append(out["tokens"] / out["seconds"])
            for backend in BACKENDS:
                metrics.append(report.metric(f"{label}, batch {batch}: {backend}", "tokens/s", tps[backend]))
            headline = batch == batches[-1]
            ratios.append(
                report.ratio(f"tokens/s vLLM / HF, {label}, batch {batch}", tps["vllm"], tps["hf"], headline=headline)
            )
        kill(*probes.values())
        notes.append(f"{label} ({path}): up to {max_new} new tokens per prompt.")
    notes.append(
        "Tokens/s counts generated tokens only (the prompt of ~214 tokens incl. 64 image tokens is prefilled on "
        "top). The ~100M variant is random-initialised: it rarely stops early, so its responses run to the cap."
    )
    return {
        "setup": "One engine per 1-CPU Ray actor, fp32, T = 0.2, one warm-up call first; repeats alternate engines.",
        "metrics": metrics,
        "ratios": ratios,
        "notes": notes,
    }
