"""The repository explains itself: code cites only documents inside it, and those exist.

Code and tests cite ``docs/...`` pages (never a path outside the checkout, such as a sibling
``shared`` folder or an absolute path), and every vendor source key cited in brackets, such as
``[AK-kb]``, is defined in a "Sources" table of ``docs/vendors/*.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.nginx import TEMPLATE, render

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("bot", "web", "templates", "tests", "bench")
# Third-party bundles and generated files are not ours to cite from.
SKIPPED_DIRS = {"node_modules", "vendor", "__pycache__", ".pytest_cache", ".ruff_cache"}
TEXT_SUFFIXES = {".py", ".js", ".html", ".css", ".sql", ".sh", ".json", ".toml", ".md", ".txt"}

# Built from pieces so that this file does not flag itself.
_OUTSIDE = re.compile(r"(?<![\w.-])" + "shared" + r"/|" + "/" + r"work/")
# A docs/ path at the start of a path (not ".../api-docs/..." or "https://x/docs/...").
_DOCS_PATH = re.compile(r"(?<![\w/.-])docs/[\w./-]*[\w/]")
_KEY = r"[A-Z][A-Z0-9]+-[a-z0-9]+"
_CITATION = re.compile(r"\[([^\[\]\n]+)\]")
_KEY_ONLY = re.compile(_KEY)
_DEFINITION = re.compile(r"^\|\s*(" + _KEY + r")\s*\|", re.MULTILINE)


def outside_paths(text: str) -> list[str]:
    """Lines of ``text`` that cite a path outside the repository."""
    return [line.strip() for line in text.splitlines() if _OUTSIDE.search(line)]


def docs_paths(text: str) -> set[str]:
    """The ``docs/...`` paths ``text`` cites (without a trailing dot or slash)."""
    return {m.group(0).rstrip("/") for m in _DOCS_PATH.finditer(text)}


def source_keys(text: str) -> set[str]:
    """Source keys cited in brackets: ``[AK-kb]`` or ``[A2E-tok, A2E-qa]``.

    Brackets holding anything else (``[arg-type]``, ``[0-9a-f]``, ``[A-Za-z0-9]``) are not
    citations.
    """
    found: set[str] = set()
    for match in _CITATION.finditer(text):
        parts = [p.strip() for p in match.group(1).split(",")]
        if all(_KEY_ONLY.fullmatch(p) for p in parts):
            found.update(parts)
    return found


def defined_keys() -> set[str]:
    """Keys defined in the Sources tables of ``docs/vendors/*.md``."""
    keys: set[str] = set()
    for page in (ROOT / "docs/vendors").glob("*.md"):
        keys.update(_DEFINITION.findall(page.read_text(encoding="utf-8")))
    return keys


def scanned_files(*tops: str) -> Iterator[Path]:
    """Our own text files under ``tops``."""
    for top in tops:
        for path in sorted((ROOT / top).rglob("*")):
            rel = path.relative_to(ROOT)
            if SKIPPED_DIRS & set(rel.parts) or path.suffix not in TEXT_SUFFIXES:
                continue
            if path.is_file():
                yield path


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


# ---------------------------------------------------------------------- the finders work


def test_the_finders_recognise_citations_and_ignore_look_alikes() -> None:
    bad = "see ``../" + "shared" + "/docs/providers.md`` and " + "/" + "work/main/x"
    assert len(outside_paths(bad + "\nfine line\n")) == 1
    assert outside_paths("a shared_thing/ and network/ path") == []
    assert docs_paths("(``docs/vendors/akool.md``, §2) and docs/architecture.md.") == {
        "docs/vendors/akool.md", "docs/architecture.md",
    }
    assert docs_paths("discord-api-docs/x.md https://a.b/docs/ref docs.heygen.com/r") == set()
    assert source_keys("limit [AK-kb]; both [A2E-tok, A2E-qa]") == {"AK-kb", "A2E-tok", "A2E-qa"}
    assert source_keys("# type: ignore[arg-type] re [0-9a-f] [A-Za-z0-9_-] [A-Z0-9]") == set()


# ---------------------------------------------------------------------- the repository


def test_nothing_cites_a_path_outside_the_repository() -> None:
    bad = [
        f"{path.relative_to(ROOT)}: {line}"
        for path in scanned_files(*SCANNED)
        for line in outside_paths(_read(path))
    ]
    assert bad == []


def test_every_cited_docs_page_exists() -> None:
    missing = sorted(
        f"{path.relative_to(ROOT)} cites {cited}"
        for path in scanned_files(*SCANNED)
        for cited in docs_paths(_read(path))
        if not (ROOT / cited).exists()
    )
    assert missing == []


@pytest.mark.parametrize("top", ["bot/providers", "tests/fakes"])
def test_every_source_key_is_defined_in_the_vendor_pages(top: str) -> None:
    defined = defined_keys()
    undefined = sorted(
        f"{path.relative_to(ROOT)} cites [{key}]"
        for path in scanned_files(top)
        for key in source_keys(_read(path))
        if key not in defined
    )
    assert undefined == []


def test_the_adapters_cite_their_vendor_page() -> None:
    for vendor in ("a2e", "akool", "heygen"):
        text = _read(ROOT / f"bot/providers/{vendor}.py")
        assert f"docs/vendors/{vendor}.md" in docs_paths(text), vendor


def test_the_readme_shows_the_nginx_config_the_several_workers_test_runs() -> None:
    # The README's nginx example for several workers is docs/nginx.conf word for word, and
    # tests/cluster/test_behind_nginx.py runs nginx with that file (its ports, no TLS).
    readme = _read(ROOT / "README.md")
    shown = re.findall(r"^```nginx\n(.*?)^```$", readme, re.MULTILINE | re.DOTALL)
    assert shown == [_read(TEMPLATE)]
    rendered = render(9000, [9001, 9002])
    assert "listen 127.0.0.1:9000;" in rendered and "ssl" not in rendered
    assert "server 127.0.0.1:9001;\n    server 127.0.0.1:9002;\n}" in rendered
