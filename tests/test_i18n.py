"""The page catalogues (web/i18n/*.json): complete in every language and in step with the pages.

Every visible string of the pages comes from one catalogue per language (web/js/i18n.js). These
checks keep the three catalogues interchangeable (same keys, same {placeholders}, no empty text,
written sorted so merges stay small) and tie them to the code: a key the pages use exists, and a
catalogue key no page uses is dead text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parent.parent / "web"
LANGUAGES = ("en", "ko", "mn")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# A catalogue key as the pages write it: "area.key" (letters, digits, '-' and '_' between dots).
KEY = re.compile(r"""["']([a-z][\w-]*(?:\.[\w-]+)+)["']""")
# A key built at run time, e.g. `tool.${id}.title`: its fixed parts, anything in between.
DYNAMIC = re.compile(r"`([a-z][\w-]*\.[^`$]*\$\{[^`]*)`")
HTML_KEYS = re.compile(r'data-i18n="([^"]+)"')
HTML_ATTR_KEYS = re.compile(r'data-i18n-attr="([^"]+)"')


def catalogue(code: str) -> dict[str, str]:
    data = json.loads((WEB / "i18n" / f"{code}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def sources() -> list[Path]:
    return sorted([*WEB.glob("js/*.js"), *WEB.glob("*.html")])


def used_keys(areas: set[str]) -> tuple[set[str], list[re.Pattern[str]]]:
    """Keys the pages name literally (in an area the catalogue has), and patterns of built keys."""
    literal: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".html":
            literal.update(HTML_KEYS.findall(text))
            for pairs in HTML_ATTR_KEYS.findall(text):
                literal.update(pair.split(":", 1)[1].strip() for pair in pairs.split(";"))
            continue
        literal.update(k for k in KEY.findall(text) if k.split(".")[0] in areas)
        for template in DYNAMIC.findall(text):
            parts = re.split(r"\$\{[^}]*\}", template)
            patterns.append(re.compile("^" + r"[\w-]+".join(map(re.escape, parts)) + "$"))
    return literal, patterns


@pytest.mark.parametrize("code", LANGUAGES)
def test_catalogue_is_sorted_flat_and_complete(code: str) -> None:
    path = WEB / "i18n" / f"{code}.json"
    data = catalogue(code)
    english = catalogue("en")
    assert (
        path.read_text(encoding="utf-8")
        == json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    ), f"{path.name}: write it sorted, 2-space indent, UTF-8 (see docs)"
    assert set(data) == set(english), f"{code}: keys differ from en: {set(data) ^ set(english)}"
    for key, text in data.items():
        assert isinstance(text, str) and text.strip(), f"{code}: {key} is empty"
        assert sorted(PLACEHOLDER.findall(text)) == sorted(PLACEHOLDER.findall(english[key])), (
            f"{code}: {key} has other placeholders than en"
        )


@pytest.mark.parametrize("code", ["ko", "mn"])
def test_translations_are_written_in_their_script(code: str) -> None:
    """A key left in English in ko/mn is an untranslated string (names and units aside)."""
    script = {"ko": r"[\uac00-\ud7a3]", "mn": r"[\u0400-\u04ff]"}[code]
    for key, text in catalogue(code).items():
        words = set(re.findall(r"[A-Za-z]{3,}", PLACEHOLDER.sub("", text)))
        if not re.search(script, text):
            assert words <= ALLOWED_LATIN, f"{code}: {key} is not translated: {text!r}"


# Names and units that stay in Latin letters in every language.
ALLOWED_LATIN = {"EndoLink", "kbit", "Mbit", "HD", "USB", "https", "Ctrl", "Enter", "Esc", "API"}


def test_every_key_the_pages_use_exists_and_every_key_is_used() -> None:
    english = catalogue("en")
    areas = {key.split(".")[0] for key in english}
    literal, patterns = used_keys(areas)
    missing = sorted(literal - set(english))
    assert not missing, f"keys used by the pages but not in the catalogues: {missing}"
    unused = sorted(
        k for k in english if k not in literal and not any(p.match(k) for p in patterns)
    )
    assert not unused, f"catalogue keys no page uses: {unused}"
