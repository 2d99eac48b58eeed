"""Checks on a whole compression schedule (a list of stages) against a backbone."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lightning_viper.compression.base import CompressionStage

if TYPE_CHECKING:
    from lightning_viper.backbones.base import Backbone


def validate_schedule(stages: Sequence[CompressionStage], backbone: Backbone) -> None:
    """Raise ``ValueError`` naming the offending stage if the schedule cannot run as written.

    Rules:
    * every layer index is in ``0..num_layers-1``;
    * a stage that needs attention scores (``requires_attention_layer``) sits on an attention layer;
    * stages are listed in non-decreasing layer order (the order they run in);
    * ``keep`` never grows from one stage to the next: ratios are fractions of the ORIGINAL
      vision tokens, so a later stage with a larger ``keep`` would need tokens that are gone.

    An empty schedule (no compression) is valid. Binding (``stage.bind``) repeats the per-stage
    checks; this function adds the ones that need the whole list.
    """
    n = backbone.num_layers
    for stage in stages:
        if not 0 <= stage.layer < n:
            raise ValueError(
                f"{stage.describe()}: layer {stage.layer} is out of range for a backbone with {n} layers "
                f"(valid: 0..{n - 1})"
            )
        if getattr(stage, "requires_attention_layer", False) and not backbone.is_attention_layer(stage.layer):
            attn = [i for i in range(n) if backbone.is_attention_layer(i)]
            raise ValueError(
                f"{stage.describe()}: attention-guided selection needs an attention layer, but layer "
                f"{stage.layer} is {backbone.layer_kinds[stage.layer]!r}; attention layers: {attn}"
            )
    for prev, stage in itertools.pairwise(stages):
        if stage.layer < prev.layer:
            raise ValueError(
                f"{stage.describe()} comes after {prev.describe()} but runs at an earlier layer; "
                "list stages in increasing layer order"
            )
        if stage.keep > prev.keep:
            raise ValueError(
                f"{stage.describe()} keeps more than the earlier {prev.describe()}: keep is a fraction of the "
                "ORIGINAL vision tokens, so it must not grow along the schedule"
            )
