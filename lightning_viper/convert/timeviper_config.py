"""The TimeViper reference's LLM config (``model_type: "nano"``) -> our backbone and stage specs.

The config is transformers' ``nemotron_h`` config plus three keys of the reference:
``merge_module`` ("CrossAttention" = TransV, "no_merge" = plain dropping), ``use_pdrop`` and
``pdrop_type``, a string ``TYPE_LAYER_RATIO-TYPE_LAYER_RATIO-...``. Our reading of it, from the
reference's own documentation and code:

* TYPE containing ``attn`` selects by attention, else containing ``uni`` selects uniformly; a TYPE
  containing ``drop`` never transfers (plain dropping) even with ``merge_module: CrossAttention``;
* LAYER is the 0-based layer the stage runs before;
* RATIO is the fraction of the ORIGINAL vision tokens KEPT (``int(ratio * n)``), so the paper's
  final setting (uniform drop 50% at 7, attention drop 90% at 39) is ``uni_7_0.5-attn_39_0.1``.
  A string whose ratio grows along the schedule (e.g. ``uni_7_0.5-attn_39_0.9``) asks for tokens
  that are gone; it is refused, as our schedule check refuses it.

The reference clamps the Mamba time step to its config's ``time_step_limit`` (default (0, inf)),
not to ``time_step_min`` as transformers does; the backbone spec carries that limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lightning_viper.backbones.loading import CheckpointError
from lightning_viper.backbones.nemotron_h_loading import config_to_kwargs

REFERENCE_KEYS = ("merge_module", "use_pdrop", "pdrop_type")
MERGE_MODULES = ("CrossAttention", "no_merge")
NEMOTRON_CLASS = "lightning_viper.backbones.nemotron_h.NemotronHBackbone"


@dataclass(frozen=True)
class PdropStage:
    """One ``TYPE_LAYER_RATIO`` entry of ``pdrop_type``."""

    layer: int
    keep: float
    selector: str  # "uniform" | "attention"
    transfer: bool  # TransV (cross-attention transfer) or plain dropping

    def spec(self) -> dict[str, Any]:
        """The compression stage as a YAML spec, with the reference's rules."""
        args: dict[str, Any] = {"layer": self.layer, "keep": self.keep, "selector": self.selector}
        if self.transfer:  # weights come from the checkpoint: no copy at bind time
            args["init_from_attention"] = False
        args["rule"] = "reference"
        name = "TransV" if self.transfer else "TokenDrop"
        return {"class_path": f"lightning_viper.compression.{name}", "init_args": args}


def _limit(value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise CheckpointError(f"time_step_limit must be a pair (low, high), got {value!r}")
    out = []
    for v in value:
        if isinstance(v, dict) and "__float__" in v:
            v = v["__float__"]
        out.append(float(v))
    return out[0], out[1]


def backbone_spec(config: dict[str, Any]) -> dict[str, Any]:
    """The NemotronHBackbone spec of a ``nano`` config (every other key as for ``nemotron_h``)."""
    if config.get("model_type") != "nano":
        raise CheckpointError(
            f"the LLM config's model_type is {config.get('model_type')!r}; a TimeViper checkpoint has 'nano'"
        )
    plain = {k: v for k, v in config.items() if k not in REFERENCE_KEYS and not k.startswith("_")}
    plain["model_type"] = "nemotron_h"
    kwargs = config_to_kwargs(plain)
    limit = config.get("time_step_limit", config.get("mamba_dt_limit", (0.0, math.inf)))
    kwargs["time_step_limit"] = list(_limit(limit))
    return {"class_path": NEMOTRON_CLASS, "init_args": kwargs}


def parse_pdrop(config: dict[str, Any]) -> list[PdropStage]:
    """The typed stages of a ``nano`` config's ``use_pdrop`` / ``pdrop_type`` / ``merge_module``."""
    merge = config.get("merge_module", "no_merge")
    if merge not in MERGE_MODULES:
        raise CheckpointError(f"merge_module {merge!r} is not one of {MERGE_MODULES}")
    if not config.get("use_pdrop", False):
        return []
    text = config.get("pdrop_type")
    if not isinstance(text, str) or not text:
        raise CheckpointError("use_pdrop is true but pdrop_type is not set (expected e.g. 'uni_7_0.5-attn_39_0.1')")
    stages: list[PdropStage] = []
    for entry in text.split("-"):
        parts = entry.split("_")
        if len(parts) != 3:
            raise CheckpointError(f"pdrop_type entry {entry!r} is not TYPE_LAYER_RATIO (in {text!r})")
        kind, layer, ratio = parts
        if "attn" in kind:
            selector = "attention"
        elif "uni" in kind:
            selector = "uniform"
        else:
            raise CheckpointError(f"pdrop_type entry {entry!r}: TYPE must contain 'uni' or 'attn'")
        try:
            stage = PdropStage(int(layer), float(ratio), selector, merge == "CrossAttention" and "drop" not in kind)
        except ValueError as error:
            raise CheckpointError(f"pdrop_type entry {entry!r}: LAYER must be an int, RATIO a float") from error
        if not 0.0 <= stage.keep <= 1.0:
            raise CheckpointError(f"pdrop_type entry {entry!r}: RATIO (fraction kept) must be in [0, 1]")
        if stages and (stage.layer < stages[-1].layer or stage.keep > stages[-1].keep):
            raise CheckpointError(
                f"pdrop_type {text!r}: entry {entry!r} runs earlier or keeps more than the one before it; RATIO "
                "is the fraction of the ORIGINAL vision tokens kept, so it must not grow along the schedule "
                "(the paper's final setting is 'uni_7_0.5-attn_39_0.1')"
            )
        stages.append(stage)
    return stages
