import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ragprune.rerank.distill import (  # noqa: E402
    TrainConfig,
    TrainingGroup,
    export_fp16,
    group_loss,
    read_groups,
    train_cross_encoder,
    write_groups,
)
from tests.test_cross_encoder import make_tiny_cross_encoder  # noqa: E402


def _groups(n=8, teacher=True):
    return [TrainingGroup(query=f"question {i}", pos=f"answer passage {i}", negs=(f"other {i}", f"noise {i}"),
                          source="t", t_pos=5.0 if teacher else None, t_negs=(1.0, 2.0) if teacher else None)
            for i in range(n)]


def test_margin_mse_matches_definition():
    cfg = TrainConfig(loss="margin_mse")
    scores = torch.tensor([[3.0, 1.0, 0.0]])
    g = [TrainingGroup("q", "p", ("n1", "n2"), t_pos=4.0, t_negs=(1.0, 3.0))]
    # student margins (2, 3), teacher margins (3, 1): ((2-3)^2 + (3-1)^2) / 2 = 2.5
    assert group_loss(scores, g, cfg).item() == pytest.approx(2.5)


def test_listwise_and_pointwise_losses():
    s = torch.tensor([[2.0, 0.0, 0.0]])
    g = [TrainingGroup("q", "p", ("a", "b"))]
    import math

    assert group_loss(s, g, TrainConfig(loss="listwise")).item() == pytest.approx(-math.log(math.e**2 / (math.e**2 + 2)))
    bce = (math.log(1 + math.exp(-2.0)) + 2 * math.log(2)) / 3
    assert group_loss(s, g, TrainConfig(loss="pointwise")).item() == pytest.approx(bce, rel=1e-5)


def test_margin_mse_without_teacher_scores_fails_clearly():
    with pytest.raises(ValueError, match="run the teacher labelling step"):
        group_loss(torch.zeros(1, 3), [TrainingGroup("q", "p", ("a", "b"))], TrainConfig(loss="margin_mse"))


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        TrainConfig(loss="hinge")


def test_groups_round_trip_and_errors(tmp_path):
    write_groups(tmp_path / "g.jsonl", _groups(3))
    assert read_groups(tmp_path / "g.jsonl") == _groups(3)
    (tmp_path / "bad.jsonl").write_text('{"query": "q"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1 is not a valid training group"):
        read_groups(tmp_path / "bad.jsonl")


def test_smoke_training_resume_and_export(tmp_path):
    """A few steps on a tiny random model: loss is finite, checkpoints resume, export loads."""
    from ragprune import CrossEncoderReranker

    init = make_tiny_cross_encoder(tmp_path / "init")
    cfg = TrainConfig(loss="listwise+margin_mse", batch_size=4, negatives=2, max_length=32, max_steps=4,
                      save_every=2, lr=1e-3, threads=1)
    final = train_cross_encoder(_groups(), init, tmp_path / "run", cfg, progress=False)
    assert final.name == "checkpoint-4" and (final / "model.safetensors").is_file()
    logged = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 4 and logged[-1]["loss"] == logged[-1]["loss"]  # not NaN
    # resume: asking for 6 steps continues from checkpoint-4
    cfg6 = TrainConfig(**{**{k: getattr(cfg, k) for k in ("loss", "batch_size", "negatives", "max_length",
                                                          "save_every", "lr", "threads")}, "max_steps": 6})
    assert train_cross_encoder(_groups(), init, tmp_path / "run", cfg6, progress=False).name == "checkpoint-6"
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-6"]
    out = export_fp16(tmp_path / "run" / "checkpoint-6", tmp_path / "shipped")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())  # noqa: SIM118
    ce = CrossEncoderReranker(out)
    assert len(ce.rerank("question 1", ["answer passage 1", "noise"])) == 2


def test_training_rejects_too_little_data(tmp_path):
    init = make_tiny_cross_encoder(tmp_path / "init")
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_cross_encoder(_groups(2), init, tmp_path / "run", TrainConfig(batch_size=4, negatives=2), progress=False)


def test_teacher_states_must_have_one_row_per_group(tmp_path):
    import numpy as np

    init = make_tiny_cross_encoder(tmp_path / "init")
    cfg = TrainConfig(loss="margin_mse", batch_size=4, negatives=2, max_length=32, max_steps=1)
    with pytest.raises(ValueError, match=r"teacher_states has shape \(3, 3, 32\)"):
        train_cross_encoder(_groups(), init, tmp_path / "run", cfg, progress=False,
                            teacher_states=np.zeros((3, 3, 32)))
