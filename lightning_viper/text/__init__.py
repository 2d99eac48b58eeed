"""Tokenizers and prompt templates."""

from lightning_viper.text.templates import NemotronTemplate, PlainTemplate, PromptTemplate, Qwen2ChatTemplate
from lightning_viper.text.tokenizer import VIDEO_TOKEN, build_demo_tokenizer, load_tokenizer, video_token_id

__all__ = [
    "VIDEO_TOKEN",
    "NemotronTemplate",
    "PlainTemplate",
    "PromptTemplate",
    "Qwen2ChatTemplate",
    "build_demo_tokenizer",
    "load_tokenizer",
    "video_token_id",
]
