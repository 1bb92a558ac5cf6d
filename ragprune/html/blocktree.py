"""Block tree: cut a cleaned page into blocks of at most ``max_node_words`` words.

An element whose text fits becomes one block. A bigger element is split: its own text (text
directly under it) becomes a block and each child is visited in turn, so tables split into
rows, lists into items, sections into paragraphs. An element with no children and too much
text is split into sentence groups, so a page never collapses into a single block.

Every block keeps the path (child indices from ``<body>``) of its element, so a subset of
blocks can be rebuilt as valid HTML in document order (:func:`rebuild`). A kept table row
brings its table's header row along, so the row stays readable.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..text import split_sentences
from .clean import _DROP, splice

__all__ = ["Block", "build_blocks", "rebuild", "element_text"]

HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
BLOCK_TAGS = frozenset("p div section article main header h1 h2 h3 h4 h5 h6 ul ol li dl dt dd table thead tbody tfoot "
                       "tr caption blockquote pre figure figcaption center address details summary body".split())
_WS = re.compile(r"\s+")

Kind = Literal["element", "own_text", "piece"]


@dataclass(frozen=True)
class Block:
    """One unit of a page.

    Attributes:
        index: Position in document order.
        path: Child indices from ``<body>`` to the element.
        tag: The element's tag.
        kind: ``"element"`` (the whole element), ``"own_text"`` (only the text directly under
            the element) or ``"piece"`` (a group of sentences of an over-long text element).
        text: The block's text (what the LLM reads).
        context: Nearest preceding heading and, for table rows, the header row: extra text for
            scorers, never output.
        html: Serialised HTML of the block (used for the token budget).
        words: Whitespace words in ``text``.
    """

    index: int
    path: tuple[int, ...]
    tag: str
    kind: Kind
    text: str
    context: str
    html: str
    words: int


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def element_text(el: Any) -> str:
    """Readable text of an element: newlines between blocks, `` | `` between table cells."""
    parts: list[str] = []
    brk = "\x00"  # block break; source whitespace (newlines included) collapses to spaces

    def walk(e: Any) -> None:
        tag = e.tag if isinstance(e.tag, str) else ""
        if tag in BLOCK_TAGS:
            parts.append(brk)
        if e.text:
            parts.append(e.text)
        for c in e:
            walk(c)
            if c.tag in ("td", "th"):
                parts.append(" | ")
            if c.tail:
                parts.append(c.tail)
        if tag in BLOCK_TAGS:
            parts.append(brk)

    walk(el)
    lines = (_norm(line).strip(" |").strip() for line in "".join(parts).split(brk))
    return "\n".join(line for line in lines if line)


def _own_text(el: Any) -> str:
    return _norm(" ".join([el.text or ""] + [c.tail or "" for c in el]))


def _header_row(table: Any) -> Any | None:
    for tr in table.iter("tr"):
        return tr if tr.find("th") is not None else None
    return None


def build_blocks(body: Any, max_node_words: int = 128) -> list[Block]:
    """Cut a cleaned ``<body>`` (from :func:`~ragprune.html.clean.clean_tree`) into blocks."""
    import lxml.html
    from lxml import etree

    from .._validate import check_positive_int

    if not isinstance(body, etree._Element):
        raise TypeError(f"build_blocks: body must be an lxml element (from clean_tree(parse_html(...))), "
                        f"got {type(body).__name__}.")
    check_positive_int(max_node_words, "max_node_words", "build_blocks")
    blocks: list[Block] = []
    heading = [""]

    def add(path: tuple[int, ...], el: Any, kind: Kind, text: str, html: str, extra: str = "") -> None:
        if not text:
            return
        ctx = " ".join(x for x in (heading[0], extra) if x)
        blocks.append(Block(len(blocks), path, el.tag, kind, text, ctx, html, len(text.split())))

    tables: dict[Any, tuple[str, Any, str]] = {}  # per table, computed once: rows of a big table stay O(1)

    def table_context(el: Any) -> str:
        if el.tag != "tr":
            return ""
        table = next((a for a in el.iterancestors("table")), None)
        if table is None:
            return ""
        if table not in tables:
            hdr = _header_row(table)
            cap = table.find("caption")
            tables[table] = (element_text(cap) if cap is not None else "", hdr,
                             element_text(hdr) if hdr is not None else "")
        cap_text, hdr, hdr_text = tables[table]
        return " ".join(b for b in (cap_text, hdr_text if hdr is not el else "") if b)

    def visit(el: Any, path: tuple[int, ...]) -> None:
        text = element_text(el)
        words = len(text.split())
        if el.tag in HEADINGS:
            heading[0] = _norm(text)
        if words <= max_node_words or len(el) == 0:
            if words <= max_node_words:
                add(path, el, "element", text, lxml.html.tostring(el, encoding="unicode", with_tail=False),
                    table_context(el))
            else:  # one long text element: sentence groups of at most max_node_words words
                for piece in _pieces(text, max_node_words):
                    add(path, el, "piece", piece, f"<{el.tag}>{_escape(piece)}</{el.tag}>", table_context(el))
            return
        own = _own_text(el)
        if own:
            add(path, el, "own_text", own, f"<{el.tag}>{_escape(own)}</{el.tag}>")
        for i, child in enumerate(el):
            if isinstance(child.tag, str):
                visit(child, (*path, i))

    if len(body) == 0 and not (body.text or "").strip():
        return []
    if len(element_text(body).split()) <= max_node_words or len(body) == 0:
        visit(body, ())
    else:
        own = _own_text(body)
        if own:
            add((), body, "own_text", own, f"<p>{_escape(own)}</p>")
        for i, child in enumerate(body):
            if isinstance(child.tag, str):
                visit(child, (i,))
    return blocks


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _pieces(text: str, max_words: int) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for sent in split_sentences(text) or [text]:
        words = sent.split()
        if len(words) > max_words:  # a single sentence longer than the limit: hard word cuts
            if cur:
                out.append(" ".join(cur))
                cur, n = [], 0
            full = (len(words) - 1) // max_words * max_words  # leave the last 1..max_words words
            out.extend(" ".join(words[i : i + max_words]) for i in range(0, full, max_words))
            words = words[full:]
        if n + len(words) > max_words and cur:
            out.append(" ".join(cur))
            cur, n = [], 0
        if words:
            cur.append(" ".join(words))
            n += len(words)
    if cur:
        out.append(" ".join(cur))
    return out


def _resolve(body: Any, path: Sequence[int]) -> Any:
    el = body
    for i in path:
        el = el[i]
    return el


def _resolver(body: Any) -> Callable[[Sequence[int]], Any]:
    """:func:`_resolve` for many paths: ``el[i]`` walks libxml2's child list (O(i)), so the
    children of each visited parent are listed once and resolving every block of a page of
    600k table rows stays linear instead of quadratic."""
    children: dict[tuple[int, ...], list[Any]] = {}

    def resolve(path: Sequence[int]) -> Any:
        el = body
        for depth, i in enumerate(path):
            key = tuple(path[:depth])
            kids = children.get(key)
            if kids is None:
                kids = children[key] = list(el)
            el = kids[i]
        return el

    return resolve


def rebuild(body: Any, blocks: Iterable[Block]) -> Any:
    """A copy of ``body`` that contains only the given blocks (document order, valid HTML)."""
    out = copy.deepcopy(body)
    full: set[int] = set()
    own: set[int] = set()
    pieces: dict[int, list[str]] = {}
    elems: dict[int, Any] = {}
    for b in sorted(blocks, key=lambda b: b.index):
        el = _resolve(out, b.path)
        elems[id(el)] = el
        if b.kind == "element":
            full.add(id(el))
        elif b.kind == "own_text":
            own.add(id(el))
        else:
            pieces.setdefault(id(el), []).append(b.text)
    for key in list(full):  # table rows bring their header row
        el = elems[key]
        if el.tag == "tr" or el.tag in ("td", "th"):
            table = next(el.iterancestors("table"), None)
            hdr = _header_row(table) if table is not None else None
            if hdr is not None:
                elems[id(hdr)] = hdr  # keep the proxy alive: a freed proxy's id gets reused
                full.add(id(hdr))

    def prune(e: Any) -> bool:
        if id(e) in full:
            return True
        if id(e) in pieces:
            for c in list(e):
                e.remove(c)
            e.text = " ".join(pieces[id(e)])
            return True
        keep_own = id(e) in own
        kept_any = keep_own
        for c in list(e):
            if prune(c):
                kept_any = True
                if not keep_own:
                    c.tail = None
            elif keep_own:
                c.tag = _DROP  # removed below, keeping its tail (one lxml pass, not one per child)
            else:
                e.remove(c)
        if not keep_own:
            e.text = None
        return kept_any

    if not prune(out):
        for c in list(out):
            out.remove(c)
        out.text = None
    splice(out)
    return out
