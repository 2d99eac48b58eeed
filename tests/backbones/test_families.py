"""Every backbone family is a block layout, a loader and presets, with one set of constructor names."""

from __future__ import annotations

import importlib
import inspect

import pytest

from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.backbones.qwen2 import Qwen2Backbone

FAMILIES = {"nemotron_h": NemotronHBackbone, "qwen2": Qwen2Backbone}
# what both families have, under one name (transformers' config names where the two agree)
SHARED = {
    "vocab_size", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
    "layer_norm_epsilon", "tie_word_embeddings", "gradient_checkpointing", "prefill_chunk",
}  # fmt: skip


def params(cls: type[Backbone]) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_has_layout_loader_and_presets(family: str) -> None:
    cls = FAMILIES[family]
    assert issubclass(cls, Backbone) and cls.__module__ == f"lightning_viper.backbones.{family}"
    loading = importlib.import_module(f"lightning_viper.backbones.{family}_loading")
    loader = getattr(loading, f"load_{family}")
    assert inspect.signature(loader).return_annotation in (cls.__name__, cls)
    assert {"path", "dtype", "gradient_checkpointing", "prefill_chunk"} <= set(inspect.signature(loader).parameters)
    presets = importlib.import_module(f"lightning_viper.backbones.{family}_presets")
    builders = [f for name, f in vars(presets).items() if inspect.isfunction(f) and not name.startswith("_")]
    assert builders and all(f.__module__ == presets.__name__ for f in builders)
    assert all(inspect.signature(f).return_annotation in (cls.__name__, cls) for f in builders)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_constructors_share_argument_names(family: str) -> None:
    missing = SHARED - params(FAMILIES[family])
    assert not missing, f"{FAMILIES[family].__name__} lacks {sorted(missing)} (or names them differently)"


def test_loaders_produce_constructor_arguments() -> None:
    """Each loader's config mapping only yields names its backbone takes."""
    from lightning_viper.backbones import nemotron_h_loading, qwen2_loading

    qwen = qwen2_loading.config_to_kwargs(
        {"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
         "num_attention_heads": 2, "rope_theta": 1e4}
    )  # fmt: skip
    assert set(qwen) <= params(Qwen2Backbone)
    nemotron = nemotron_h_loading.config_to_kwargs({"hybrid_override_pattern": "M*-", "layer_norm_epsilon": 1e-5})
    assert set(nemotron) <= params(NemotronHBackbone) and nemotron["layer_norm_epsilon"] == 1e-5
