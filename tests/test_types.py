import pytest

from ragprune import Document, PrunedDocument, ScoredDocument
from ragprune.types import as_documents


def test_document_is_frozen_and_full_text():
    d = Document(id="a", text="body", title="T", metadata={"x": 1})
    assert d.full_text == "T body"
    assert Document(id="b", text="body").full_text == "body"
    with pytest.raises(AttributeError):
        d.text = "other"
    with pytest.raises(TypeError):
        d.metadata["x"] = 2  # read-only mapping


def test_document_metadata_is_a_copy():
    meta = {"x": 1}
    d = Document(id="a", text="t", metadata=meta)
    meta["x"] = 99
    assert d.metadata["x"] == 1


@pytest.mark.parametrize("kwargs, msg", [
    ({"id": 1, "text": "t"}, "Document.id must be a str"),
    ({"id": "a", "text": b"t"}, "Document.text must be a str"),
    ({"id": "a", "text": None}, "Document.text must be a str"),
    ({"id": "a", "text": "t", "title": 3}, "Document.title must be a str"),
    ({"id": "a", "text": "t", "metadata": 5}, "Document.metadata must be a mapping"),
])
def test_document_rejects_non_text(kwargs, msg):
    with pytest.raises(TypeError, match=msg):
        Document(**kwargs)


def test_as_documents_accepts_strings_dicts_and_documents():
    docs = as_documents(["plain", {"_id": "x", "title": "T", "text": "b"}, Document(id="y", text="c"),
                         {"_id": None, "text": "d"}])
    assert [d.id for d in docs] == ["0", "x", "y", "3"]
    assert docs[1].title == "T"


def test_as_documents_errors():
    with pytest.raises(ValueError, match="corpus is empty"):
        as_documents([])
    with pytest.raises(ValueError, match="duplicate document id 'a'"):
        as_documents([Document(id="a", text="1"), Document(id="a", text="2")])
    with pytest.raises(TypeError, match="document 1 is a int"):
        as_documents(["ok", 5])
    with pytest.raises(TypeError, match="single str"):
        as_documents("not a list")


def test_scored_and_pruned_documents():
    d = Document(id="a", text="One. Two.")
    s = ScoredDocument(d, 1.5)
    assert s.id == "a" and s.score == 1.5
    p = PrunedDocument(document=d, text="One.", kept=(0,), score=0.3, compression=0.5, sentences=("One.", "Two."))
    assert p.id == "a" and p.kept == (0,)


def test_pruned_document_spans_are_checked_offsets():
    from ragprune.prune.base import build_pruned
    from ragprune.types import PrunedDocument

    doc = Document(id="d", text="One two.  Three four. Five.")
    spans = [(0, 8), (10, 21), (22, 27)]
    p = build_pruned(doc, spans, [0, 2], 1.0)
    assert p.spans == tuple(spans) and p.sentences == ("One two.", "Three four.", "Five.")
    assert p.text == "One two. Five." and p.sentence_span(2) == (22, 27)
    with pytest.raises(ValueError, match="2 spans for 3 sentences"):
        PrunedDocument(doc, "", (), 0.0, 0.0, sentences=p.sentences, spans=((0, 8), (10, 21)))
    with pytest.raises(ValueError, match="span 1 .* does not cut sentence 1"):
        PrunedDocument(doc, "", (), 0.0, 0.0, sentences=p.sentences, spans=((0, 8), (9, 21), (22, 27)))
    with pytest.raises(ValueError, match="out of range"):
        build_pruned(doc, spans, [3], 1.0)
    with pytest.raises(IndexError, match="carries no sentence spans"):
        PrunedDocument(doc, "", (), 0.0, 0.0).sentence_span(0)
