"""Digests of what each built-in task produces for fixed seeds, for tests/test_task_golden.py.

Recorded before the tasks moved behind the Task API (envs/task.py) and checked after: the SFT demonstrations
(image, prompt, answer, info), the perception labels, the tokenizer corpus, and a RolloutActor's collect and
evaluate with a scripted engine (prompts it was shown, actions, parse results, rewards, episode ends, metrics).
Equal digests mean the same seeds give the same SFT checkpoint and the same transcripts.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from concurrent.futures import Future

import numpy as np

from actors import rollout_actor
from actors.engines import Generation
from actors.replay_store import ReplayStore
from actors.rollout_actor import RolloutActor
from contracts.config import EnvConfig, ReplayConfig, RolloutConfig
from contracts.schema import from_table
from envs.prompts import chat_prompt

DROP_INFO = ("gamefile",)  # ALFWorld's game path names the (temporary) cache folder

ANSWERS = {  # a scripted engine's answers: valid, ambiguous and unparsable ones, chosen by the prompt's hash
    "numberline": ['"action": "+"', '"action": "-"', '"action": "+" or "-"', "no idea", ""],
    "ezpoints": ['"action": "10"', '"action": "+"', '"action": "="', '"action": "3"', '"action": "1100"', "x"],
    "points24": ['"action": "("', '"action": "7"', '"action": "="', '"action": "/"', '"action": "2 or 5"', ""],
    "blackjack": ['"action": "hit"', '"action": "stand"', '"action": "stand" or "hit"', "hmm"],
    "alfworld": ['"action": "look"', '"action": "inventory"', '"action": "go to countertop 1"', "", "take it"],
}


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _info(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in DROP_INFO}


def demonstrations_digest(task: str, n: int, cot: bool) -> str:
    from learner.sft import demonstrations, perception_labels

    demos = demonstrations(task, n, 0.45, 0, cot)
    parts = []
    for img, prompt, response, info in demos:
        parts += [np.ascontiguousarray(img).tobytes(), prompt, response, _info(info), perception_labels(task, info)]
    return _sha(*parts)


def classes_and_corpus_digest(task: str) -> str:
    from learner.sft import perception_classes, tokenizer_corpus

    return _sha(list(perception_classes(task)), tokenizer_corpus(task))


class ScriptedEngine:
    """Answers from ANSWERS[task], picked by the prompt's crc32 and the call count (deterministic)."""

    def __init__(self, task: str):
        self.answers, self.calls, self.prompts = ANSWERS[task], 0, []
        self.chat_prompt = chat_prompt

    def generate(self, prompts, images):
        self.calls += 1
        out = []
        for i, prompt in enumerate(prompts):
            self.prompts.append(prompt)
            text = self.answers[(zlib.crc32(prompt.encode()) + self.calls + i) % len(self.answers)]
            out.append(Generation([1, 2], [3], [-0.5], " {\n" + text + "\n}" if text else text))
        return out


def _records(store: ReplayStore) -> list:
    if store.num_steps == 0:
        return []
    return from_table(store.take(store.num_steps, learner_version=0)[0])


def _step(r) -> list:
    return [r.episode_id, r.step, r.seed, r.env_index, r.response_text, r.action, r.action_valid, r.parse_status]


class InlineExecutor:
    """A ThreadPoolExecutor stand-in that runs each job at once: slow resets become synchronous, so which env
    copies step together does not depend on thread timing."""

    def __init__(self, *args, **kwargs):
        pass

    def submit(self, fn, *args, **kwargs) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - handed on as the future's exception, as a thread would
            future.set_exception(error)
        return future


def rollout_digest(task: str, monkeypatch, envs: int = 3, steps: int = 12, eval_episodes: int = 5, **env) -> str:
    engine = ScriptedEngine(task)
    monkeypatch.setattr(rollout_actor, "make_engine", lambda *args, **kwargs: engine)
    monkeypatch.setattr(rollout_actor, "ThreadPoolExecutor", InlineExecutor)
    store = ReplayStore(ReplayConfig(capacity_steps=100_000))
    cfg = EnvConfig(task=task, envs_per_actor=envs, **env)
    actor = RolloutActor(0, cfg, RolloutConfig(backend="hf", steps_per_call=steps), "unused", store)
    metrics = {k: v for k, v in actor.collect().items() if not k.startswith("timing/")}
    shipped = sorted(_records(store), key=lambda r: (r.episode_id, r.step))
    steps_out = [
        [*_step(r), r.reward, r.terminated, r.truncated, hashlib.sha256(r.image_png).hexdigest()[:12]] for r in shipped
    ]
    open_steps = [[s.episode_id, s.step, s.action, s.reward] for slot in actor.slots for s in slot.steps]
    evaluation = actor.evaluate(eval_episodes, cfg.eval_seed)
    return _sha(engine.prompts, steps_out, open_steps, metrics, evaluation)
