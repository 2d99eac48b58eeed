"""The ``lmms_eval.models`` entry point: registers ``--model viper`` without importing torch."""

from __future__ import annotations

from typing import Any

MODEL_ID = "viper"
CLASS_PATH = "lightning_viper.eval.lmms_model.ViperLMM"


def manifest() -> Any:
    """lmms-eval's ``ModelManifest`` for :class:`~lightning_viper.eval.lmms_model.ViperLMM`."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH, aliases=("lightning_viper",))
