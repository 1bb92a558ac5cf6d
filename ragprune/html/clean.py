"""Safe HTML parsing and cleaning that keeps meaningful structure.

Parsing uses lxml's HTML parser with recovery (malformed markup never raises), no network
access, and no DTD or external entity loading. libxml2 bounds the nesting depth it builds
(256 levels without ``huge_tree``), and :func:`parse_html` refuses inputs over ``max_bytes``.

Cleaning keeps headings, paragraphs, lists, tables, quotes and preformatted text, and drops
scripts, styles, comments, forms, media, hidden elements, navigation/boilerplate containers and
every attribute except table spans; wrapper chains with a single child are merged and empty
elements removed (HtmlRAG's "lossless cleaning", done with lxml).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["parse_html", "decode_html", "clean_html", "clean_tree", "HtmlInputError", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 32 * 1024 * 1024

DROP_TAGS = frozenset("""
script style noscript template iframe frame frameset object embed applet svg math canvas video audio
source track picture img map area link meta base head title form input button select option optgroup
textarea label fieldset legend datalist output progress meter dialog menu nav footer aside
""".split())
# Inline formatting: unwrapped, its text joins the surrounding text.
INLINE = frozenset("span font b i u em strong mark abbr cite time a small big s del ins tt kbd samp var code "
                   "sub sup bdi bdo q dfn wbr nobr".split())
# Layout containers: merged away when they wrap exactly one element and no text of their own.
LAYOUT = frozenset("div section article main header center hgroup figure".split())
KEEP_ATTRS = frozenset({"colspan", "rowspan"})
BOILERPLATE = re.compile(
    r"(^|[\s_-])(nav|navbar|navbox|navigation|menu|footer|sidebar|breadcrumbs?|cookie|banner|advert|ads|"
    r"social|share|sharing|subscribe|newsletter|related|comments?|popup|modal|skip|noprint|mw-editsection|"
    r"mw-jump-link|catlinks|printfooter|toc|reflist|references|metadata|hatnote|sistersitebox|authority-control)"
    r"($|[\s_-])", re.I)
HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


class HtmlInputError(ValueError):
    """The HTML input is of the wrong type or too large."""


def _decode(html: str | bytes, owner: str, max_bytes: int) -> str | bytes:
    if isinstance(html, (bytes, bytearray, memoryview)):
        data = bytes(html)
        if len(data) > max_bytes:
            raise HtmlInputError(f"{owner}: the page is {len(data):,} bytes, over max_bytes={max_bytes:,}; "
                                 "raise max_bytes or split the page.")
        return data
    if not isinstance(html, str):
        raise TypeError(f"{owner}: html must be str or bytes, got {type(html).__name__}.")
    if len(html) > max_bytes:
        raise HtmlInputError(f"{owner}: the page has {len(html):,} characters, over max_bytes={max_bytes:,}; "
                             "raise max_bytes or split the page.")
    return html


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.I)


def decode_html(data: bytes) -> str:
    """Bytes to text: BOM, then the document's ``<meta charset>``, then UTF-8, then cp1252."""
    import codecs

    for bom, enc in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(enc, "replace")
    m = _META_CHARSET.search(data[:8192])
    if m:
        try:
            return data.decode(m.group(1).decode("ascii").lower(), "replace")
        except LookupError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def parse_html(html: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, owner: str = "parse_html") -> Any:
    """Parse a page (str, or bytes with the charset taken from the document) into an lxml tree.

    Never raises on malformed markup; returns a ``<html><body>`` tree (empty for empty input).
    No network access, no DTD, no external entities.

    Raises:
        TypeError: ``html`` is neither str nor bytes.
        HtmlInputError: the input is larger than ``max_bytes``.
    """
    import lxml.html
    from lxml import etree

    data = _decode(html, owner, max_bytes)
    text = decode_html(data) if isinstance(data, bytes) else data
    # libxml2 stops at NUL; lone surrogates cannot be encoded: both are dropped/replaced
    raw = text.replace("\x00", "").encode("utf-8", "replace")
    if not raw.strip():
        return lxml.html.fromstring("<html><body></body></html>")
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True,
                                  recover=True, default_doctype=False)
    try:
        root = etree.fromstring(raw, parser)
    except (etree.ParserError, ValueError):
        root = None
    if root is None:  # nothing parseable: treat as text
        root = lxml.html.fromstring("<html><body></body></html>")
        root.find("body").text = re.sub(r"<!--.*?-->|<[^>]*>", " ", text, flags=re.S).strip() or None
    return root


