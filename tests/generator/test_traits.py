"""Trait detection (CONTRACT.md §7) on zh and en cues."""

from __future__ import annotations

import pytest

from generator.traits import detect_traits, length_trait
from streams.schemas import TRAITS

CASES = [
    ("zh", "仅需¥159", "price"),
    ("zh", "到手199元", "price"),
    ("zh", "限时8折", "discount"),
    ("zh", "立减¥40", "discount"),
    ("zh", "八五折", "discount"),
    ("zh", "限时抢购", "urgency"),
    ("zh", "仅剩今天", "urgency"),
    ("zh", "双11狂欢", "festive"),
    ("zh", "春节好礼", "festive"),
    ("zh", "冬季暖心好物", "festive"),
    ("zh", "品质之选", "quality"),
    ("zh", "精选面料", "quality"),
    ("zh", "温暖每一天", "emotion"),
    ("zh", "宠爱自己", "emotion"),
    ("zh", "爆款热卖", "social_proof"),
    ("zh", "好评如潮", "social_proof"),
    ("zh", "送给您", "second_person"),
    ("zh", "亲，看这里", "second_person"),
    ("zh", "还在犹豫吗？", "question"),
    ("zh", "冲！", "exclaim"),
    ("en", "Now $24", "price"),
    ("en", "25% off", "discount"),
    ("en", "Save $8", "discount"),
    ("en", "Today only", "urgency"),
    ("en", "Hurry", "urgency"),
    ("en", "Christmas gift idea", "festive"),
    ("en", "Premium quality", "quality"),
    ("en", "Cozy up", "emotion"),
    ("en", "Treat yourself", "emotion"),
    ("en", "Bestseller", "social_proof"),
    ("en", "Made for you", "second_person"),
    ("en", "Why wait?", "question"),
    ("en", "Get yours!", "exclaim"),
]


@pytest.mark.parametrize(("language", "text", "trait"), CASES)
def test_cue_is_detected(language: str, text: str, trait: str) -> None:
    assert trait in detect_traits(text, language=language, channel="product_desc")  # type: ignore[arg-type]


NOT = [
    ("zh", "折叠伞", "discount"),  # 折叠 is folding, not a discount
    ("zh", "迷你围巾", "second_person"),  # 迷你 is mini
    ("zh", "亲肤面料", "second_person"),  # 亲肤 is skin-friendly
    ("en", "It was lovely", "discount"),
    ("en", "Bestseller", "second_person"),
    ("en", "A fine mug", "question"),
]


@pytest.mark.parametrize(("language", "text", "trait"), NOT)
def test_lookalikes_are_not_cues(language: str, text: str, trait: str) -> None:
    assert trait not in detect_traits(text, language=language, channel="product_desc")  # type: ignore[arg-type]


def test_length_traits_follow_the_channel_limits() -> None:
    assert length_trait(9, language="zh", channel="ad_headline") == "short"  # < 30/3
    assert length_trait(15, language="zh", channel="ad_headline") is None
    assert length_trait(21, language="zh", channel="ad_headline") == "long"  # > 20
    assert "long" in detect_traits("x" * 300, language="en", channel="product_desc")
    assert "short" in detect_traits("Cozy mug", language="en", channel="ad_headline")


def test_brand_trait_needs_the_brand_as_a_word() -> None:
    assert "brand" in detect_traits("暖阳羊毛围巾", language="zh", channel="push", brand="暖阳")
    assert "brand" in detect_traits("New from ORA!", language="en", channel="push", brand="Ora")
    assert "brand" not in detect_traits("Aurora lights", language="en", channel="push", brand="Ora")
    assert "brand" not in detect_traits("暖阳羊毛围巾", language="zh", channel="push", brand=None)


def test_full_width_marks_count() -> None:
    traits = detect_traits("限时８折！仅需￥１５９？", language="zh", channel="ad_headline")
    assert {"price", "discount", "urgency", "exclaim", "question"} <= set(traits)


def test_order_follows_the_vocabulary_and_input_is_validated() -> None:
    traits = detect_traits("Hurry! 25% off, now $24 for you", language="en", channel="push")
    assert traits == [t for t in TRAITS if t in traits]
    with pytest.raises(ValueError, match="`language`"):
        detect_traits("x", language="fr", channel="push")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`channel`"):
        detect_traits("x", language="zh", channel="tv")  # type: ignore[arg-type]
