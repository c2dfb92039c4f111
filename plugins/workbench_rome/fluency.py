"""Generation fluency as in ROME (rome/experiments/py/eval_utils_counterfact.py): the weighted
mean of the bigram and trigram entropies (weights 2/3 and 4/3, in bits) of a text's words.
ROME splits words with nltk.word_tokenize; this uses a regex for words and punctuation marks,
which gives the same tokens on ordinary English text without the nltk dependency."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, n: int) -> float:
    words = _WORD.findall(text)
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    if not total:
        return 0.0
    freqs = np.array(list(grams.values()), dtype=np.float64) / total
    return float(-(freqs * np.log2(freqs)).sum())


def fluency(text: str) -> float:
    """ROME's generation entropy of one text: mean(2/3·H2, 4/3·H3)."""
    return float(np.mean([2 / 3 * ngram_entropy(text, 2), 4 / 3 * ngram_entropy(text, 3)]))
