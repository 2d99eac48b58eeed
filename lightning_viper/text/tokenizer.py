"""Tokenizer loading (local directories only) and the small word-level tokenizer of the demo."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

VIDEO_TOKEN = "<video>"
PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<eos>", "<unk>"
DEMO_SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, VIDEO_TOKEN)

# Words of the synthetic tasks (lightning_viper/data/synth.py) and the prompt templates, plus a
# little general vocabulary. Numbers are spelled digit by digit ("12" -> "1", "##2").
DEMO_WORDS = (
    "What colour color was the star shape square circle triangle When did red green blue yellow "
    "white grey gray black magenta appear disappear How many times flash flashed from to seconds "
    "second frames frame video lasts were sampled The A B C D Answer answer with option options "
    "letter s Question Video User Assistant System You are a helpful assistant is of in and or the "
    "at on it this that which there how what when where who why does do object objects moving moves "
    "count number start end time first last before after between describe Describe caption image "
    "happen happens happened person people yes no Yes No one two three four five six seven eight "
    "nine ten"
)
PUNCTUATION = tuple(".,:;?!'\"()[]-/#%&*+=<>_")


def build_demo_tokenizer(directory: str | Path, extra_words: Iterable[str] = ()) -> Path:
    """Write a small word-level tokenizer to ``directory`` (loadable with ``AutoTokenizer``).

    Whole words from :data:`DEMO_WORDS` (+ ``extra_words``), single letters, punctuation and digits;
    numbers are split into digits with WordPiece continuation pieces (``##d``) so that decoding
    gives "12" back, not "1 2". Unknown words map to ``<unk>``. Special tokens: ``<pad>`` (id 0),
    ``<eos>``, ``<unk>``, ``<video>``. Writing goes through a temporary directory renamed into
    place, so concurrent callers never see a half-written tokenizer.

    Returns:
        The directory.
    """
    directory = Path(directory)
    if (directory / "tokenizer.json").exists():
        return directory
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    words = list(DEMO_SPECIAL_TOKENS)
    for w in [*DEMO_WORDS.split(), *extra_words, *letters, *digits, *PUNCTUATION, *(f"##{d}" for d in digits)]:
        if w not in words:
            words.append(w)
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK_TOKEN, max_input_chars_per_word=64))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens=[VIDEO_TOKEN],
    )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    fast.save_pretrained(str(tmp))
    try:
        os.rename(tmp, directory)
    except OSError:  # another process won the race: its copy is identical
        if not (directory / "tokenizer.json").exists():
            raise
    return directory


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory (never from a hub).

    Adds ``<video>`` as a special token if the vocabulary lacks it and sets a pad token if there is
    none (the eos token, else a new ``<pad>``). When tokens are added, ``len(tokenizer)`` grows:
    size the model's embeddings from ``len(tokenizer)``, not from the checkpoint's vocab size.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {str(directory)!r} does not exist: pass a local directory holding "
            "tokenizer.json/tokenizer_config.json (hub names are not downloaded), or build the demo one "
            "with lightning_viper.text.tokenizer.build_demo_tokenizer"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if VIDEO_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN]})
        log.info("added %s to the tokenizer in %s (vocab now %d)", VIDEO_TOKEN, directory, len(tokenizer))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def video_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Id of the ``<video>`` placeholder."""
    token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {VIDEO_TOKEN} token: load it with load_tokenizer()")
    return token_id
