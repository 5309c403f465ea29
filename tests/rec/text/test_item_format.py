"""Item text layouts (rec.text.item_format, text.item_format)."""

from __future__ import annotations

import pytest

from rec.config import load_config
from rec.data.loaders._common import join_fields
from rec.text.item_format import format_item_text, format_item_texts, kv_text


def test_kv_builds_named_parts_from_the_loaders_joined_text() -> None:
    joined = join_fields("Gel Pen", [("brand", "Pilot"), ("categories", ["Office Products", "Pens"])])
    assert joined == "Gel Pen | brand: Pilot | categories: Office Products, Pens"
    assert format_item_text(joined, "kv") == "title: Gel Pen; brand: Pilot; category: Office Products, Pens"
    assert kv_text("Gel Pen", [("brand", "Pilot"), ("category", "Pens")]) == "title: Gel Pen; brand: Pilot; category: Pens"


def test_kv_falls_back_to_the_title_where_fields_are_missing() -> None:
    assert format_item_text("Just A Title", "kv") == "Just A Title"
    assert kv_text("Gel Pen", [("brand", ""), ("category", "  ")]) == "Gel Pen"
    assert format_item_text("Pen | brand: Bic", "kv") == "title: Pen; brand: Bic"  # only the fields there are
    assert format_item_text("A | B Records | genres: Drama", "kv") == "title: A | B Records; genre: Drama"  # " | " inside a title


def test_joined_is_unchanged_and_unknown_formats_are_refused() -> None:
    texts = ["Pen | brand: Bic", "Title"]
    assert format_item_texts(texts, "joined") == texts
    with pytest.raises(ValueError, match="item_format"):
        format_item_text("x", "yaml")
    assert load_config(None, ["text.item_format=kv"]).text.item_format == "kv"
    with pytest.raises(Exception, match="item_format"):
        load_config(None, ["text.item_format=yaml"])
