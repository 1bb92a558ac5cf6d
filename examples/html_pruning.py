"""HTML pruning: keep the blocks of a web page that answer a question, within a token budget.

Run:  python examples/html_pruning.py
Needs: pip install "ragprune[html]"   (BM25 block scoring: no model, no network)
"""

from __future__ import annotations

from ragprune import HtmlPruner, count_tokens

PAGE = """<!DOCTYPE html>
<html><head><title>Bellagio (resort)</title>
<script>trackVisitor();</script><style>.nav { color: red }</style></head>
<body>
<nav><a href="/">Home</a> | <a href="/casinos">Casinos</a> | <a href="/login">Log in</a></nav>
<h1>Bellagio (resort)</h1>
<p>Bellagio is a luxury resort and casino on the Las Vegas Strip in Paradise, Nevada.
It is owned by the Blackstone Group and operated by MGM Resorts International.</p>
<h2>History</h2>
<p>Construction of Bellagio began in 1996 on the site of the demolished Dunes hotel. The resort
was built at a cost of $1.6 billion and opened on October 15, 1998.</p>
<p>The resort was inspired by the lakeside town of Bellagio in Italy, on Lake Como.</p>
<h2>Features</h2>
<p>An 8-acre artificial lake in front of the resort hosts the Fountains of Bellagio, a water show
choreographed to music. The Conservatory displays seasonal flower arrangements.</p>
<table>
  <tr><th>Year</th><th>Event</th></tr>
  <tr><td>1996</td><td>Construction begins</td></tr>
  <tr><td>1998</td><td>Resort opens</td></tr>
  <tr><td>2004</td><td>Spa tower opens</td></tr>
</table>
<h2>In popular culture</h2>
<p>The resort appears in the 2001 film Ocean's Eleven, in which a crew plans to rob its vault.</p>
<form action="/subscribe"><input name="email"><button>Subscribe</button></form>
<footer>Copyright 2024. All rights reserved. Privacy policy. Terms of use.</footer>
</body></html>"""


def main() -> None:
    query = "When was the Bellagio built?"
    pruner = HtmlPruner(scorer="bm25", max_tokens=80, max_node_words=40)
    page = pruner.prune(query, PAGE)
    print(f"page: {count_tokens(PAGE)} tokens of raw HTML -> {page.tokens} tokens kept "
          f"(budget 80, {page.compression:.0%} of the page's text removed)")
    print("kept blocks:", list(page.blocks))
    print("--- text ---")
    print(page.text)
    print("--- html ---")
    print(page.html)


if __name__ == "__main__":
    main()
