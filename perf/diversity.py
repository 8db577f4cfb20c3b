"""How varied explanations are across users, as RecGPT-V2 reports it: distinct-n (distinct
n-grams over all n-grams, higher is more varied) and self-BLEU (each text's BLEU-4 against all
the others as references, averaged; lower is more varied)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_TOKEN = re.compile(r"[^\W_]+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold())


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of ``texts``; 0.0 when there are none."""
    grams = [g for t in texts for g in _ngrams(tokens(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Sentence BLEU with clipped counts over several references, add-one smoothing for n > 1
    (Lin and Och's smoothing 2) and the brevity penalty of the closest reference length."""
    if not hypothesis or not references:
        return 0.0
    logs = 0.0
    for n in range(1, max_n + 1):
        grams = Counter(_ngrams(hypothesis, n))
        most: Counter[tuple[str, ...]] = Counter()
        for ref in references:
            for gram, count in Counter(_ngrams(ref, n)).items():
                most[gram] = max(most[gram], count)
        matched = sum(min(count, most[gram]) for gram, count in grams.items())
        total = sum(grams.values())
        if n == 1:
            if matched == 0:
                return 0.0
            logs += math.log(matched / total)
        else:
            logs += math.log((matched + 1) / (total + 1))
    closest = min((len(r) for r in references), key=lambda length: (abs(length - len(hypothesis)), length))
    penalty = 1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
    return penalty * math.exp(logs / max_n)


def self_bleu(texts: Sequence[str]) -> float:
    """Mean BLEU-4 of each text against all the others; 0.0 with fewer than two texts."""
    tokenized = [tokens(t) for t in texts]
    if len(tokenized) < 2:
        return 0.0
    scores = [bleu(t, tokenized[:i] + tokenized[i + 1 :]) for i, t in enumerate(tokenized)]
    return sum(scores) / len(scores)
