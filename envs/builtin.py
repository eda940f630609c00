"""The four gym_cards tasks as Task values (envs/task.py): NumberLine, EZPoints, Points24, Blackjack.

Nothing here is special to the framework: each is the paper's env, prompt (envs/prompts.py), parser rule
(envs/parsing.py), success rule (return > 0), noisy expert (envs/experts.py) and its config defaults, wired
through the same fields a user task fills. ALFWorld's Task is envs/alfworld/task.py (it needs the alfworld
package, imported only when that task is used).
"""

from __future__ import annotations

import functools

from envs import experts, prompts
from envs.blackjack import BlackjackEnv
from envs.ezpoints import EZPointsEnv
from envs.numberline import NumberLineEnv
from envs.parsing import parse_action
from envs.points24 import Points24Env
from envs.task import Expert, Perception, Task, TaskDefaults

paper_parser = parse_action
"""The paper's gym_cards parser: exactly one action name after `"action":`, else a random one (spec §4)."""
ten_rule_parser = functools.partial(parse_action, ten_rule=True)
"""The same with the EZPoints/Points24 handling of "10" before single digits."""


def _solvable(info: dict) -> bool:
    return bool(info.get("solvable", True))


def _corpus(env_cls, best, prompt, response):
    return lambda: experts.episode_corpus(env_cls(), best, len(env_cls.action_names), prompt, response)


NUMBERLINE = Task(
    name="numberline",
    make_env=NumberLineEnv,
    prompt=prompts.numberline_prompt,
    parse=paper_parser,
    action_names=NumberLineEnv.action_names,
    expert=Expert(experts.noisy_numberline_action, experts.numberline_response),
    perception=Perception(experts.numberline_labels, (6, 6)),
    corpus=experts.numberline_corpus,
    defaults=TaskDefaults(max_new_tokens=96, steps_per_update=256, cot_coef=0.5),
)

# max_new_tokens of the card tasks: the longest expert answer in the task's tokenizer (measured over SFT
# demonstrations at noise 0, 0.45 and 1) plus ~40 %, as NumberLine's 96 is for its 56. λ and the steps per
# update are NumberLine's (the paper collected 1024 / 512 per update; contracts/presets.py says why not here).
EZPOINTS = Task(
    name="ezpoints",
    make_env=EZPointsEnv,
    prompt=prompts.ezpoints_prompt,
    parse=ten_rule_parser,
    action_names=EZPointsEnv.action_names,
    expert=Expert(experts.noisy_ezpoints_action, experts.ezpoints_response),
    perception=Perception(experts.card_labels, (experts.RANK_CLASSES,) * 2),
    corpus=_corpus(EZPointsEnv, experts.ezpoints_expert, prompts.ezpoints_prompt, experts.ezpoints_response),
    # Answers <= 91 tokens. The stop after the first action value: without it the held-out invalid share rose to
    # 8.3 % by update 50, answers that repeat a field and write a second action (2026-12-02, README).
    defaults=TaskDefaults(
        max_new_tokens=128, steps_per_update=256, cot_coef=0.5, config={"rollout.stop_after_action": True}
    ),
    solvable=_solvable,
)

POINTS24 = Task(
    name="points24",
    make_env=Points24Env,
    prompt=prompts.points24_prompt,
    parse=ten_rule_parser,
    action_names=Points24Env.action_names,
    expert=Expert(experts.noisy_points24_action, experts.points24_response),
    perception=Perception(experts.card_labels, (experts.RANK_CLASSES,) * 4),
    corpus=_corpus(Points24Env, experts.points24_expert, prompts.points24_prompt, experts.points24_response),
    defaults=TaskDefaults(max_new_tokens=176, steps_per_update=256, cot_coef=0.5),  # answers <= 125 tokens
    solvable=_solvable,
)

BLACKJACK = Task(
    name="blackjack",
    make_env=BlackjackEnv,
    prompt=prompts.blackjack_prompt,
    parse=paper_parser,
    action_names=BlackjackEnv.action_names,
    expert=Expert(experts.noisy_blackjack_action, experts.blackjack_response),
    perception=Perception(experts.blackjack_labels, experts.BLACKJACK_LABEL_CLASSES),
    corpus=_corpus(BlackjackEnv, experts.blackjack_expert, prompts.blackjack_prompt, experts.blackjack_response),
    # Answers <= 105 tokens since the thoughts name the plan. 500 held-out deals: a ~0.43 win rate is then +-2.2
    # points. 60 updates: held-out 0.394 after 25, 0.414 after 60 (2026-12-02, README), ~28 min of PPO.
    defaults=TaskDefaults(
        max_new_tokens=128,
        steps_per_update=256,
        cot_coef=0.5,
        config={"run.eval_episodes": 500, "run.total_updates": 60, "run.eval_every": 20},
    ),
)
