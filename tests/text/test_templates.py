from __future__ import annotations

import pytest

from lightning_viper.data.collate import VideoCollator
from lightning_viper.text.templates import NemotronTemplate, PlainTemplate, PromptTemplate, Qwen2ChatTemplate
from lightning_viper.text.tokenizer import VIDEO_TOKEN

TEMPLATES = [PlainTemplate(), NemotronTemplate(), Qwen2ChatTemplate()]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: type(t).__name__)
def test_prompt_layout(template: PromptTemplate) -> None:
    assert isinstance(template, PromptTemplate)
    prompt = template.prompt("How many times did the circle flash?")
    assert prompt.count(VIDEO_TOKEN) == 1
    before, after = prompt.split(VIDEO_TOKEN)
    assert before.strip(), "text before the video"
    assert "How many times did the circle flash?" in after
    assert template.answer("3").endswith(template.eos)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="must not contain"):
        template.prompt(f"look at {VIDEO_TOKEN}")


def test_nemotron_markers() -> None:
    prompt = NemotronTemplate(system="S", assistant_prefix="<think></think>").prompt("Q?")
    assert (
        prompt == f"<SPECIAL_10>System\nS\n<SPECIAL_11>User\n{VIDEO_TOKEN}\nQ?\n<SPECIAL_11>Assistant\n<think></think>"
    )


def test_chatml_markers() -> None:
    prompt = Qwen2ChatTemplate(system="").prompt("Q?")
    assert prompt == f"<|im_start|>user\n{VIDEO_TOKEN}\nQ?<|im_end|>\n<|im_start|>assistant\n"
    assert Qwen2ChatTemplate().answer(" B ") == "B<|im_end|>"


def test_labels_are_masked_on_the_prompt(demo_tokenizer) -> None:
    collator = VideoCollator(demo_tokenizer, PlainTemplate())
    prompt, target = collator.encode("What colour was the star?", "from 3 to 5 seconds")
    assert prompt.count(collator.video_id) == 1
    assert target[-1] == demo_tokenizer.eos_token_id and target.count(demo_tokenizer.eos_token_id) == 1
    assert demo_tokenizer.decode(target, skip_special_tokens=True) == "from 3 to 5 seconds"


def test_foreign_template_with_demo_tokenizer_still_ends_in_eos(demo_tokenizer) -> None:
    collator = VideoCollator(demo_tokenizer, Qwen2ChatTemplate())
    _, target = collator.encode("Q?", "A")
    assert target[-1] == demo_tokenizer.eos_token_id
