"""Fluency: copy a brand manager would not sign even though it breaks no law. Each failure has
its own rule, so that rejection counts say what a model gets wrong:

* ``repetition`` — a word or phrase said twice in a row (``now $112, now $112``), a clause said
  twice, or a long phrase repeated anywhere (in the long channels, ``product_desc`` and
  ``social``, the product's own title or brand may come twice: a description names what it
  describes again, a headline does not);
* ``punctuation`` — a text that ends on a comma or colon, starts with one, or doubles marks
  (``，，``, ``！，``; ``!!`` and ``…`` are style, not errors);
* ``brackets`` — unbalanced brackets or quotes;
* ``slot_fill`` — a placeholder left in the text, a currency sign without an amount, a null value
  or a special token of the model;
* ``mixed_script`` — characters of a script the copy's language does not use (CJK in English copy,
  kana, hangul or Cyrillic anywhere, an English phrase in Chinese copy), unless the product's
  facts are written in it.

Basis: the project's quality bar (TARGETS.md: no repeated phrases, dangling punctuation or
broken slot fills)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from generator.guardrails.base import Context, Rule, Violation, squeeze

REPETITION = "repetition"
PUNCTUATION = "punctuation"
BRACKETS = "brackets"
SLOT_FILL = "slot_fill"
MIXED_SCRIPT = "mixed_script"
BASIS = "TARGETS.md: no repeated phrases, dangling punctuation or broken slot fills"

_EN_WORD = re.compile(r"[$¥€£]?\d[\d,]*(?:\.\d+)?%?|[A-Za-z][A-Za-z'’\-]*|[\u3400-\u9fff]")
#: English words that may stand twice in a row (``so so``, ``bye bye``).
_DOUBLE_OK = frozenset({"so", "bye", "very", "knock", "no", "go", "ha", "la"})
_CLAUSE_SPLIT = re.compile(r"[，,。!！?？;；:：|｜·•~～—–/、\n]+|(?<!\d)\.|\s-\s|\s{2,}")
_EN_REPEAT_MIN = 3  # words in a phrase that may not come twice anywhere
_ZH_REPEAT_MIN = 4  # characters likewise
#: channels long enough that naming the product twice is ordinary writing
_LONG_CHANNELS = frozenset({"product_desc", "social"})

_OPENERS = "，,、。.：:；;！!？?）)】]》〉」』”|｜·"
_DANGLING = "，,、：:；;-–—|｜·/（(【[《〈「『“&+"
_DOUBLED = re.compile(
    r"[，,、：:；;]\s*[，,、：:；;。！!？?]|[。！!？?]\s*[，,、：:；;]|。\s*。|(?<![.\d])\.\s*\.(?!\.)|"
    r"[、]\s*[、]"
)
_PAIRS = {
    "(": ")",
    "（": "）",
    "[": "]",
    "【": "】",
    "《": "》",
    "〈": "〉",
    "「": "」",
    "『": "』",
}
_CURLY = {"“": "”"}
_SLOT_LEFT = re.compile(
    r"\{[^{}]*\}|[{}]|<(?:unk|pad|/?s|copy|0x[0-9A-Fa-f]{2}|[a-z]+:[a-z_]+)>|\ufffd|%s|"
    r"\[(?:brand|name|price|product|title|discount|material|color)\]|"
    r"(?<![A-Za-z])(?:null|NaN|undefined|N/A)(?![A-Za-z])|"
    r"[¥$€£:：]\s?None\b|[¥$€£](?!\s?\d)",
)
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_FOREIGN = {
    "zh": re.compile(r"[\u3040-\u30ff\uac00-\ud7af\u0400-\u04ff\u0370-\u03ff\u0600-\u06ff]+"),
    "en": re.compile(
        rf"[{_CJK}\u3040-\u30ff\uac00-\ud7af\u0400-\u04ff\u0370-\u03ff\u0600-\u06ff]+"
    ),
}
_LATIN_RUN = re.compile(r"[A-Za-z][A-Za-z'’\-]*(?:\s+[A-Za-z][A-Za-z'’\-]*)+")
#: Latin words that zh copy uses as ordinary words (see also ``facts._ZH_LATIN_OK``).
_ZH_LATIN_WORDS = frozenset({"new", "sale", "vip", "ok", "diy", "pro", "max", "mini", "plus", "in"})


def _own_names(ctx: Context) -> tuple[str, ...]:
    """The product's title and brand, folded, where a long channel may repeat them."""
    if ctx.channel not in _LONG_CHANNELS:
        return ()
    names = (ctx.product.title, ctx.product.brand)
    return tuple(squeeze(n).replace("’", "'") for n in names)


