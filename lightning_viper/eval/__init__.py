"""Evaluation with lmms-eval: a model plugin for VideoLM checkpoints (see docs/evaluation.md).

``plugin.manifest`` is what the ``lmms_eval.models`` entry point names (``--model viper``);
``lmms_model.ViperLMM`` is the model class, which answers through :mod:`lightning_viper.inference`.
Both import lmms-eval, an optional dependency (docs/evaluation.md, "Install").
"""
