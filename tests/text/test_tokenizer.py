from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lightning_viper.data.synth import QUESTIONS, STAR_COLOURS
from lightning_viper.text.tokenizer import VIDEO_TOKEN, build_demo_tokenizer, load_tokenizer, video_token_id


def test_demo_tokenizer_loads_with_auto_tokenizer(demo_tokenizer_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(demo_tokenizer_dir), local_files_only=True)
    assert tok.pad_token == "<pad>" and tok.eos_token == "<eos>" and tok.unk_token == "<unk>"
    assert VIDEO_TOKEN in tok.get_vocab()
    ids = tok(f"Video: {VIDEO_TOKEN} hello", add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids(VIDEO_TOKEN)) == 1


def test_synthetic_vocabulary_has_no_unknown_words(demo_tokenizer) -> None:
    texts = [*QUESTIONS.values(), *STAR_COLOURS, "A. red B. green C. blue D. yellow", "from 12 to 1507 seconds"]
    for text in texts:
        ids = demo_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert demo_tokenizer.unk_token_id not in ids, text


def test_numbers_round_trip_digit_by_digit(demo_tokenizer) -> None:
    ids = demo_tokenizer("from 12 to 305 seconds", add_special_tokens=False)["input_ids"]
    assert demo_tokenizer.convert_ids_to_tokens(ids) == ["from", "1", "##2", "to", "3", "##0", "##5", "seconds"]
    assert demo_tokenizer.decode(ids) == "from 12 to 305 seconds"


def test_unknown_words_map_to_unk(demo_tokenizer) -> None:
    ids = demo_tokenizer("zebra", add_special_tokens=False)["input_ids"]
    assert ids == [demo_tokenizer.unk_token_id]


def test_build_is_idempotent(tmp_path: Path) -> None:
    first = build_demo_tokenizer(tmp_path / "t")
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert build_demo_tokenizer(tmp_path / "t") == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == stamp


def test_load_adds_video_and_pad_tokens(tmp_path: Path) -> None:
    vocab = {"<unk>": 0, "</s>": 1, "hello": 2}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>").save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path)
    assert video_token_id(tok) == 3 and len(tok) == 4
    assert tok.pad_token == "</s>"


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