def _is_hidden(el: Any) -> bool:
    a = el.attrib
    if "hidden" in a or a.get("aria-hidden", "").lower() == "true":
        return True
    if HIDDEN_STYLE.search(a.get("style", "")):
        return True
    return bool(BOILERPLATE.search(a.get("class", "")) or BOILERPLATE.search(a.get("id", "")) or
                a.get("role", "").lower() in ("navigation", "banner", "contentinfo", "complementary", "search"))


def drop_keep_tail(el: Any) -> None:
    """Remove ``el`` but keep its tail text in place."""
    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail
    if tail:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)


def _has_text(el: Any) -> bool:
    return bool((el.text or "").strip()) or any(_has_text(c) or (c.tail or "").strip() for c in el)


def clean_tree(root: Any) -> Any:
    """Clean a parsed tree in place (see the module docstring) and return its ``<body>``."""
    body = root.find("body") if root.tag == "html" else root
    if body is None:
        body = root
    # 1. drop non-content elements (iterate over a snapshot; children go with their parent)
    for el in list(body.iter()):
        if el is body or el.getparent() is None:
            continue
        tag = el.tag if isinstance(el.tag, str) else ""
        if not tag or tag.lower() in DROP_TAGS or _is_hidden(el):
            drop_keep_tail(el)
    # 2. attributes: only table spans survive; tag names lowercased
    for el in body.iter():
        if not isinstance(el.tag, str):
            continue
        el.tag = el.tag.lower()
        for k in list(el.attrib):
            if k not in KEEP_ATTRS:
                del el.attrib[k]
    # 3. line breaks become newlines; then remove empty elements (bottom-up)
    for el in list(body.iter("br", "hr")):
        el.tail = "\n" + (el.tail or "")
        drop_keep_tail(el)
    for el in reversed(list(body.iter())):
        if el is not body and el.getparent() is not None and not _has_text(el):
            drop_keep_tail(el)
    # 4. unwrap inline formatting and merge single-child layout chains (bottom-up)
    for el in reversed(list(body.iter())):
        if el is body or el.getparent() is None:
            continue
        single_wrapper = (el.tag in LAYOUT and len(el) == 1 and not (el.text or "").strip()
                          and not (el[0].tail or "").strip())
        if el.tag in INLINE or single_wrapper:
            _unwrap(el)
    return body


def _unwrap(el: Any) -> None:
    """Replace ``el`` by its children and text (like lxml's strip_tags, for one element)."""
    parent = el.getparent()
    idx = parent.index(el)
    text, tail = el.text or "", el.tail or ""
    children = list(el)
    if idx == 0:
        parent.text = (parent.text or "") + text
    else:
        prev = parent[idx - 1]
        prev.tail = (prev.tail or "") + text
    for i, c in enumerate(children):
        parent.insert(idx + i, c)
    if children:
        children[-1].tail = (children[-1].tail or "") + tail
    elif idx == 0:
        parent.text = (parent.text or "") + tail
    else:
        prev = parent[idx - 1]
        prev.tail = (prev.tail or "") + tail
    parent.remove(el)


def clean_html(html: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Parse and clean a page; returns the cleaned ``<body>`` content as an HTML string."""
    import lxml.html

    body = clean_tree(parse_html(html, max_bytes=max_bytes, owner="clean_html"))
    return lxml.html.tostring(body, encoding="unicode")