def find_repetition(ctx: Context) -> Iterator[Violation]:
    plain = ctx.views.plain
    own = _own_names(ctx)
    if ctx.language == "en":
        words = list(_EN_WORD.finditer(plain.text))
        low = [w.group(0).lower().replace("’", "'") for w in words]
        for size in range(1, 6):
            for i in range(len(low) - 2 * size + 1):
                unit = low[i : i + size]
                if unit == low[i + size : i + 2 * size] and not (
                    size == 1 and unit[0] in _DOUBLE_OK
                ):
                    start, end = words[i].start(), words[i + 2 * size - 1].end()
                    yield Violation(
                        REPETITION, plain.span(start, end), f"`{' '.join(unit)}` twice in a row"
                    )
                    return
        grams = Counter(
            tuple(low[i : i + _EN_REPEAT_MIN]) for i in range(len(low) - _EN_REPEAT_MIN + 1)
        )
        repeated = [
            g
            for g, c in grams.items()
            if c > 1 and _non_overlapping(low, g) and not any("".join(g) in n for n in own)
        ]
        if repeated:
            yield Violation(REPETITION, None, f"`{' '.join(repeated[0])}` said twice")
            return
    else:
        tight = ctx.views.tight
        found = _zh_adjacent(tight.text)
        if found is not None:
            start, end = found
            twice = tight.text[start : start + (end - start) // 2]
            yield Violation(REPETITION, tight.span(start, end), f"`{twice}` twice in a row")
            return
        text = tight.text
        for i in range(len(text) - _ZH_REPEAT_MIN + 1):
            piece = text[i : i + _ZH_REPEAT_MIN]
            if piece.isdigit() or piece.isascii() or any(piece in n for n in own):
                continue
            if text.find(piece, i + _ZH_REPEAT_MIN) >= 0:
                yield Violation(
                    REPETITION, tight.span(i, i + _ZH_REPEAT_MIN), f"`{piece}` said twice"
                )
                return
    clauses = [squeeze(c) for c in _CLAUSE_SPLIT.split(plain.text)]
    counts = Counter(c for c in clauses if len(c) >= 2)
    doubled = [c for c, n in counts.items() if n > 1]
    if doubled:
        yield Violation(REPETITION, None, f"the clause `{doubled[0]}` comes twice")


def _zh_adjacent(text: str) -> tuple[int, int] | None:
    """A unit of two to eight characters said twice in a row (``马上抢马上抢``). Single
    characters double as ordinary reduplication (``暖暖``, ``买买买``), digits as dates
    (``11.11``)."""
    for size in range(2, 9):
        for i in range(len(text) - 2 * size + 1):
            unit = text[i : i + size]
            if not unit.isdigit() and unit == text[i + size : i + 2 * size]:
                return i, i + 2 * size
    return None


def _non_overlapping(words: list[str], gram: tuple[str, ...]) -> bool:
    size = len(gram)
    at = [i for i in range(len(words) - size + 1) if tuple(words[i : i + size]) == gram]
    return at[-1] - at[0] >= size


def find_punctuation(ctx: Context) -> Iterator[Violation]:
    text = ctx.text
    stripped = text.strip()
    if not stripped:
        return
    if stripped[-1] in _DANGLING:
        at = text.rindex(stripped[-1])
        yield Violation(PUNCTUATION, (at, at + 1), f"ends on a dangling `{stripped[-1]}`")
    if stripped[0] in _OPENERS:
        at = text.index(stripped[0])
        yield Violation(PUNCTUATION, (at, at + 1), f"starts with `{stripped[0]}`")
    for m in _DOUBLED.finditer(text):
        yield Violation(PUNCTUATION, m.span(), f"doubled punctuation `{m.group(0)}`")
        return


def find_brackets(ctx: Context) -> Iterator[Violation]:
    text = ctx.text
    closers = {v: k for k, v in {**_PAIRS, **_CURLY}.items()}
    stack: list[tuple[str, int]] = []
    for i, ch in enumerate(text):
        if ch in _PAIRS or ch in _CURLY:
            stack.append((ch, i))
        elif ch in closers:
            if not stack or stack[-1][0] != closers[ch]:
                yield Violation(BRACKETS, (i, i + 1), f"`{ch}` closes nothing")
                return
            stack.pop()
    if stack:
        ch, i = stack[-1]
        yield Violation(BRACKETS, (i, i + 1), f"`{ch}` is never closed")
        return
    if text.count('"') % 2:
        i = text.rindex('"')
        yield Violation(BRACKETS, (i, i + 1), 'an odd number of `"`')


def find_slot_fill(ctx: Context) -> Iterator[Violation]:
    for m in _SLOT_LEFT.finditer(ctx.text):
        yield Violation(SLOT_FILL, m.span(), f"`{m.group(0)}` is a broken or unfilled slot")
        return


def find_mixed_script(ctx: Context) -> Iterator[Violation]:
    plain = ctx.views.plain
    facts = ctx.facts.text
    for m in _FOREIGN[ctx.language].finditer(plain.text):
        if m.group(0).lower() not in facts:
            yield Violation(
                MIXED_SCRIPT,
                plain.span(*m.span()),
                f"`{m.group(0)}` is not in the script of {ctx.language} copy",
            )
            return
    if ctx.language == "zh":
        for m in _LATIN_RUN.finditer(plain.text):
            words = m.group(0).lower().split()
            if all(w in _ZH_LATIN_WORDS for w in words) or m.group(0).lower() in facts:
                continue
            yield Violation(
                MIXED_SCRIPT, plain.span(*m.span()), f"`{m.group(0)}` is English in zh copy"
            )
            return


REPETITION_RULE = Rule(REPETITION, BASIS, find_repetition)
PUNCTUATION_RULE = Rule(PUNCTUATION, BASIS, find_punctuation)
BRACKETS_RULE = Rule(BRACKETS, BASIS, find_brackets)
SLOT_FILL_RULE = Rule(SLOT_FILL, BASIS, find_slot_fill)
MIXED_SCRIPT_RULE = Rule(MIXED_SCRIPT, BASIS, find_mixed_script)
