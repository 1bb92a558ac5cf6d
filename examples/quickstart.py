"""Quickstart: BM25 -> the shipped reranker -> the shipped pruner, on a few inline documents.

Run:  python examples/quickstart.py
Needs: pip install torch "ragprune[rerank,models]"   (no data files, no network)
"""

from __future__ import annotations

from ragprune import BM25Retriever, CrossEncoderReranker, Document, ProvencePruner

DOCS = [
    Document(id="scurvy", title="Scurvy",
             text="Scurvy is a disease resulting from a lack of vitamin C. Early symptoms include weakness, "
                  "feeling tired and sore arms and legs. Without treatment, decreased red blood cells, gum "
                  "disease and bleeding from the skin may occur. The sailors of long voyages were often "
                  "affected. Scurvy is treated with vitamin C supplements taken by mouth."),
    Document(id="vitc", title="Vitamin C",
             text="Vitamin C, also known as ascorbic acid, is a vitamin found in various foods. It is used "
                  "to prevent and treat scurvy. Citrus fruits, kiwifruit, broccoli and raw bell peppers are "
                  "good sources. The vitamin was discovered in 1912 and first made synthetically in 1933."),
    Document(id="eiffel", title="Eiffel Tower",
             text="The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company "
                  "of Gustave Eiffel and built for the 1889 World's Fair. It is 330 metres tall."),
    Document(id="rickets", title="Rickets",
             text="Rickets is a condition that results in weak or soft bones in children. The most common "
                  "cause is a lack of vitamin D. Treatment includes vitamin D and calcium."),
    Document(id="lind", title="James Lind",
             text="James Lind was a Scottish physician. In 1747 he ran one of the first controlled clinical "
                  "trials, showing that citrus fruits cured scurvy among sailors. He published A Treatise "
                  "on the Scurvy in 1753."),
]


def main() -> None:
    query = "What causes scurvy and how is it treated?"
    bm25 = BM25Retriever.from_documents(DOCS)
    hits = bm25.retrieve(query, k=4)
    print("BM25:    ", [(h.id, round(h.score, 2)) for h in hits])

    reranked = CrossEncoderReranker().rerank(query, hits, k=3)  # shipped ragprune-reranker
    print("reranked:", [(h.id, round(h.score, 2)) for h in reranked])

    pruned = ProvencePruner(threshold=0.1).prune(query, reranked)  # shipped ragprune-provence
    for p in pruned:
        print(f"[{p.id}] kept sentences {list(p.kept)} of {len(p.sentences)}, "
              f"{p.compression:.0%} of tokens removed: {p.text!r}")


if __name__ == "__main__":
    main()
