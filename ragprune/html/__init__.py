"""HTML pages: safe cleaning, block trees and HtmlRAG-style pruning under a token budget."""

__all__ = ["HtmlPruner", "clean_html", "parse_html"]


def __getattr__(name: str):  # lazy: lxml only when used
    if name == "HtmlPruner":
        from .prune import HtmlPruner

        return HtmlPruner
    if name in ("clean_html", "parse_html"):
        from . import clean

        return getattr(clean, name)
    raise AttributeError(name)
