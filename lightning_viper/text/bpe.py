"""Train a small byte-level BPE tokenizer offline on the annotation text of shards / annotation files.

Byte-level BPE never needs ``<unk>``: every byte has a token, so any text round-trips exactly
(``decode(encode(text)) == text``). The tokenizer is saved in Hugging Face format (``tokenizer.json``,
``tokenizer_config.json``, ``special_tokens_map.json``) with the specials the collate and the
templates use: ``<pad>`` (id 0), ``<eos>`` (id 1), ``<video>`` (id 2, always one token).

Text comes from each annotation's ``question``, ``options``, ``answer`` and ``conversations`` values
(and Charades-STA ``sentence``/``sentences``), with the ``<image>``/``<video>`` placeholders removed.
Shards are read with :mod:`tarfile`, only their ``<key>.json`` members; nothing is unpickled.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from braceexpand import braceexpand
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lightning_viper.data.adapters import read_annotations
from lightning_viper.text.tokenizer import EOS_TOKEN, PAD_TOKEN, VIDEO_TOKEN

log = logging.getLogger(__name__)

BPE_SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, VIDEO_TOKEN)  # ids 0, 1, 2
ANNOTATION_SUFFIXES = (".json", ".jsonl", ".parquet", ".txt")
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_PLACEHOLDER = re.compile(r"<(image|video)>\s*")
_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def annotation_texts(ann: Any) -> list[str]:
    """The text of one annotation row: question, options, answer, conversation values, sentences."""
    if isinstance(ann, str):  # a Charades-STA line "<vid> <start> <end>##<sentence>", or plain text
        head, sep, sentence = ann.partition("##")
        raw: list[Any] = [sentence if sep else head]
    elif isinstance(ann, dict):
        raw = [ann.get("question"), ann.get("answer"), ann.get("sentence")]
        for field in ("options", "sentences"):
            if isinstance(ann.get(field), list):
                raw.extend(ann[field])
        for turn in ann.get("conversations") or []:
            if isinstance(turn, dict):
                raw.append(turn.get("value"))
    else:
        return []
    texts = (_PLACEHOLDER.sub("", t).strip() for t in raw if isinstance(t, str))
    return [t for t in texts if t]


def _shard_annotations(path: Path) -> Iterator[tuple[str, Any]]:
    """``(member name, parsed JSON or None when unparsable)`` for every ``<key>.json`` member."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                ext = os.path.basename(member.name).partition(".")[2]
                if not member.isfile() or ext.lower() != "json":
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                try:
                    yield member.name, json.loads(handle.read().decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    yield member.name, None
    except tarfile.TarError as exn:
        raise ValueError(f"{path}: not a readable tar shard ({exn})") from exn


def expand_sources(sources: list[str]) -> list[tuple[str, list[Path]]]:
    """Each source with the files it names: a shard, an annotation file, a folder of ``*.tar``
    shards (searched recursively), a glob (``data/*.tar``) or a brace pattern (``shard-{000..009}.tar``).

    Raises:
        FileNotFoundError: a source names nothing that exists (the message names it).
    """
    if not sources:
        raise ValueError("no sources given: pass shards (.tar), folders of shards or annotation files (.json/.jsonl)")
    out = []
    for source in sources:
        paths: list[Path] = []
        for pattern in braceexpand(os.path.expanduser(source)):
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for match in map(Path, matches):
                if match.is_dir():
                    shards = sorted(p for p in match.rglob("*") if p.is_file() and p.name.endswith(SHARD_SUFFIXES))
                    if not shards:
                        raise FileNotFoundError(f"source {source!r}: folder {str(match)!r} holds no .tar shards")
                    paths.extend(shards)
                elif match.is_file():
                    paths.append(match)
                else:
                    raise FileNotFoundError(f"source {source!r}: {str(match)!r} does not exist")
        if not paths:
            raise FileNotFoundError(f"source {source!r} matches no file")
        out.append((source, paths))
    return out


def collect_texts(sources: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Annotation text of all ``sources`` and per-source counts.

    Raises:
        FileNotFoundError: a source does not exist.
        ValueError: a source holds no annotation text, has an unsupported suffix or is not a tar.
    """
    texts: list[str] = []
    stats: dict[str, Any] = {"per_source": {}, "num_annotations": 0, "bad_json": 0}
    for source, paths in expand_sources(sources):
        before, annotations = len(texts), 0
        for path in paths:
            name = path.name.lower()
            if name.endswith(SHARD_SUFFIXES):
                for member, ann in _shard_annotations(path):
                    if ann is None:
                        stats["bad_json"] += 1
                        log.warning("skipping unparsable annotation %s in %s", member, path)
                        continue
                    annotations += 1
                    texts.extend(annotation_texts(ann))
            elif name.endswith(ANNOTATION_SUFFIXES):
                rows = read_annotations(path)
                annotations += len(rows)
                for row in rows:
                    texts.extend(annotation_texts(row))
            else:
                raise ValueError(
                    f"source {source!r}: {str(path)!r} is neither a shard ({', '.join(SHARD_SUFFIXES)}) nor an "
                    f"annotation file ({', '.join(ANNOTATION_SUFFIXES)})"
                )
        if len(texts) == before:
            raise ValueError(
                f"source {source!r}: no annotation text found in {len(paths)} file(s) ({annotations} annotations; "
                "expected question / options / answer / conversations fields, or <key>.json members in shards)"
            )
        stats["per_source"][source] = {"files": len(paths), "annotations": annotations, "texts": len(texts) - before}
        stats["num_annotations"] += annotations
    return texts, stats


def unk_rate(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> float:
    """Fraction of whitespace-separated words of ``texts`` whose encoding holds the unknown token
    (0.0 for a tokenizer without one, such as byte-level BPE)."""
    words = [w for t in texts for w in t.split()]
    unk = tokenizer.unk_token_id
    if not words or unk is None:
        return 0.0
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"]
    return sum(unk in ids for ids in encoded) / len(words)


def _write(tok: Tokenizer, directory: Path) -> None:
    tok.save(str(directory / "tokenizer.json"))
    specials = {"pad_token": PAD_TOKEN, "eos_token": EOS_TOKEN, "additional_special_tokens": [VIDEO_TOKEN]}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,  # keeps decode(encode(text)) == text
        "model_max_length": 1 << 20,
        **specials,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def train_tokenizer(
    sources: list[str],
    out_dir: str,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    split_digits: bool = True,
    max_texts: int | None = None,
    eval_texts: int = 20000,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a byte-level BPE on the annotation text of ``sources`` and save it to ``out_dir``.

    Args:
        sources: shards (``.tar``), folders of shards, globs / brace patterns of shards, or annotation
            files (``.json`` / ``.jsonl`` / ``.parquet`` / ``.txt``, as ``viper pack`` reads them).
        out_dir: output folder (Hugging Face format; load it with ``load_tokenizer(out_dir)``).
        vocab_size: target vocabulary size, specials and the 256 byte tokens included (a small corpus
            may give fewer).
        min_frequency: a merge needs a pair seen at least this often.
        split_digits: one token per digit ("12.5" -> "1", "2", ".", "5"), so numbers compose.
        max_texts: train on the first ``max_texts`` texts only (a quick trial).
        eval_texts: how many training texts the unknown-token and round-trip checks use.
        overwrite: replace the tokenizer files of an existing ``out_dir``.

    Returns:
        Summary: ``vocab_size``, ``num_texts``, ``unk_rate`` (words holding ``<unk>`` on the training
        text; 0.0), ``round_trip_errors``, ``tokens_per_word``, special token ids, per-source counts.

    Raises:
        FileNotFoundError: a source does not exist.
        FileExistsError: ``out_dir`` already holds a tokenizer and ``overwrite`` is false.
        ValueError: a source holds no annotation text, or ``vocab_size`` is too small.
    """
    out = Path(out_dir).expanduser()
    if (out / "tokenizer.json").exists() and not overwrite:
        raise FileExistsError(f"{str(out)!r} already holds a tokenizer: pass --overwrite true or another out_dir")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(BPE_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} is below the {len(alphabet)} byte tokens + specials")
    texts, stats = collect_texts(sources)
    texts = texts[:max_texts]
    log.info("training a byte-level BPE (vocab %d) on %d texts from %d source(s)", vocab_size, len(texts), len(sources))

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    digits = pre_tokenizers.Digits(individual_digits=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level]) if split_digits else byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(tok, tmp)
        loaded = AutoTokenizer.from_pretrained(str(tmp), local_files_only=True)
        ids = {
            "pad": loaded.pad_token_id,
            "eos": loaded.eos_token_id,
            "video": loaded.convert_tokens_to_ids(VIDEO_TOKEN),
        }
        if ids != {"pad": 0, "eos": 1, "video": 2}:
            raise RuntimeError(f"the saved tokenizer has special ids {ids}, expected pad 0, eos 1, <video> 2")
        sample = texts[:eval_texts]
        encoded = loaded(sample, add_special_tokens=False)["input_ids"]
        errors = sum(loaded.decode(e) != t for e, t in zip(encoded, sample, strict=True))
        num_words = sum(len(t.split()) for t in sample)
        summary = {
            "out_dir": str(out),
            "vocab_size": len(loaded),
            "requested_vocab_size": vocab_size,
            "num_texts": len(texts),
            "eval_texts": len(sample),
            "unk_rate": unk_rate(loaded, sample),
            "round_trip_errors": errors,
            "tokens_per_word": sum(map(len, encoded)) / max(num_words, 1),
            "special_token_ids": ids,
            **stats,
        }
        if out.is_dir():
            for name in _FILES:
                os.replace(tmp / name, out / name)
        else:
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if summary["vocab_size"] < vocab_size:
        log.info("the corpus gave %d tokens (asked %d): fewer merges reached min_frequency", len(loaded), vocab_size)
    log.info(
        "saved the tokenizer to %s: vocab %d, %d texts, %.2f tokens/word, unk rate %.4f, %d round-trip errors",
        out,
        summary["vocab_size"],
        len(texts),
        summary["tokens_per_word"],
        summary["unk_rate"],
        errors,
    )
    return summary
