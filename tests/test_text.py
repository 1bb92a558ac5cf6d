import pytest

from ragprune.text import LUCENE_STOPWORDS, Analyzer, count_tokens, sentence_spans, split_sentences


def test_sentence_spans_basic_and_offsets():
    text = "Paris is big. It is in France.  Dr. Smith agrees!"
    spans = sentence_spans(text)
    sents = [text[s:e] for s, e in spans]
    assert sents[0] == "Paris is big."
    assert sents[1] == "It is in France."
    assert all(text[s:e].strip() == text[s:e] for s, e in spans)
    assert spans == sorted(spans)


def test_newlines_end_sentences_and_unicode_offsets():
    text = "Heading without stop\nSecond line 😀 with émoji. Third one."
    sents = split_sentences(text)
    assert sents[0] == "Heading without stop"
    assert sents[1:] == ["Second line 😀 with émoji.", "Third one."]


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "no punctuation at all"])
def test_sentence_spans_edge_cases(text):
    spans = sentence_spans(text)
    assert all(0 <= s < e <= len(text) for s, e in spans)
    assert "".join(text[s:e] for s, e in spans).replace(" ", "") == text.replace(" ", "").replace("\n", "")


def test_sentence_spans_rejects_non_text():
    with pytest.raises(TypeError, match="text must be a str"):
        sentence_spans(b"bytes")


def test_splitter_is_injectable():
    assert split_sentences("a|b", splitter=lambda t: [(0, 1), (2, 3)]) == ["a", "b"]


def test_count_tokens():
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("vitamin C deficiency") == 3


def test_analyzer_lowercases_stems_and_drops_stopwords():
    a = Analyzer()
    assert a("The Cats are RUNNING in the gardens") == ["cat", "run", "garden"]
    assert "the" in LUCENE_STOPWORDS
    assert Analyzer(stemmer="none", stopwords=[])("The Cats") == ["the", "cats"]


def test_analyzer_config_round_trip():
    a = Analyzer(stemmer="porter", stopwords=["foo"], min_token_length=2)
    b = Analyzer.from_config(a.config())
    assert b("foo a running dogs") == a("foo a running dogs") == ["run", "dog"]


def test_analyzer_unknown_stemmer():
    with pytest.raises(ValueError, match="unknown stemmer 'klingon'"):
        Analyzer(stemmer="klingon")
    for kwargs, exc, msg in [({"stemmer": 5}, TypeError, "stemmer must be"),
                             ({"stopwords": "the"}, TypeError, "not one string"),
                             ({"stopwords": [None]}, TypeError, "every stopword"),
                             ({"min_token_length": "x"}, ValueError, "min_token_length")]:
        with pytest.raises(exc, match=msg):
            Analyzer(**kwargs)


def test_hf_token_counter_loads_local_files_only(tmp_path):
    pytest.importorskip("transformers")
    from ragprune.models import ModelNotFoundError
    from ragprune.text import HFTokenCounter

    counter = HFTokenCounter("ragprune-provence")  # the shipped pruner's tokenizer (local)
    assert counter("How many tokens?") == 5  # how many token ##s ?
    with pytest.raises(ModelNotFoundError):
        HFTokenCounter("gpt2")  # a hub id: an error naming what is missing, not a download
    with pytest.raises(ValueError, match="no usable tokenizer files"):
        HFTokenCounter(tmp_path)
    with pytest.raises(TypeError, match="must be a transformers tokenizer"):
        HFTokenCounter(5)
