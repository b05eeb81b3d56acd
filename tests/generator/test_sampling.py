"""From product to pool with the shipped bootstrap model: checked, distinct, spread across
traits, reproducible from the seed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from generator.guardrails import Checker, check
from generator.model import CopyGenerator
from generator.prompts import STYLES, control_prompt, plan_for, training_example
from generator.sampling import (
    Candidate,
    SamplingConfig,
    clean,
    generate,
    plan_candidates,
    select,
    variant_id,
)
from generator.slots import fill, slot_values
from generator.traits import detect_traits
from streams.schemas import CHANNEL_LIMITS, Product

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "products"
PRODUCTS = {p.stem: Product.model_validate_json(p.read_text()) for p in EXAMPLES.glob("*.json")}


def test_examples_cover_both_languages_and_several_categories() -> None:
    assert {p.language for p in PRODUCTS.values()} == {"zh", "en"}
    for lang in ("zh", "en"):
        assert len({p.category for p in PRODUCTS.values() if p.language == lang}) >= 3


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_pool_of_eight_checked_variants_covering_four_traits(
    bootstrap: CopyGenerator, name: str
) -> None:
    product = PRODUCTS[name]
    report = generate(bootstrap, product, "ad_headline", 8, seed=0)
    pool = report.pool
    assert len(pool.variants) == 8
    assert pool.product_id == product.product_id
    assert pool.generator_version == bootstrap.version
    texts = [v.text for v in pool.variants]
    assert len(set(texts)) == 8 and len({v.variant_id for v in pool.variants}) == 8
    traits: set[str] = set()
    for i, v in enumerate(pool.variants):
        assert v.ai_generated is True
        assert v.language == product.language and v.channel == "ad_headline"
        assert check(v.text, product, "ad_headline", others=texts[:i]).passed
        assert v.traits == detect_traits(
            v.text, language=v.language, channel=v.channel, brand=product.brand
        )
        assert v.variant_id == variant_id(v.text, v.language, v.channel)
        assert "{" not in v.text  # every slot was filled
        traits.update(v.traits)
    assert len(traits) >= 4, traits
    assert report.sampled >= 8 and report.passed >= 8


@pytest.mark.parametrize("channel", ["product_desc", "push", "social"])
@pytest.mark.parametrize("name", ["scarf-zh", "mug-en"])
def test_other_channels(bootstrap: CopyGenerator, name: str, channel: str) -> None:
    product = PRODUCTS[name]
    pool = generate(bootstrap, product, channel, 4, seed=1).pool  # type: ignore[arg-type]
    assert len(pool.variants) == 4
    for v in pool.variants:
        assert len(v.text) <= CHANNEL_LIMITS[v.channel][v.language]
        assert Checker(product, v.channel).check(v.text).passed


def test_same_seed_same_pool(bootstrap: CopyGenerator) -> None:
    product = PRODUCTS["tea-zh"]
    a = generate(bootstrap, product, "ad_headline", 6, seed=4).pool
    b = generate(bootstrap, product, "ad_headline", 6, seed=4).pool
    c = generate(bootstrap, product, "ad_headline", 6, seed=5).pool
    assert [v.text for v in a.variants] == [v.text for v in b.variants]
    assert [v.text for v in a.variants] != [v.text for v in c.variants]
    assert a.pool_version == 1
    assert (
        generate(bootstrap, product, "ad_headline", 2, seed=0, pool_version=7).pool.pool_version
        == 7
    )


def test_plans_cycle_through_the_styles_the_product_allows() -> None:
    rng = random.Random(0)
    no_sale = PRODUCTS["tea-zh"]
    plans = plan_candidates(no_sale, "push", "zh", 30, rng)
    primaries = {p.styles[0] for p in plans}
    assert primaries == set(STYLES) - {"discount"}
    assert all("discount" not in p.styles and "discount" not in p.slots for p in plans)
    on_sale = plan_candidates(PRODUCTS["scarf-zh"], "push", "zh", 30, rng)
    assert "discount" in {p.styles[0] for p in on_sale}
    assert {"material", "color", "size", "discount"} <= set(on_sale[0].slots)


def test_select_spreads_traits_and_drops_near_duplicates() -> None:
    product = PRODUCTS["scarf-zh"]
    checker = Checker(product, "ad_headline")
    plan = plan_candidates(product, "ad_headline", "zh", 1, random.Random(0))[0]

    def cand(text: str) -> Candidate:
        traits = detect_traits(text, language="zh", channel="ad_headline", brand="暖阳")
        return Candidate(plan, text, text, tuple(traits), checker.check(text))

    candidates = [
        cand("限时抢购 羊毛围巾"),
        cand("限时抢购 羊毛围巾～"),  # near-duplicate of the first
        cand("限时抢购！羊毛围巾 仅需¥159"),
        cand("最佳羊毛围巾"),  # fails the guardrails
        cand("暖阳羊毛围巾 温暖每一天"),
        cand("送给你的羊毛围巾"),
    ]
    pool = select(candidates, 4, "zh")
    texts = [c.text for c in pool]
    assert "最佳羊毛围巾" not in texts
    assert not {"限时抢购 羊毛围巾", "限时抢购 羊毛围巾～"} <= set(texts)
    assert texts[0] == "限时抢购！羊毛围巾 仅需¥159"  # covers the most traits
    assert len(texts) == 4
    covered = {t for c in pool for t in c.traits}
    assert covered == {t for c in candidates if c.passed for t in c.traits}


def test_clean_and_config_validation() -> None:
    assert clean('\n  "Copy: Cozy up with the Northwind mug"  \nmore') == (
        "Cozy up with the Northwind mug"
    )
    assert clean("「限时抢购  羊毛围巾」") == "限时抢购 羊毛围巾"
    with pytest.raises(ValueError, match="`oversample`"):
        SamplingConfig(oversample=0.5)
    with pytest.raises(ValueError, match="`n`"):
        generate(None, PRODUCTS["scarf-zh"], "ad_headline", 0, seed=0)  # type: ignore[arg-type]


def test_shown_copy_becomes_training_text_in_slot_form(bootstrap: CopyGenerator) -> None:
    product = PRODUCTS["scarf-zh"]
    pool = generate(bootstrap, product, "ad_headline", 8, seed=0).pool
    for v in pool.variants:
        example = training_example(product, v.channel, v.text, v.traits)
        plan = plan_for(product, v.channel, v.text, v.traits)
        assert example.startswith(control_prompt(plan)) and example.endswith("</s>")
        answer = example[len(control_prompt(plan)) : -len("</s>")]
        assert fill(answer, slot_values(product)) == v.text  # nothing lost
        assert product.brand not in answer and "¥159" not in answer  # facts became slots
        assert set(plan.styles) <= set(v.traits)
        ids = bootstrap.tokenizer(example, add_special_tokens=False).input_ids
        assert bootstrap.tokenizer.unk_token_id not in ids


def test_free_prompt_share_asks_for_no_style_and_keeps_the_styled_draws() -> None:
    product = PRODUCTS["scarf-zh"]
    styled = plan_candidates(product, "push", "zh", 40, random.Random(5))
    mixed = plan_candidates(product, "push", "zh", 40, random.Random(5), free_share=0.5)
    free = [m for m in mixed if not m.styles]
    assert 5 < len(free) < 35  # about half, drawn
    # the others are the very plans a share of 0 draws, in place
    assert all(m == s for m, s in zip(mixed, styled, strict=True) if m.styles)
    assert all(
        not p.styles for p in plan_candidates(product, "push", "zh", 10, random.Random(1), 1.0)
    )


def test_free_prompt_share_is_read_from_the_model_folder(tmp_path: Path) -> None:
    from generator.errors import ModelLoadError
    from generator.model import read_format, read_free_share

    assert read_free_share(tmp_path) == 0.0  # no copyloop.json
    (tmp_path / "copyloop.json").write_text('{"format": "slots-v1", "free_prompt_share": 0.5}')
    assert read_free_share(tmp_path) == 0.5 and read_format(tmp_path) == "slots-v1"
    (tmp_path / "copyloop.json").write_text('{"free_prompt_share": 2}')
    with pytest.raises(ModelLoadError, match="free_prompt_share"):
        read_free_share(tmp_path)
