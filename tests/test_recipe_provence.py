"""The pruner recipe's two-hop training readings (models/recipes/provence.py)."""

from eval.pruning_data import LabelledPassage, PruningQuestion, join_sentences
from models.recipes.provence import _bridge_examples
from ragprune.types import Document


def _passage(pid: str, sentences: list[str], labels: tuple[int, ...]) -> LabelledPassage:
    text, spans = join_sentences(sentences)
    return LabelledPassage(Document(id=pid, title=pid, text=text), spans, labels)


def test_bridge_examples_append_the_other_gold_sentence():
    film = _passage("film", ["Alien is a 1979 film.", "Its score is by Jerry Goldsmith."], (0, 1))
    prod = _passage("producer", ["Alien was written by O'Bannon.", "Shusett was executive producer."], (0, 1))
    noise = [_passage(f"d{i}", [f"Distractor {i} text."], (0,)) for i in range(3)]
    q = PruningQuestion("Who produced the film scored by Goldsmith?", (film, noise[0], prod, *noise[1:]))

    out = _bridge_examples(q, negs=2)

    # per gold paragraph: itself + 2 distractors, read with the other gold paragraph's supporting sentence
    assert len(out) == 2 * 3
    by_title = {(e.title, e.query) for e in out}
    assert ("producer", f"{q.query} Its score is by Jerry Goldsmith.") in by_title
    assert ("film", f"{q.query} Shusett was executive producer.") in by_title
    gold = [e for e in out if e.relevant]
    assert sorted(e.title for e in gold) == ["film", "producer"]
    assert all(e.labels == (0, 1) for e in gold)
    negs = [e for e in out if not e.relevant]
    assert {e.title for e in negs} == {"d0", "d1"} and all(set(e.labels) == {0} for e in negs)
    assert all(e.source == "hotpotqa-bridge" for e in out)


def test_no_bridge_without_two_gold_paragraphs():
    only = _passage("one", ["A fact.", "Another."], (1, 0))
    q = PruningQuestion("q?", (only, _passage("d", ["x."], (0,))))
    assert _bridge_examples(q, negs=1) == []
