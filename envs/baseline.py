"""The task's own expert, played without noise on the held-out seeds: what the trained policy is measured
against on the very deals it was evaluated on (Blackjack: basic strategy; the formula tasks: the solver).

Only for tasks whose episodes are cheap to play (not `slow_reset`): ALFWorld's oracle would load every game
again. Pure env code, no model: the driver calls it once per run (cluster/train.py).
"""

from __future__ import annotations

import numpy as np

from envs.task import Task
from envs.task_checks import checked_reset, checked_step


def expert_available(task: Task) -> bool:
    """Whether `expert_success` is worth running for `task` (it has an expert and its resets are cheap)."""
    return task.expert is not None and not task.slow_reset


def expert_episode(task: Task, seed: int, max_steps: int) -> bool:
    """One episode of the noiseless expert on `seed`; True when the task's success rule says it won."""
    env = task.make_env()
    _, info = checked_reset(env, seed)
    rng = np.random.default_rng(seed)  # unused by a noiseless expert, but its signature takes one
    rewards: list[float] = []
    terminated = False
    for _ in range(max_steps):
        action = task.expert.act(info, 0.0, rng)
        _, reward, terminated, truncated, info = checked_step(env, action)
        rewards.append(float(reward))
        if terminated or truncated:
            break
    return bool(task.success(rewards, terminated, info))


def expert_success(task: Task, seed_base: int, episodes: int, max_steps: int = 1000) -> float:
    """Success rate of the noiseless expert on seeds seed_base .. seed_base + episodes - 1 (the held-out
    evaluation's seeds: `env.eval_seed` and `run.eval_episodes`)."""
    wins = [expert_episode(task, seed_base + k, max_steps) for k in range(episodes)]
    return float(np.mean(wins))
