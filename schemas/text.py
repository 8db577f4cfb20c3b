"""Plain-text hygiene shared by inputs (titles, queries) and outputs (tags, explanations)."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
_MARKUP = re.compile(r"<[^>]{0,200}>|[<>{}\[\]`\\]")


def clean_text(value: str, max_chars: int) -> str:
    """NFKC-normalise, drop control and format characters, collapse whitespace, cut to length.

    Control characters are replaced by spaces (not deleted) so words never glue together.
    """
    if value.isascii() and value.isprintable():  # fast path: nothing to normalise or drop
        text = value if "  " not in value else _SPACE.sub(" ", value)
        return text.strip()[:max_chars].rstrip()
    text = unicodedata.normalize("NFKC", value)
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") else ch for ch in text)
    text = _SPACE.sub(" ", text).strip()
    return text[:max_chars].rstrip()


def plain_text(value: str, max_chars: int) -> str:
    """Like :func:`clean_text`, and also strips markup: what reaches Redis is plain text."""
    text = clean_text(value, max_chars * 4)  # first: NFKC can turn "＜" into "<"
    if _MARKUP.search(text):
        text = clean_text(_MARKUP.sub(" ", text), max_chars * 4)
    return text[:max_chars].rstrip()


def sentence_text(value: str, max_chars: int) -> str:
    """Plain text cut at the end of the last whole sentence that fits (or the last whole
    word, with an ellipsis), so a long explanation never stops mid-word."""
    text = plain_text(value, max_chars * 4)
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    end = max(head.rfind(". "), head.rfind("! "), head.rfind("? "), head.rfind("."))
    if end >= 20:  # a whole first sentence beats a longer fragment
        return head[: end + 1]
    return head[: max_chars - 1].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"
