"""CIDEr-D (Vedantam et al., 2015), written from its definition.

For each n in 1..4 a caption becomes a tf-idf vector over its n-grams, where the document
frequency of an n-gram is the number of samples of the evaluated set whose references contain it
(idf = log(N) - log(max(1, df))). The candidate is compared with each reference by a cosine whose
numerator clips the candidate's weights at the reference's (min(g_c, g_r) * g_r), times a Gaussian
length penalty exp(-(l_c - l_r)^2 / (2 sigma^2)) with sigma = 6 (lengths in words). A sample's
score is the mean over n and over its references, times 10; the corpus score is the mean over
samples. The idf depends on the whole set, so the metric keeps the texts and scores at compute().
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_viper.metrics.state_dtype import KeepStateDtype
from lightning_viper.metrics.text_state import cat_state, decode_texts, encode_texts

NGram = tuple[str, ...]
_SEP = "\x1f"  # separates the references of one sample in the byte state


def cider_tokenize(text: str) -> list[str]:
    """Lower-cased words; punctuation becomes whitespace."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def ngram_counts(words: Sequence[str], max_n: int = 4) -> Counter[NGram]:
    """Counts of all n-grams, n = 1..max_n."""
    counts: Counter[NGram] = Counter()
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            counts[tuple(words[i : i + n])] += 1
    return counts


def _tfidf(
    counts: Counter[NGram], df: Counter[NGram], log_n: float, max_n: int
) -> tuple[list[dict[NGram, float]], list[float]]:
    """Per-n tf-idf vectors and their L2 norms."""
    vec: list[dict[NGram, float]] = [{} for _ in range(max_n)]
    for gram, tf in counts.items():
        vec[len(gram) - 1][gram] = tf * (log_n - math.log(max(1.0, df[gram])))
    norms = [math.sqrt(sum(v * v for v in vn.values())) for vn in vec]
    return vec, norms


def cider_d_scores(
    candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4, sigma: float = 6.0
) -> list[float]:
    """CIDEr-D of each candidate against its references; idf from the references of this whole set."""
    if len(candidates) != len(references):
        raise ValueError(f"got {len(candidates)} candidates but {len(references)} reference lists")
    ref_words = [[cider_tokenize(r) for r in refs] for refs in references]
    ref_counts = [[ngram_counts(w, max_n) for w in refs] for refs in ref_words]
    df: Counter[NGram] = Counter()
    for refs in ref_counts:
        df.update(set().union(*(c.keys() for c in refs)) if refs else set())
    log_n = math.log(max(1, len(candidates)))
    scores = []
    for cand, refs, words in zip(candidates, ref_counts, ref_words, strict=True):
        cand_words = cider_tokenize(cand)
        vec_c, norm_c = _tfidf(ngram_counts(cand_words, max_n), df, log_n, max_n)
        total = 0.0
        for ref, ref_w in zip(refs, words, strict=True):
            vec_r, norm_r = _tfidf(ref, df, log_n, max_n)
            penalty = math.exp(-((len(cand_words) - len(ref_w)) ** 2) / (2.0 * sigma**2))
            for n in range(max_n):
                dot = sum(min(v, vec_r[n].get(g, 0.0)) * vec_r[n].get(g, 0.0) for g, v in vec_c[n].items())
                if norm_c[n] > 0 and norm_r[n] > 0:
                    total += dot / (norm_c[n] * norm_r[n]) * penalty
        scores.append(10.0 * total / max_n / max(1, len(refs)))
    return scores


class CIDErD(KeepStateDtype, Metric):
    """Corpus CIDEr-D over all samples seen (across processes).

    States: UTF-8 bytes of candidates and references with per-sample byte lengths (float32), concatenated
    over processes (``dist_reduce_fx="cat"``), so the idf is computed over the whole set.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    cand_bytes: list[Tensor] | Tensor
    cand_lens: list[Tensor] | Tensor
    ref_bytes: list[Tensor] | Tensor
    ref_lens: list[Tensor] | Tensor

    def __init__(self, max_n: int = 4, sigma: float = 6.0) -> None:
        super().__init__()
        self.max_n, self.sigma = max_n, sigma
        for name in ("cand_bytes", "cand_lens", "ref_bytes", "ref_lens"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """``candidates``: one generated caption per sample; ``references``: its reference captions."""
        if len(candidates) != len(references):
            raise ValueError(f"got {len(candidates)} candidates but {len(references)} reference lists")
        joined = [_SEP.join(r.replace(_SEP, " ") for r in refs) for refs in references]
        for texts, bytes_state, lens_state in (
            (candidates, "cand_bytes", "cand_lens"),
            (joined, "ref_bytes", "ref_lens"),
        ):
            flat, lens = encode_texts(texts)
            getattr(self, bytes_state).append(flat.to(self.device))
            getattr(self, lens_state).append(lens.to(self.device))

    def texts(self) -> tuple[list[str], list[list[str]]]:
        """The candidates and reference lists accumulated so far (after any process sync)."""
        if cat_state(self.cand_lens).numel() == 0:
            return [], []
        cands = decode_texts(cat_state(self.cand_bytes), cat_state(self.cand_lens))
        refs = [r.split(_SEP) for r in decode_texts(cat_state(self.ref_bytes), cat_state(self.ref_lens))]
        return cands, refs

    def compute(self) -> Tensor:
        """Mean CIDEr-D over samples (0 when none)."""
        cands, refs = self.texts()
        if not cands:
            return torch.tensor(0.0)
        scores = cider_d_scores(cands, refs, self.max_n, self.sigma)
        return torch.tensor(sum(scores) / len(scores))
