"""Keep metric states in their own dtype when the module holding them is cast (e.g. bf16-true)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor
from torch.nn import Module


class KeepStateDtype:
    """Mixin for torchmetrics ``Metric`` subclasses: ``.to(bfloat16)`` moves states, never recasts them.

    ``Module.to(dtype)`` (which Lightning's "bf16-true"/"16-true" precision applies to the whole
    LightningModule) would otherwise turn float count/sum states into bf16, which cannot count past
    256 exactly. Device moves still apply. Put it before ``Metric`` in the bases.
    """

    def _apply(self, fn: Callable[[Tensor], Tensor], exclude_state: Sequence[str] = "") -> Module:
        def same_dtype(t: Tensor) -> Tensor:
            out = fn(t)
            return out if out.dtype == t.dtype else out.to(t.dtype)

        return super()._apply(same_dtype, exclude_state)  # type: ignore[misc]
