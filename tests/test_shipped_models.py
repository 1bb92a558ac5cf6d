"""The released checkpoints (the ragprune-models package) load by default and behave like rankers/pruners."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import ragprune_models  # noqa: E402  # `make install` installs the companion package (editable)

from ragprune import BM25Retriever, CrossEncoderReranker, Document, ProvencePruner  # noqa: E402

RERANKER = ragprune_models.get_model_path("ragprune-reranker-minilm-l6")
PROVENCE = ragprune_models.get_model_path("ragprune-provence-minilm-l6")
STUDENT = ragprune_models.get_model_path("ragprune-reranker-minilm-l2")


def _gold_in_top10(shared_data, ce) -> int:
    """Of the first 20 SciFact test claims, how many have a gold abstract in ``ce``'s top 10 of BM25's 20."""
    from ragprune.datasets import load_beir

    ds = load_beir(shared_data / "beir_scifact", "test")
    bm25 = BM25Retriever.from_documents(ds.corpus)
    qids = list(ds.queries)[:20]
    wins = 0
    for q in qids:
        hits = bm25.retrieve(ds.queries[q], k=20)
        gold = [h for h in hits if ds.qrels[q].get(h.id, 0) > 0]
        if not gold:
            continue
        reranked = ce.rerank(ds.queries[q], hits)
        pos = {h.id: i for i, h in enumerate(reranked)}
        wins += pos[gold[0].id] < 10
    return wins


def test_default_reranker_loads_and_ranks_gold_first(shared_data):
    ce = CrossEncoderReranker()
    assert ce.path == RERANKER
    assert _gold_in_top10(shared_data, ce) >= 12  # gold document in the reranked top 10 for most claims


def test_two_layer_student_loads_by_name_and_ranks(shared_data):
    ce = CrossEncoderReranker("ragprune-reranker-l2")
    assert ce.path == STUDENT
    assert ce.model.config.num_hidden_layers == 2
    # its card's recommended fusion weight (ragprune.json) applies
    assert CrossEncoderReranker(STUDENT, first_stage_weight="recommended").first_stage_weight > 0
    assert _gold_in_top10(shared_data, ce) >= 12


def test_default_pruner_keeps_the_answer_sentence():
    text = ("The Eiffel Tower is a wrought-iron lattice tower in Paris. It is named after the engineer "
            "Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally nicknamed "
            "La dame de fer, it was constructed as the centrepiece of the 1889 World's Fair. The weather in "
            "Paris is mild in spring.")
    pruner = ProvencePruner()
    assert pruner.path == PROVENCE
    doc = Document(id="e", title="Eiffel Tower", text=text)
    out = pruner.prune("Who designed the Eiffel Tower?", [doc])[0]
    assert 1 in out.kept
    strict = ProvencePruner(threshold=0.3).prune("Who designed the Eiffel Tower?", [doc])[0]
    assert 1 in strict.kept and 3 not in strict.kept and strict.compression > 0.1
    # the same passage, another question: the kept sentences follow the question
    _, designer, _ = pruner.sentence_scores("Who designed the Eiffel Tower?", doc)
    _, weather, _ = pruner.sentence_scores("What is the weather in Paris in spring?", doc)
    assert designer.argmax() == 1 and weather.argmax() == 3
    assert designer[1] > weather[1] + 0.2 and weather[3] > designer[3] + 0.2
    assert 3 in pruner.prune("What is the weather in Paris in spring?", [doc])[0].kept
