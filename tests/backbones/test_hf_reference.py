"""The transformers reference keeps its PyTorch path on a machine where mamba-ssm is installed.

transformers binds mamba-ssm / causal-conv1d at import and then calls them for CPU tensors too.
Stand-in packages of those names whose every function raises play the installed kernels here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RAISING = """
def __getattr__(name):
    def kernel(*args, **kwargs):
        raise RuntimeError("CUDA kernel called")
    return kernel
"""

SCRIPT = """
import torch
from tests.backbones.test_nemotron_h_helpers import hf_model
import causal_conv1d, mamba_ssm.ops.triton.ssd_combined  # importable, like on a GPU machine
model = hf_model()
logits = model(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9]])).logits
assert logits.shape == (1, 9, 97) and bool(torch.isfinite(logits).all())
print("ok")
"""


def _raising_package(root: Path, dotted: str) -> None:
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        folder = root.joinpath(*parts[:i])
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text(RAISING)


def test_hf_reference_runs_on_cpu_with_kernel_packages_importable(tmp_path: Path) -> None:
    _raising_package(tmp_path, "causal_conv1d")
    for module in ("ssd_combined", "selective_state_update", "layernorm_gated"):
        _raising_package(tmp_path, f"mamba_ssm.ops.triton.{module}")
    repo = Path(__file__).resolve().parents[2]
    env_path = f"{tmp_path}:{repo}"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": env_path},
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
