"""The demonstration pool of PPO's demonstration loss (PPOConfig.demo_coef): the task expert's answers, each with
the slot where the state's legal answers part (learner/ppo_update.py `Demonstration`).

Each learner rank builds it once at start from noiseless expert episodes on the SFT seeds (learner/sft.py
`demonstrations`), in the checkpoint's chat template and with the prompt ids its processor expands, exactly as
SFT lays out a demonstration. The slot is found by writing the expert's answer for every legal action of the
state and comparing their tokens: the loss (learner/ppo.py `demo_nll`) teaches what they share before it and asks
for any of their tokens at it, so what to do stays RL's to learn.
"""

from __future__ import annotations

from envs.parsing import action_start_index
from envs.registry import resolve_task
from envs.task import Task
from learner.batch import Sample, TokenTexts
from learner.ppo_update import Demonstration
from learner.sft import demonstrations, tokenized_demonstrations
from models.families import chat_format


def demo_pool(task: str | Task, processor, n: int, cot: bool = True, seed: int = 0) -> list[Demonstration]:
    """`n` expert steps of `task`: prompt ids with the image placeholder expanded, the answer's ids with EOS, the
    slot and the legal answers' tokens there."""
    task = resolve_task(task)
    tokenizer, token_texts = processor.tokenizer, TokenTexts(processor.tokenizer)
    demos = demonstrations(task, n, 0.0, seed, cot, chat=chat_format(processor))
    pool = []
    for (image, prompt_ids, response_ids), (_, _, _, info) in zip(
        tokenized_demonstrations(demos, processor), demos, strict=True
    ):
        action_start = action_start_index(token_texts(response_ids))
        sample = Sample.probe(prompt_ids, response_ids, image, action_start=action_start)
        slot, slot_ids = legal_slot(task, info, cot, tokenizer, response_ids)
        pool.append(Demonstration(sample, slot, slot_ids))
    return pool


def legal_slot(task: Task, info: dict, cot: bool, tokenizer, response_ids: list[int]) -> tuple[int, list[int]]:
    """(slot, ids): the first response index where the expert's answers for the state's legal actions differ,
    and the token each has there. No slot (one legal answer): (len(response_ids), [EOS])."""
    candidates = task.admissible(info) if task.admissible is not None else range(len(task.action_names))
    eos = [tokenizer.eos_token_id]
    answers = {tuple(tokenizer(task.expert.response(info, a, cot), add_special_tokens=False)["input_ids"] + eos)
               for a in candidates} | {tuple(response_ids)}  # fmt: skip
    if len(answers) == 1:
        return len(response_ids), eos
    slot = 0  # distinct answers that all end in EOS part before the shortest one ends
    while len({a[slot] for a in answers}) == 1:
        slot += 1
    return slot, sorted({a[slot] for a in answers})
