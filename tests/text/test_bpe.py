from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from lightning_viper.data.shards import write_shard
from lightning_viper.text.bpe import annotation_texts, train_tokenizer, unk_rate
from lightning_viper.text.templates import PlainTemplate
from lightning_viper.text.tokenizer import VIDEO_TOKEN, load_tokenizer, video_token_id
from tests.data.fixtures import grey_video

# Annotation-like text in the styles of LLaVA-Video (conversations), VideoMME (mcq) and Charades-STA.
CAPTIONS = [
    "A woman in a red jacket walks her dog along a snowy path while cars pass in the background.",
    "The chef slices onions, tosses them into a hot pan and stirs the vegetables with a wooden spoon.",
    "Two kids are playing football in a backyard; one of them kicks the ball over the fence.",
    "A man repairs a bicycle tire, pumps air into it and then rides away down the street.",
    "The camera pans across a crowded market where vendors sell fruit, spices and fresh fish.",
    "A person opens the refrigerator, takes out a bottle of milk and pours it into a glass.",
]
QUESTIONS = [
    ("What is the man holding when he enters the kitchen?", ["A. a cup", "B. a phone", "C. a book", "D. keys"], "B"),
    ("Why does the woman stop walking near the bridge?", ["A. it rains", "B. her dog barks", "C. a car honks"], "B"),
    ("How many people appear in the video before the music starts?", ["A. 2", "B. 3", "C. 4", "D. 5"], "C"),
    ("Which object does the chef use to stir the soup?", ["A. a fork", "B. a wooden spoon", "C. a knife"], "B"),
]
SENTENCES = ["person opens the door", "a person is laughing at the television", "person sits down on a chair"]


def _annotations() -> list[dict[str, Any]]:
    anns: list[dict[str, Any]] = []
    for i, caption in enumerate(CAPTIONS):
        turns = [
            {"from": "human", "value": "<image>\nDescribe what happens in the video."},
            {"from": "gpt", "value": caption},
        ]
        anns.append({"task": "qa", "conversations": turns, "source": f"llava_{i}"})
    for question, options, answer in QUESTIONS:
        anns.append({"task": "mcq", "question": question, "options": options, "answer": answer})
    for i, sentence in enumerate(SENTENCES):
        question = f'When does "{sentence}" happen in the video?'
        anns.append({"task": "grounding", "question": question, "answer": f"from {i + 1.5} to {i + 7.2} seconds"})
    return anns


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bpe")
    video = grey_video(2, 16)  # one real MP4, shared by every sample: only the .json members matter here
    samples = [(f"s{i:04d}", {"mp4": video, "json": json.dumps(a).encode()}) for i, a in enumerate(_annotations())]
    write_shard(root / "shards" / "shard-000000.tar", samples[:7])
    write_shard(root / "shards" / "shard-000001.tar", samples[7:])
    rows = [{"videoID": f"v{i}", "question": q, "options": o, "answer": a} for i, (q, o, a) in enumerate(QUESTIONS)]
    (root / "videomme.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"root": root, "shards": root / "shards", "jsonl": root / "videomme.jsonl"}


@pytest.fixture(scope="module")
def trained(corpus: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    out = corpus["root"] / "tok"
    summary = train_tokenizer([str(corpus["shards"]), str(corpus["jsonl"])], str(out), vocab_size=600, min_frequency=1)
    return out, summary


UNSEEN = [
    "The dog jumps over a wooden fence and runs toward the children.",
    "Why does the chef open the oven at 12:45? Answer with the option's letter.",
    "from 3.5 to 17.25 seconds",
    'Café owner says: "naïve" — 100% déjà vu!  Two  spaces,\ttabs and a newline\nhere.',
    "Zebras 🦓 graze near the waterfall (ca. 1,507 m).",
]


def test_summary_counts_texts_and_has_no_unknown_tokens(trained: tuple[Path, dict[str, Any]]) -> None:
    _, summary = trained
    mcq_texts = sum(2 + len(options) for _, options, _ in QUESTIONS)  # question, answer, options
    assert summary["num_texts"] == 2 * len(CAPTIONS) + mcq_texts + 2 * len(SENTENCES) + mcq_texts  # shards + jsonl
    assert summary["unk_rate"] == 0.0 and summary["round_trip_errors"] == 0
    assert 256 < summary["vocab_size"] <= 600
    assert summary["special_token_ids"] == {"pad": 0, "eos": 1, "video": 2}
    assert summary["per_source"][str(Path(summary["out_dir"]).parent / "shards")]["files"] == 2


def test_loads_offline_with_auto_tokenizer_and_round_trips(trained: tuple[Path, dict[str, Any]]) -> None:
    out, _ = trained
    assert {p.name for p in out.iterdir()} >= {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, None)
    for text in UNSEEN:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert unk_rate(tok, UNSEEN) == 0.0
    # learned merges: a frequent training word is one token
    assert len(tok(" the", add_special_tokens=False)["input_ids"]) == 1


def test_load_tokenizer_gives_video_and_specials(trained: tuple[Path, dict[str, Any]]) -> None:
    out, _ = trained
    tok = load_tokenizer(out)
    assert len(tok) == trained[1]["vocab_size"]  # nothing added: <video> and pad are already there
    assert video_token_id(tok) == 2 and tok.pad_token == "<pad>" and tok.eos_token == "<eos>"
    prompt = PlainTemplate().prompt("What does the man hold?")
    ids = tok(prompt + PlainTemplate().answer("B"), add_special_tokens=False)["input_ids"]
    assert ids.count(2) == 1 and ids[-1] == tok.eos_token_id
    assert tok.convert_ids_to_tokens([2]) == [VIDEO_TOKEN]
    assert tok.decode(ids) == prompt + " B<eos>"


def test_annotation_texts_strip_placeholders() -> None:
    turns = [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "A cat sleeps."}]
    assert annotation_texts({"conversations": turns, "answer": "", "options": ["A. x", 3]}) == [
        "A. x",
        "What happens?",
        "A cat sleeps.",
    ]
    assert annotation_texts("v1 0.0 3.5##person opens the door.") == ["person opens the door."]


def test_missing_source_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.tar"):
        train_tokenizer([str(tmp_path / "nope.tar")], str(tmp_path / "tok"))
    with pytest.raises(FileNotFoundError, match=r"no \.tar shards"):
        train_tokenizer([str(tmp_path)], str(tmp_path / "tok"))


def test_source_without_annotations_names_it(tmp_path: Path) -> None:
    shard = tmp_path / "media-only.tar"
    write_shard(shard, [("a", {"mp4": grey_video(2, 16)}), ("b", {"json": b'{"task": "qa", "source": "x"}'})])
    with pytest.raises(ValueError, match=r"media-only\.tar.*no annotation text"):
        train_tokenizer([str(shard)], str(tmp_path / "tok"))
    assert not (tmp_path / "tok").exists()


def test_existing_output_needs_overwrite(trained: tuple[Path, dict[str, Any]], corpus: dict[str, Path]) -> None:
    out, _ = trained
    with pytest.raises(FileExistsError, match="overwrite"):
        train_tokenizer([str(corpus["jsonl"])], str(out))


def test_viper_tokenizer_verb(corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_viper.cli.viper import main

    main(["tokenizer", f"[{corpus['jsonl']}]", str(tmp_path / "tok"), "--vocab_size", "400", "--min_frequency", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["unk_rate"] == 0.0 and summary["num_texts"] == sum(2 + len(o) for _, o, _ in QUESTIONS)
    assert video_token_id(load_tokenizer(tmp_path / "tok")) == 2
