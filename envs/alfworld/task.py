"""ALFWorld as a Task value (envs/task.py): text actions chosen among each step's admissible commands.

What differs from the gym_cards tasks is all in the Task's fields: `admissible` gives the parser the step's
commands (envs/parsing.py: parse_command sends the matched command, or the raw text, to the env), success is
"won" (the reward pays goal progress every step, so a lost episode's return can be positive), resets load a
game (`slow_reset`), evaluation reports success per task type (`episode_type`) and plays only the unseen
games (`held_out_seeds`), and λ is the paper's ALFWorld 0.2.
"""

from __future__ import annotations

from contracts.seeds import EVAL_SEED_BASE
from envs.alfworld import expert
from envs.alfworld.env import AlfworldEnv
from envs.parsing import parse_command
from envs.prompts import alfworld_prompt
from envs.task import Expert, Perception, Task, TaskDefaults, terminated_won


def admissible_commands(info: dict) -> list[str]:
    return info.get("admissible_commands", [])


def task_type(info: dict) -> str | None:
    return info.get("task_type")


# Prompts carry the scene text and every admissible command (up to ~720 tokens, 350 on average); expert answers
# are at most 56 tokens, so 80 new tokens. Env steps cost ~0.05 s and prompts are ~3x a card task's: 128 env
# steps per update fit the 2-core time budget (the preset, contracts/presets.py, sizes the rest).
ALFWORLD = Task(
    name="alfworld",
    make_env=AlfworldEnv,
    prompt=alfworld_prompt,
    parse=parse_command,
    admissible=admissible_commands,
    success=terminated_won,
    expert=Expert(expert.noisy_action, expert.response),
    perception=Perception(expert.labels, expert.LABEL_CLASSES),
    corpus=expert.corpus,
    defaults=TaskDefaults(max_new_tokens=80, steps_per_update=128, cot_coef=0.2),
    slow_reset=True,
    episode_type=task_type,
    held_out_seeds=(EVAL_SEED_BASE, 2 * EVAL_SEED_BASE),
)
