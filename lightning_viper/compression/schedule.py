"""Checks on a whole compression schedule (a list of stages) against a backbone."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lightning_viper.compression.base import CompressionStage, check_layer

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
    for stage in stages:
        check_layer(stage, backbone)
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
