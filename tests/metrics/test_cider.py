"""CIDEr-D against a hand-worked corpus and a naive implementation written from the definition."""

import math
import random

import pytest

from lightning_viper.metrics import CIDErD, cider_d_scores

LN2 = math.log(2)


def test_hand_worked_corpus() -> None:
    """Two samples, refs "a cat" and "a dog" (N = 2).

    df: "a" 2 -> idf log2 - log2 = 0; "cat", "dog", "a cat", "a dog": 1 -> idf log 2.
    cand "a cat" vs "a cat": n=1 cos 1, n=2 cos 1, n=3,4 empty -> (1 + 1 + 0 + 0) / 4 * 10 = 5.
    cand "a cat cat" vs "a cat": n=1 vec (a:0, cat:2 ln2) vs (cat: ln2): clipped dot min(2ln2, ln2) ln2
    = ln2^2, norms 2 ln2 * ln2 -> 1/2; n=2 ("a cat": ln2, "cat cat": ln2 [df 0 -> idf ln2]) vs
    ("a cat": ln2) -> ln2^2 / (sqrt2 ln2 * ln2) = 1/sqrt2; n=3: ref empty -> 0; length penalty
    exp(-(3-2)^2 / 72). Score = 10 * (1/2 + 1/sqrt2) / 4 * exp(-1/72) = 2.976143.
    cand "a cat" vs "a dog": only "a" overlaps, with weight 0 -> 0.
    """
    assert cider_d_scores(["a cat", "a cat"], [["a cat"], ["a dog"]]) == pytest.approx([5.0, 0.0])
    expected = 10 * (0.5 + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert expected == pytest.approx(2.9761430, abs=1e-6)
    assert cider_d_scores(["a cat cat", "a cat"], [["a cat"], ["a dog"]]) == pytest.approx([expected, 0.0])
    metric = CIDErD()
    metric.update(["a cat cat"], [["a cat"]])
    metric.update(["a cat"], [["a dog"]])
    assert metric.compute().item() == pytest.approx(expected / 2)


def _naive_cider(cands: list[str], refs: list[list[str]]) -> list[float]:
    """Straight loops over lists of n-grams; no Counters, no shared code with the package."""

    def grams(sentence: str, n: int) -> list[tuple[str, ...]]:
        w = sentence.lower().split()
        return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]

    big_n = len(cands)

    def doc_freq(g: tuple[str, ...]) -> int:
        return sum(1 for rs in refs if any(g in grams(r, len(g)) for r in rs))

    def weights(sentence: str, n: int) -> dict[tuple[str, ...], float]:
        gs = grams(sentence, n)
        return {g: gs.count(g) * (math.log(big_n) - math.log(max(1, doc_freq(g)))) for g in set(gs)}

    out = []
    for cand, rs in zip(cands, refs, strict=True):
        total = 0.0
        for r in rs:
            delta = len(cand.split()) - len(r.split())
            for n in (1, 2, 3, 4):
                gc, gr = weights(cand, n), weights(r, n)
                nc = math.sqrt(sum(v * v for v in gc.values()))
                nr = math.sqrt(sum(v * v for v in gr.values()))
                if nc == 0 or nr == 0:
                    continue
                num = sum(min(gc[g], gr.get(g, 0.0)) * gr.get(g, 0.0) for g in gc)
                total += num / (nc * nr) * math.exp(-(delta**2) / (2 * 6.0**2))
        out.append(10 * total / 4 / len(rs))
    return out


def test_matches_naive_implementation_on_random_corpus() -> None:
    rng = random.Random(0)
    vocab = ["a", "the", "cat", "dog", "runs", "sits", "on", "mat", "red", "blue", "big", "small", "quickly"]

    def sentence() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 9)))

    refs = [[sentence() for _ in range(rng.randint(1, 3))] for _ in range(6)]
    cands = [sentence() if i % 2 else refs[i][0] for i in range(6)]
    assert cider_d_scores(cands, refs) == pytest.approx(_naive_cider(cands, refs), abs=1e-9)


def test_merge_equals_whole_corpus_not_mean_of_parts() -> None:
    cands, refs = ["a cat cat", "a cat"], [["a cat"], ["a dog"]]
    left, right = CIDErD(), CIDErD()
    left.update(cands[:1], refs[:1])
    right.update(cands[1:], refs[1:])
    alone = left.compute().item()  # N = 1: idf is 0 everywhere -> 0
    assert alone == 0.0
    left.reset()
    left.update(cands[:1], refs[:1])
    left.merge_state(right)
    assert left.compute().item() == pytest.approx(sum(cider_d_scores(cands, refs)) / 2)


def test_unicode_survives_the_byte_state() -> None:
    metric = CIDErD()
    metric.update(["ein Hund läuft"], [["ein Hund läuft", "größer"]])
    assert metric.texts() == (["ein Hund läuft"], [["ein Hund läuft", "größer"]])
