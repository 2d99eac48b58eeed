"""A torch-function mode that records which calls allocate large NEW tensors (CPU memory checks)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves


class BigOutputs(TorchFunctionMode):
    """Records the torch calls whose fresh outputs hold at least ``nbytes`` bytes; outputs that
    share storage with an input (in-place ops, views) are not new memory and are not recorded.
    Calls made inside a recorded call are not seen separately (the mode is off while one runs)."""

    def __init__(self, nbytes: int) -> None:
        super().__init__()
        self.nbytes = nbytes
        self.ops: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.nbytes >= self.nbytes and t.untyped_storage().data_ptr() not in inputs:
                self.ops.append(getattr(func, "__name__", str(func)))
        return out
