import numpy as np
import pytest

from ragprune import Document
from ragprune.prune.baselines import BM25SentencePruner, KeepAllPruner, LeadPruner, RandomPruner

TEXT = "Scurvy comes from low vitamin intake. Sailors got it on long voyages. Limes prevented it. Cats purr."


def test_keep_all():
    p = KeepAllPruner().prune("q", [TEXT])[0]
    assert p.text == TEXT and p.compression == 0.0 and p.kept == (0, 1, 2, 3)


def test_lead_k():
    p = LeadPruner(k=2).prune("q", [TEXT])[0]
    assert p.kept == (0, 1)
    assert p.text == "Scurvy comes from low vitamin intake. Sailors got it on long voyages."
    assert 0.3 < p.compression < 0.7


def test_random_is_seeded_and_roughly_keeps_fraction():
    docs = [Document(id=str(i), text=TEXT) for i in range(50)]
    a = RandomPruner(keep=0.5, seed=1).prune("q", docs)
    assert a == RandomPruner(keep=0.5, seed=1).prune("q", docs)
    frac = np.mean([len(p.kept) / 4 for p in a])
    assert 0.35 < frac < 0.65


def test_bm25_sentences_prefers_matching_sentence():
    pr = BM25SentencePruner(threshold=0.0)
    scores = pr.score_sentences("why did sailors get scurvy on voyages", [Document(id="a", text=TEXT)],
                                [[(0, 37), (38, 69), (70, 87), (88, 98)]])[0]
    assert int(np.argmax(scores)) == 1
    assert scores[3] == 0.0


def test_empty_document_and_bad_query():
    p = LeadPruner(k=1).prune("q", [Document(id="e", text="")])[0]
    assert p.text == "" and p.kept == () and p.compression == 0.0
    with pytest.raises(ValueError, match="query is empty"):
        LeadPruner().prune("", [TEXT])


@pytest.mark.parametrize("make, exc, msg", [
    (lambda: LeadPruner(k=0), ValueError, "k must be >= 1"),
    (lambda: LeadPruner(k=None), TypeError, "k must be an int"),
    (lambda: RandomPruner(keep=1.5), ValueError, "keep must be <= 1.0"),
    (lambda: RandomPruner(keep=float("nan")), ValueError, "keep must not be NaN"),
    (lambda: RandomPruner(keep="x"), TypeError, "keep must be a number"),
    (lambda: BM25SentencePruner(threshold=float("nan")), ValueError, "threshold must not be NaN"),
    (lambda: BM25SentencePruner(threshold=None), TypeError, "threshold must be a number"),
])
def test_bad_options(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


def test_embedding_pruner(minilm):
    from ragprune.prune.baselines import EmbeddingSentencePruner

    pr = EmbeddingSentencePruner(threshold=0.0, model=minilm)
    scores = pr.score_sentences("what do cats do", [Document(id="a", text=TEXT)],
                                [[(0, 37), (38, 69), (70, 87), (88, 98)]])[0]
    assert int(np.argmax(scores)) == 3
