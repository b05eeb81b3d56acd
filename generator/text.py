"""Normalised views of a text for matching, each keeping a map back to the original positions so
that a violation's span points at what the writer actually wrote.

Evasions this undoes (the cheap ones that people use against keyword filters):
full-width forms and compatibility characters (NFKC), traditional characters (OpenCC ``t2s``),
zero-width characters, and separators slipped between the characters of a term
(``最 佳``, ``最*佳``, ``b.e.s.t``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import opencc

ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e")
#: Characters dropped by the squeezed view: whitespace and the punctuation used to split a term.
SEPARATORS = frozenset(
    " \t\r\n\u00a0\u3000·•・‧*_-~|/\\.,，、。:：;；'\"`^+=<>()[]{}【】（）《》〈〉「」『』!！?？…—–"
)
_SPACED_LETTERS = re.compile(r"(?<![A-Za-z])[A-Za-z](?:[\s.\-_*·•]+[A-Za-z])+(?![A-Za-z])")
_SPACED_SEP = re.compile(r"[\s.\-_*·•]")


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


@lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    """NFKC, then traditional -> simplified, one character at a time (positions stay mappable)."""
    folded = unicodedata.normalize("NFKC", ch)
    if any("\u3400" <= c <= "\u9fff" for c in folded):
        return str(_t2s().convert(folded))
    if not folded.isascii() and "LATIN" in unicodedata.name(folded[0], ""):
        # `bést` -> `best`: accents on latin letters are an evasion of latin terms
        stripped = "".join(
            c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c)
        )
        return stripped or folded
    return folded


@dataclass(frozen=True)
class View:
    """A normalised text and, for each of its characters, the index of the original character."""

    text: str
    index: tuple[int, ...]
    original_length: int

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original ``[start, end)`` covered by the normalised ``[start, end)``."""
        if start >= end or not self.index:
            pos = self.index[start] if start < len(self.index) else self.original_length
            return (pos, pos)
        return (self.index[start], self.index[end - 1] + 1)

    def drop(self, positions: set[int]) -> View:
        keep = [i for i in range(len(self.text)) if i not in positions]
        return View(
            "".join(self.text[i] for i in keep),
            tuple(self.index[i] for i in keep),
            self.original_length,
        )


def folded(text: str) -> View:
    """NFKC + simplified characters, zero-width characters removed, runs of spaced-out single
    letters joined (``b e s t`` -> ``best``)."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch in ZERO_WIDTH:
            continue
        for c in _fold_char(ch):
            chars.append(c)
            index.append(i)
    view = View("".join(chars), tuple(index), len(text))
    joined: set[int] = set()
    for m in _SPACED_LETTERS.finditer(view.text):
        if len(m.group(0)) >= 5:  # `a b` is ordinary English; `b e s t` is not
            joined.update(m.start() + j for j, c in enumerate(m.group(0)) if _SPACED_SEP.match(c))
    return view.drop(joined) if joined else view


def squeezed(view: View) -> View:
    """The folded view without separators: the view that CJK terms are matched against."""
    return view.drop({i for i, c in enumerate(view.text) if c in SEPARATORS})


@dataclass(frozen=True)
class Views:
    """Both views of one text, computed once per check."""

    original: str
    plain: View
    tight: View

    @classmethod
    def of(cls, text: str) -> Views:
        plain = folded(text)
        return cls(text, plain, squeezed(plain))


def fold_simple(text: str) -> str:
    """Folded text without the position map (for facts, which need no spans), lower-cased."""
    return folded(text).text.lower()
