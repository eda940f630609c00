"""The benchmark suite (`make bench`, `python -m benchmarks`): where the time goes, measured side by side.

One module per comparison; each `run(ctx)` returns a report section (see report.py):

1. rollout.py      rollout actor (vLLM, batched) vs an RL4VLM-style loop (HF generate at batch 1 + scoring forward)
2. engines.py      vLLM vs HF generate at batch 1/16/64, default model and a ~100M variant
3. zero.py         learner samples/s: ZeRO-1/2/3 vs plain torch, same model and batch
4. weight_push.py  weight push time vs model size, share of rollout time, checksum cost
5. async_sync.py   async vs sync wall clock for the same updates
6. scaling.py      rollout throughput with 1 and 2 rollout actors
-  hotpath.py      py-spy profile of a training run, before/after the fix
7. throttle.py     the fix (rollout throttled by the replay backlog), before/after
8. families.py     rollout and learner speed of each tiny real VLM family; bf16 vs fp32 on the default model
"""
