"""Safe HTML parsing and cleaning that keeps meaningful structure.

Parsing uses lxml's HTML parser with recovery (malformed markup never raises), no network
access, and no DTD or external entity loading. :func:`parse_html` refuses inputs over
``max_bytes``. libxml2 stops building at nesting depth 256 and drops the rest of the page: such
pages are parsed again with its larger limit (2048) and flattened to ``MAX_DEPTH`` levels, and
beyond even that limit their text is kept as plain text, so no content is silently lost.

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


# Characters XML (and so lxml) cannot hold, raw or as numeric character references.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BAD_CHARREF = re.compile(r"&#(?:[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F]|[fF]{3}[eEfF])(?![0-9a-fA-F])"
                          r"|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]|6553[45])(?![0-9]));?")
# a DOCTYPE with an internal subset (entity declarations, never expanded here); bounded, no backtracking blow-up
_DOCTYPE_SUBSET = re.compile(r"\A\s*(?:<\?xml[^>]{0,300}\?>\s*)?<!DOCTYPE[^\[>]{0,1000}\[[^\]]{0,100000}\]\s*>", re.I)
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
            enc = codecs.lookup(m.group(1).decode("ascii").lower()).name
            if enc.startswith(("utf-16", "utf-32")):  # a <meta> readable as ASCII cannot be: UTF-8 (HTML spec)
                enc = "utf-8"
            return data.decode(enc, "replace")
        except (LookupError, UnicodeError):  # unknown charset, or a codec (idna, ...) unfit for pages
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

    data = _decode(html, owner, max_bytes)
    text = decode_html(data) if isinstance(data, bytes) else data
    # libxml2 stops at NUL and lxml refuses control characters in text (also via &#1;-style
    # references) and lone surrogates: all are dropped/replaced before parsing
    text = _BAD_CHARREF.sub("", _XML_INVALID.sub("", text))
    text = _DOCTYPE_SUBSET.sub("", text, count=1)  # libxml2's HTML parser would leave "]>" as text
    raw = text.encode("utf-8", "replace")
    if not raw.strip():
        return lxml.html.fromstring("<html><body></body></html>")
    root, too_deep = _parse(raw, huge_tree=False)
    if too_deep:
        # libxml2 silently drops everything after nesting depth 256 (300 unclosed <font> tags
        # empty a page): parse again with its larger limit, then flatten what is too deep
        root, too_deep = _parse(raw, huge_tree=True)
        if too_deep:  # deeper than even that: keep the text rather than lose it
            root = None
        elif root is not None:  # inline tags (often the depth) go too: cleaning unwraps them anyway
            _flatten(root, MAX_DEPTH)
    if root is None:  # nothing parseable: treat as text
        root = lxml.html.fromstring("<html><body></body></html>")
        root.find("body").text = _strip_markup(raw.decode("utf-8")).strip() or None  # surrogates replaced
    return root


MAX_DEPTH = 200  # elements nested deeper are unwrapped (their text stays) after a huge_tree parse


def _parse(raw: bytes, *, huge_tree: bool) -> tuple[Any, bool]:
    """``(root or None, hit libxml2's depth limit)``."""
    import lxml.html
    from lxml import etree

    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True,
                                  recover=True, default_doctype=False, huge_tree=huge_tree)
    try:
        root = etree.fromstring(raw, parser)
    except (etree.ParserError, ValueError):
        root = None
    return root, any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log)


def _flatten(root: Any, max_depth: int) -> None:
    """Unwrap inline elements, and every element with children nested deeper than ``max_depth``
    (no recursion), so no element ends up deeper than ``max_depth + 1``."""
    from lxml import etree

    depth, counted, deep = 0, [], []
    for event, el in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            block = isinstance(el.tag, str) and el.tag not in INLINE  # inline tags are unwrapped anyway
            counted.append(block)
            depth += block
            if block and depth > max_depth and len(el):  # leaves keep their markup
                deep.append(el)
        else:
            depth -= counted.pop()
    for el in deep:
        el.tag = _UNWRAP
    splice(root, INLINE | {_UNWRAP})


def _strip_markup(markup: str) -> str:
    """Text of markup the parser could not use: tags and comments become spaces, in linear time
    (a regex like ``<!--.*?-->`` rescans the rest of the page for every unclosed ``<!--``)."""
    out: list[str] = []
    i, n = 0, len(markup)
    while i < n:
        lt = markup.find("<", i)
        if lt < 0:
            out.append(markup[i:])
            break
        out.append(markup[i:lt])
        close = "-->" if markup.startswith("<!--", lt) else ">"
        end = markup.find(close, lt + 1)
        if end < 0:  # unclosed comment: it runs to the end; a lone "<" is text
            if close == ">":
                out.append(markup[lt:])
            break
        out.append(" ")
        i = end + len(close)
    return "".join(out)


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


