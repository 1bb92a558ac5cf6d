"""The 2-layer student recipe (models/recipes/student.py) end to end on a tiny random teacher."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from models.recipes import student  # noqa: E402
from ragprune import CrossEncoderReranker  # noqa: E402
from ragprune.rerank.distill import TrainingGroup, read_groups, write_groups  # noqa: E402
from tests.test_cross_encoder import make_tiny_cross_encoder  # noqa: E402

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def _cls_and_logits(folder, groups):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    net = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch.float32).eval()
    q, p = student._pairs(groups)
    enc = tok(q, p, padding=True, truncation="longest_first", max_length=64, return_tensors="pt")
    with torch.inference_mode():
        out = net(**enc, output_hidden_states=True)
    return out.hidden_states[-1][:, 0].numpy(), out.logits[:, 0].numpy()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    teacher = make_tiny_cross_encoder(root / "teacher", seed=3)
    from transformers import AutoModelForSequenceClassification

    net = AutoModelForSequenceClassification.from_pretrained(str(teacher), hidden_dropout_prob=0.0,
                                                             attention_probs_dropout_prob=0.0)
    with torch.no_grad():  # a random net scores every pair alike; a sharper head gives margins to learn
        net.classifier.weight.mul_(200.0)
    net.save_pretrained(teacher)
    assert net.config.num_hidden_layers == 2
    rng = np.random.default_rng(0)
    groups = [TrainingGroup(" ".join(rng.choice(WORDS, 3)), " ".join(rng.choice(WORDS, 12)),
                            tuple(" ".join(rng.choice(WORDS, 12)) for _ in range(3)), "toy") for _ in range(16)]
    w = root / "work"
    w.mkdir()
    write_groups(w / "groups.jsonl", groups)
    (w / "splits.json").write_text("{}")
    return {"root": root, "teacher": teacher, "work": w, "groups": groups}


def _run(work, *argv):
    return student.main([argv[0], "--work", str(work["work"]), "--teacher", str(work["teacher"]), *argv[1:]])


def test_init_keeps_the_chosen_layers(work):
    from safetensors.torch import load_file

    _run(work, "init", "--layers", "1")
    t = load_file(str(work["teacher"] / "model.safetensors"))
    s = load_file(str(work["work"] / "init" / "model.safetensors"))
    assert json.loads((work["work"] / "init" / "config.json").read_text())["num_hidden_layers"] == 1
    key = "bert.encoder.layer.{}.attention.self.query.weight"
    assert torch.equal(s[key.format(0)], t[key.format(1)])  # student layer 0 is the teacher's layer 1
    assert key.format(1) not in s
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    with pytest.raises(SystemExit, match="--layers"):
        _run(work, "init", "--layers", "2")


def test_label_train_export(work):
    _run(work, "init", "--layers", "1")
    _run(work, "label", "--batch-size", "5", "--max-length", "64")
    labelled = read_groups(work["work"] / "groups_teacher.jsonl")
    cls = np.load(work["work"] / "teacher_cls.npy")
    assert cls.shape == (16, 4, 32) and cls.dtype == np.float16
    t_cls, t_logits = _cls_and_logits(work["teacher"], work["groups"])
    # length-sorted batches give every pair the teacher's own logit and [CLS] state
    np.testing.assert_allclose([s for g in labelled for s in (g.t_pos, *g.t_negs)], t_logits, atol=1e-4)
    np.testing.assert_allclose(cls.reshape(-1, 32), t_cls, atol=2e-3)

    def objective(folder):  # what the train step minimises: Margin-MSE + 10 x [CLS]-state MSE
        s_cls, s_logits = _cls_and_logits(folder, work["groups"])
        s, t = s_logits.reshape(16, 4), t_logits.reshape(16, 4)
        margin = np.mean(((s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])) ** 2)
        return margin + 10 * np.mean((s_cls - t_cls) ** 2)

    before = objective(work["work"] / "init")
    _run(work, "train", "--max-length", "64", "--batch-size", "4", "--max-steps", "40", "--lr", "3e-3",
         "--save-every", "20")
    ck = work["work"] / "train" / "checkpoint-40"
    assert ck.is_dir() and not (work["work"] / "train" / "checkpoint-20").exists()
    assert objective(ck) < 0.7 * before  # it learned the teacher's margins and states

    dest = work["root"] / "exported"
    _run(work, "export", "--dest", str(dest))
    assert {p.name for p in (dest / "training").iterdir()} >= {"splits.json", "label.json", "init_layers.json",
                                                                "train_config.json", "train_log.jsonl"}
    scores = CrossEncoderReranker(dest).score(["alpha beta"], ["alpha beta gamma"])
    assert np.isfinite(scores).all()


def test_train_refuses_mismatched_labels(work):
    _run(work, "init", "--layers", "0")
    _run(work, "label", "--max-length", "64")
    np.save(work["work"] / "teacher_cls.npy", np.zeros((3, 4, 32), dtype=np.float16))
    with pytest.raises(SystemExit, match="rerun the label step"):
        _run(work, "train", "--max-steps", "1", "--train-dir", "mismatch")
