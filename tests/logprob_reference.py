"""The reference both inference engines are checked against, on the CPU (tests/test_engines.py) and on CUDA
(tests/test_gpu.py): one full HF forward on prompt_ids + response_ids, log_softmax(logits / T) with the banned
special ids at -inf, read at the positions that predict the response tokens; and the batch they score.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from envs import make_env
from envs.prompts import chat_prompt, task_prompt
from models.tokenizer import banned_token_ids

T, MAX_NEW = 0.2, 24


def batch():
    """Two prompts of different lengths (left padding in the HF batch) on two different env frames."""
    env = make_env("numberline")
    images = [env.reset(seed=seed)[0] for seed in (123, 456)]
    prompts = [chat_prompt(task_prompt("numberline", {}, cot)) for cot in (True, False)]
    return prompts, images


def expanded_ids(processor, prompt: str, image: np.ndarray) -> list[int]:
    return processor(text=[prompt], images=[Image.fromarray(image)], return_tensors="pt")["input_ids"][0].tolist()


@torch.no_grad()
def manual_logprobs(vlm, processor, prompt_ids, response_ids, image) -> np.ndarray:
    device = next(vlm.parameters()).device  # the CPU in tests/test_engines.py; tests/test_gpu.py scores on CUDA
    pixels = processor.image_processor(images=[Image.fromarray(image)], return_tensors="pt")["pixel_values"]
    ids = torch.tensor([prompt_ids + response_ids], device=device)
    logits = vlm(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels.to(device)).logits[0].float()
    P, n = len(prompt_ids), len(response_ids)
    scaled = logits[P - 1 : P - 1 + n] / T
    scaled[:, banned_token_ids(processor.tokenizer)] = float("-inf")
    logp = torch.log_softmax(scaled, -1)
    return logp.gather(-1, torch.tensor(response_ids, device=device).unsqueeze(-1)).squeeze(-1).cpu().numpy()