# Elements to remove are first marked with these tags, then removed by :func:`splice` in one
# pass. Removing them one by one re-copies the growing text of their parent each time, and lxml's
# strip_tags/strip_elements leave one text node per removed element, which makes every later
# ``.text`` read concatenate them pairwise: both are quadratic on pages with many siblings.
_DROP = "ragprune-drop"
_UNWRAP = "ragprune-unwrap"


def splice(root: Any, unwrap: frozenset[str] | set[str] = frozenset({_UNWRAP})) -> None:
    """Remove every ``_DROP`` element (subtree included, tail kept) and replace every element
    whose tag is in ``unwrap`` by its text and children, in linear time, leaving one text node
    per position."""
    for el in reversed(list(root.iter())):  # children before their parent
        if not any(c.tag == _DROP or c.tag in unwrap for c in el):
            continue
        kids: list[Any] = []
        texts: list[list[str]] = [[el.text or ""]]  # texts[0]: el.text; texts[i + 1]: kids[i].tail
        for c in el:
            if c.tag == _DROP:
                texts[-1].append(c.tail or "")
            elif c.tag in unwrap:
                texts[-1].append(c.text or "")
                for g in c:
                    kids.append(g)
                    texts.append([g.tail or ""])
                texts[-1].append(c.tail or "")
            else:
                kids.append(c)
                texts.append([c.tail or ""])
        el[:] = kids
        el.text = "".join(texts[0]) or None
        for k, t in zip(kids, texts[1:]):
            k.tail = "".join(t) or None


def clean_tree(root: Any) -> Any:
    """Clean a parsed tree in place (see the module docstring) and return its ``<body>``."""
    from lxml import etree

    if not isinstance(root, etree._Element):
        raise TypeError(f"clean_tree: root must be an lxml element (from parse_html), got {type(root).__name__}.")
    body = root.find("body") if root.tag == "html" else root
    if body is None:  # e.g. "<script>" alone: everything went to <head>, which holds no content
        body = etree.SubElement(root, "body")
    # 1. mark non-content elements (removed below; their tails stay)
    etree.strip_elements(body, etree.Comment, etree.ProcessingInstruction, etree.Entity, with_tail=False)
    for el in body.iter():
        if el is not body and (el.tag.lower() in DROP_TAGS or _is_hidden(el)):
            el.tag = _DROP
    # 2. attributes: only table spans survive; tag names lowercased
    for el in body.iter():
        if el.tag != el.tag.lower():  # assigning validates the name ("<p<p>" parses as tag "p<p")
            try:
                el.tag = el.tag.lower()
            except ValueError:  # a name lxml refuses ("pÀ<p"): keep only the content
                el.tag = _UNWRAP
        if el.attrib:  # (attrib.items() and deleting one by one are quadratic in the attributes)
            keep = {k: el.get(k) for k in el.attrib if k in KEEP_ATTRS}  # document order
            el.attrib.clear()
            el.attrib.update(keep)
    # 3. line breaks become newlines; elements without text go. Children come before their
    # parent in reversed document order, so one pass decides "has text" for every element from
    # its children (a recursive check per element was O(n * depth)).
    for el in body.iter("br", "hr"):
        el.tail = "\n" + (el.tail or "")
        el.tag = _DROP
    texty: set[Any] = set()
    for el in reversed(list(body.iter())):
        if el.tag == _DROP:
            continue
        if (el.text or "").strip() or any(c in texty or (c.tail or "").strip() for c in el):
            texty.add(el)
        elif el is not body:
            el.tag = _DROP
    # 4. remove all that, unwrap inline formatting, then merge single-child layout chains. Marking
    # all wrappers before unwrapping any gives the same result as unwrapping bottom-up:
    # unwrapping a single wrapper replaces one child by one child and keeps the text around it.
    splice(body, INLINE | {_UNWRAP})
    for el in body.iter(*LAYOUT):
        if (el is not body and len(el) == 1 and not (el.text or "").strip()
                and not (el[0].tail or "").strip()):
            el.tag = _UNWRAP
    splice(body)
    return body


def clean_html(html: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Parse and clean a page; returns the cleaned ``<body>`` content as an HTML string."""
    import lxml.html

    body = clean_tree(parse_html(html, max_bytes=max_bytes, owner="clean_html"))
    return lxml.html.tostring(body, encoding="unicode")
