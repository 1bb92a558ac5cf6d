"""Recipe for the shipped reranker ``models/ragprune_models/ragprune-reranker-minilm-l6``.

Steps (each writes files under ``--work``, default ``runs/reranker``; rerunning a step
overwrites its output):

    python -m models.recipes.reranker data      # training groups + the recorded splits
    python -m models.recipes.reranker teachers  # measure candidate teachers on dev splits
    python -m models.recipes.reranker label     # teacher scores -> groups_teacher.jsonl
    python -m models.recipes.reranker train     # Margin-MSE + listwise, checkpoints + log
    python -m models.recipes.reranker export    # fp16 safetensors -> models/ragprune_models/ragprune-reranker-minilm-l6

Data (../shared/data only; evaluation splits are never used):
- SciFact claims_train with BEIR train qrels; the last 100 claims (file order) are a dev
  split. BEIR SciFact *test* is the original claims_dev and is never touched here.
- SQuAD v1.1 dev articles 0-31 for training, 32-39 held out.
- HotpotQA distractor questions 0-57 for training, 58-72 held out.

Teacher ``hybrid``: ``10 * (0.5 * cos_MiniLM(q, p) + 0.5 * BM25(q, p) / BM25_top1(q))``, the
BM25 + MiniLM fusion that scores 0.727 nDCG@10 as a retriever on SciFact test; it is cheap
enough to label on 2 CPU cores (mpnet or an LLM teacher can be swapped in through ``label``).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragprune.rerank.distill import (
    TrainConfig,
    TrainingGroup,
    read_groups,
    train_cross_encoder,
    write_groups,
)
from ragprune.types import Document

log = logging.getLogger("recipes.reranker")
# the BM25 the shipped checkpoints were trained and tuned with (the library's defaults moved later)
RECIPE_BM25 = {"method": "lucene", "k1": 0.9, "b": 0.4}

SPLITS = {
    "scifact": "claims_train.jsonl in file order: all but the last 100 train, last 100 dev (BEIR test = claims_dev, unused)",
    "squad": "dev-v1.1.json articles 0-31 train, 32-39 held out",
    "hotpotqa": "hot_dev_distractor first73 questions 0-57 train, 58-72 held out",
}


# ----------------------------------------------------------------------------- sources
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def scifact(shared: Path) -> dict[str, Any]:
    from ragprune.datasets import load_beir, read_qrels

    ds = load_beir(shared / "beir_scifact", "test")
    qrels = read_qrels(shared / "beir_scifact" / "qrels" / "train.tsv")
    claims = [json.loads(line) for line in _read(shared / "scifact_rationales" / "claims_train.jsonl").splitlines()]
    ids = [str(c["id"]) for c in claims if str(c["id"]) in qrels]
    queries = {str(c["id"]): c["claim"] for c in claims}
    return {"corpus": ds.corpus, "queries": queries, "qrels": qrels, "train": ids[:-100], "dev": ids[-100:]}


def squad(shared: Path) -> dict[str, Any]:
    data = json.loads(_read(shared / "squad_v1.1_dev" / "dev-v1.1.json"))["data"]
    paras, qs = [], []
    for a_i, art in enumerate(data):
        title = art["title"].replace("_", " ")
        for p in art["paragraphs"]:
            pid = f"{a_i}-{len(paras)}"
            paras.append(Document(id=pid, title=title, text=p["context"], metadata={"article": a_i}))
            for qa in p["qas"]:
                qs.append({"q": qa["question"], "pos": pid, "article": a_i})
    return {"corpus": paras, "questions": qs}


def hotpot(shared: Path) -> list[dict[str, Any]]:
    data = json.loads(_read(shared / "hotpotqa_dev_distractor" / "hotpot_dev_distractor_v1_first73.json"))
    out = []
    for ex in data:
        gold = {t for t, _ in ex["supporting_facts"]}
        paras = [Document(id=f"{ex['_id']}-{i}", title=t, text=" ".join(s)) for i, (t, s) in enumerate(ex["context"])]
        out.append({"q": ex["question"], "pos": [p for p in paras if p.title in gold],
                    "neg": [p for p in paras if p.title not in gold]})
    return out


# ----------------------------------------------------------------------------- data
def cmd_data(args: argparse.Namespace) -> None:
    from ragprune.retrieve.bm25 import BM25Retriever

    rng = random.Random(args.seed)
    groups: list[TrainingGroup] = []
    sf = scifact(args.shared)
    bm25 = BM25Retriever.from_documents(sf["corpus"], **RECIPE_BM25)
    by_id = {d.id: d for d in sf["corpus"]}
    for _ in range(args.scifact_repeats):
        for qid in sf["train"]:
            q = sf["queries"][qid]
            pos = [d for d in sf["qrels"][qid] if sf["qrels"][qid][d] > 0]
            cands = [h.document for h in bm25.retrieve(q, 30) if h.id not in sf["qrels"][qid]]
            for p in pos:
                if p not in by_id or len(cands) < args.negatives:
                    continue
                negs = rng.sample(cands[:20], args.negatives)
                groups.append(TrainingGroup(q, by_id[p].full_text, tuple(n.full_text for n in negs), "scifact"))
    sq = squad(args.shared)
    train_paras = [p for p in sq["corpus"] if p.metadata["article"] < 32]
    sq_bm25 = BM25Retriever.from_documents(train_paras, **RECIPE_BM25)
    by_id = {p.id: p for p in train_paras}
    questions = [x for x in sq["questions"] if x["article"] < 32]
    rng.shuffle(questions)
    for x in questions[: args.squad_questions]:
        same = [h.document for h in sq_bm25.retrieve(x["q"], 12)
                if h.id != x["pos"] and h.document.metadata["article"] == x["article"]]
        other = [p for p in rng.sample(train_paras, 8) if p.metadata["article"] != x["article"]]
        negs = (same[: args.negatives - 1] + other)[: args.negatives]
        if len(negs) == args.negatives:
            groups.append(TrainingGroup(x["q"], by_id[x["pos"]].full_text, tuple(n.full_text for n in negs), "squad"))
    for ex in hotpot(args.shared)[:58]:
        for p in ex["pos"]:
            if len(ex["neg"]) < args.negatives:
                continue
            negs = rng.sample(ex["neg"], args.negatives)
            groups.append(TrainingGroup(ex["q"], p.full_text, tuple(n.full_text for n in negs), "hotpotqa"))
    rng.shuffle(groups)
    args.work.mkdir(parents=True, exist_ok=True)
    write_groups(args.work / "groups.jsonl", groups)
    counts = {s: sum(g.source == s for g in groups) for s in ("scifact", "squad", "hotpotqa")}
    (args.work / "splits.json").write_text(json.dumps({"splits": SPLITS, "groups": counts, "seed": args.seed,
                                                       "negatives": args.negatives}, indent=1))
    print(json.dumps(counts))


# ----------------------------------------------------------------------------- teachers
class HybridTeacher:
    """Teacher scores for passages of one collection.

    ``hybrid`` = ``10 * (0.5 * cos + 0.5 * bm25 / bm25_top1)``; ``bm25`` and ``cosine`` are its
    parts (cosine of all-MiniLM-L6-v2 embeddings, ``bm25`` normalised by the query's best score
    in the collection).
    """

    def __init__(self, collection: Sequence[Document], encoder: Any, embeddings: np.ndarray | None = None) -> None:
        from ragprune.retrieve.bm25 import BM25Retriever

        self.bm25 = BM25Retriever.from_documents(collection, **RECIPE_BM25)
        self.position = {d.full_text: i for i, d in enumerate(collection)}
        self.encoder = encoder
        if embeddings is None:
            embeddings = encoder.encode([d.full_text for d in collection], batch_size=64, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=True)
        self.embeddings = embeddings

    def scores(self, query: str, passages: Sequence[str], kind: str = "hybrid") -> np.ndarray:
        idx = [self.position[p] for p in passages]
        all_bm = self.bm25.get_scores(query)
        bm = all_bm[idx] / (float(all_bm.max()) or 1.0)
        if kind == "bm25":
            return bm
        q = self.encoder.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]
        cos = self.embeddings[idx] @ q
        if kind == "cosine":
            return cos
        return 10.0 * (0.5 * cos + 0.5 * bm)


def _encoder() -> Any:
    from ragprune.retrieve.dense import load_sentence_transformer

    return load_sentence_transformer("minilm", device="cpu")


def _scifact_embeddings(corpus: Sequence[Document]) -> np.ndarray | None:
    """Reuse the SciFact MiniLM index cached by eval.beir, if present (saves ~5 min)."""
    for manifest in Path(".cache/eval").glob("beir_scifact-dense-minilm-*/manifest.json"):
        from ragprune.retrieve.dense import DenseRetriever

        r = DenseRetriever.load(manifest.parent)
        if [d.id for d in r.documents] == [d.id for d in corpus]:
            return r.index.reconstruct_n(0, r.index.ntotal)
    return None


def _teachers(args: argparse.Namespace) -> dict[str, HybridTeacher]:
    enc = _encoder()
    sf = scifact(args.shared)
    sq = squad(args.shared)
    hp = hotpot(args.shared)
    hp_docs = list({d.full_text: d for ex in hp for d in ex["pos"] + ex["neg"]}.values())
    return {"scifact": HybridTeacher(sf["corpus"], enc, _scifact_embeddings(sf["corpus"])),
            "squad": HybridTeacher(sq["corpus"], enc), "hotpotqa": HybridTeacher(hp_docs, enc)}


def cmd_teachers(args: argparse.Namespace) -> None:
    """Measure the candidate teachers on the dev splits (numbers go into the model card)."""
    from ragprune.metrics import evaluate_run

    teachers = _teachers(args)
    sf = scifact(args.shared)
    sq = squad(args.shared)
    res: dict[str, dict[str, float]] = {}
    t = teachers["scifact"]
    bm25 = t.bm25
    qrels = {q: sf["qrels"][q] for q in sf["dev"]}
    for kind in ("bm25", "cosine", "hybrid"):
        run = {}
        for q in sf["dev"]:
            cands = [h.document.full_text for h in bm25.retrieve(sf["queries"][q], 100)]
            ids = [h.id for h in bm25.retrieve(sf["queries"][q], 100)]
            s = t.scores(sf["queries"][q], cands, kind)
            run[q] = {i: float(v) for i, v in zip(ids, s)}
        res.setdefault("scifact_dev_rerank_bm25_top100_ndcg@10", {})[kind] = round(evaluate_run(qrels, run)["ndcg@10"], 4)
    held = [p for p in sq["corpus"] if p.metadata["article"] >= 32]
    qs = [x for x in sq["questions"] if x["article"] >= 32][:1000]
    ts = teachers["squad"]
    texts = [p.full_text for p in held]
    for kind in ("bm25", "cosine", "hybrid"):
        run, qrels = {}, {}
        for n, x in enumerate(qs):
            s = ts.scores(x["q"], texts, kind)
            run[str(n)] = {p.id: float(v) for p, v in zip(held, s)}
            qrels[str(n)] = {x["pos"]: 1}
        res.setdefault("squad_heldout_1000q_mrr@10", {})[kind] = round(evaluate_run(qrels, run)["mrr@10"], 4)
    (args.work / "teachers.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def cmd_label(args: argparse.Namespace) -> None:
    teachers = _teachers(args)
    groups = read_groups(args.work / "groups.jsonl")
    out = []
    for g in groups:
        s = teachers[g.source].scores(g.query, [g.pos, *g.negs], args.teacher)
        out.append(TrainingGroup(g.query, g.pos, g.negs, g.source, float(s[0]), tuple(float(x) for x in s[1:])))
    write_groups(args.work / "groups_teacher.jsonl", out)
    margins = np.array([g.t_pos - np.mean(g.t_negs) for g in out])
    print(f"labelled {len(out)} groups; teacher prefers the positive in {np.mean(margins > 0):.3f} of groups")


def cmd_train(args: argparse.Namespace) -> None:
    groups = read_groups(args.work / ("groups_teacher.jsonl" if "margin_mse" in args.loss else "groups.jsonl"))
    cfg = TrainConfig(loss=args.loss, lr=args.lr, batch_size=args.batch_size, negatives=args.negatives,
                      max_length=args.max_length, epochs=args.epochs, max_steps=args.max_steps,
                      save_every=args.save_every, seed=args.seed, threads=args.threads,
                      head_lr_mult=args.head_lr_mult)
    final = train_cross_encoder(groups, args.init, args.work / args.train_dir, cfg)
    print(f"final checkpoint: {final}")


def cmd_export(args: argparse.Namespace) -> None:
    from ragprune._train import latest_checkpoint
    from ragprune.rerank.distill import export_fp16

    ck, step = latest_checkpoint(args.work / "train")
    if ck is None:
        raise SystemExit("export: no checkpoint under runs/reranker/train; run the train step first.")
    dest = export_fp16(ck, args.dest)
    print(f"exported {ck} (step {step}) to {dest}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m models.recipes.reranker", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["data", "teachers", "label", "train", "export"])
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--work", type=Path, default=Path("runs/reranker"))
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--negatives", type=int, default=3)
    p.add_argument("--scifact-repeats", type=int, default=2)
    p.add_argument("--squad-questions", type=int, default=3000)
    p.add_argument("--teacher", choices=["hybrid", "bm25", "cosine"], default="hybrid")
    p.add_argument("--init", default="minilm", help="student initialisation (local folder or 'minilm')")
    p.add_argument("--loss", default="listwise+margin_mse")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=160)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--head-lr-mult", type=float, default=20.0,
                   help="learning-rate factor of the score head (20 for a fresh head; 1 to continue a trained one)")
    p.add_argument("--train-dir", default="train", help="folder under --work for checkpoints and the log")
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dest", type=Path, default=Path("models/ragprune_models/ragprune-reranker-minilm-l6"))
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    {"data": cmd_data, "teachers": cmd_teachers, "label": cmd_label, "train": cmd_train,
     "export": cmd_export}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
