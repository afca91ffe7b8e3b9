"""Tests of vidseq.metrics: numbers against scikit-learn, edge cases, files written, errors.

scikit-learn is used here only, as an independent reference; vidseq.metrics never imports it.
"""

from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread
from sklearn import metrics as skm

import vidseq.metrics as vm
from vidseq.errors import VidseqError
from vidseq.metrics import (
    average_views,
    classification_metrics,
    format_report,
    scalar_metrics,
    softmax,
    write_confusion_csv,
    write_json,
    write_per_class_report,
)
from vidseq.plots import plot_confusion, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def names(c: int) -> list[str]:
    return [f"class_{i}" for i in range(c)]


def scores_for(predictions: list[int], c: int, seed: int = 0) -> np.ndarray:
    """Softmax scores whose arg-max is ``predictions`` (random below the winner)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(predictions), c))
    logits[np.arange(len(predictions)), predictions] = 10.0
    return softmax(logits)


def sk_top_k(targets: np.ndarray, scores: np.ndarray, k: int) -> float:
    c = scores.shape[1]
    if c == 1:  # sklearn cannot rank a single class; every sample is trivially a hit
        return 1.0
    with warnings.catch_warnings():  # k >= C: sklearn warns that the score is trivially 1
        warnings.simplefilter("ignore")
        if c == 2:  # sklearn's binary case wants the positive class's scores only
            return skm.top_k_accuracy_score(targets, scores[:, 1], k=k, labels=[0, 1])
        return skm.top_k_accuracy_score(targets, scores, k=k, labels=np.arange(c))


def assert_matches_sklearn(scores: np.ndarray, targets: np.ndarray) -> dict:
    c = scores.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (0/0) or other warning of ours
        out = classification_metrics(scores, targets, labels=names(c))
    pred = scores.argmax(axis=1)
    in_targets = np.unique(targets)
    seen = np.union1d(targets, pred)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(targets, pred))
    assert out["top5"] == pytest.approx(sk_top_k(targets, scores, min(5, c)))
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true"
        warnings.simplefilter("ignore")
        balanced = skm.balanced_accuracy_score(targets, pred)
    assert out["mean_class_accuracy"] == pytest.approx(balanced)
    assert out["mean_class_accuracy"] == pytest.approx(
        skm.recall_score(targets, pred, labels=in_targets, average="macro", zero_division=0)
    )
    for key, fn in [
        ("macro_f1", skm.f1_score),
        ("macro_precision", skm.precision_score),
        ("macro_recall", skm.recall_score),
    ]:
        assert out[key] == pytest.approx(fn(targets, pred, labels=seen, average="macro", zero_division=0)), key
    assert out["macro_f1"] == pytest.approx(skm.f1_score(targets, pred, average="macro", zero_division=0))
    with warnings.catch_warnings():  # C = 1: "A single label was found", harmless here
        warnings.simplefilter("ignore")
        expected_confusion = skm.confusion_matrix(targets, pred, labels=np.arange(c))
    np.testing.assert_array_equal(out["confusion"], expected_confusion)
    p, r, f, s = skm.precision_recall_fscore_support(targets, pred, labels=np.arange(c), zero_division=0)
    rows = out["per_class"]
    assert [row["label"] for row in rows] == names(c)
    np.testing.assert_allclose([row["precision"] for row in rows], p)
    np.testing.assert_allclose([row["recall"] for row in rows], r)
    np.testing.assert_allclose([row["f1"] for row in rows], f)
    assert [row["support"] for row in rows] == s.tolist()
    assert out["num_samples"] == len(targets)
    return out


# -- numbers against scikit-learn --------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, seed", [(50, 3, 0), (200, 10, 1), (7, 12, 2), (30, 2, 3), (1, 4, 4), (400, 101, 5), (12, 5, 6)]
)
def test_random_scores_match_sklearn(n, c, seed):
    rng = np.random.default_rng(seed)
    scores = softmax(rng.normal(size=(n, c)) * 3)
    targets = rng.integers(0, c, size=n)
    assert_matches_sklearn(scores, targets)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 8).flatmap(
        lambda c: st.tuples(
            st.just(c), st.lists(st.tuples(st.integers(0, c - 1), st.integers(0, c - 1)), min_size=1, max_size=40)
        )
    )
)
def test_any_targets_and_predictions_match_sklearn(case):
    """Small class counts make absent and never-predicted classes common."""
    c, pairs = case
    targets, predictions = (np.array(v) for v in zip(*pairs))
    out = assert_matches_sklearn(scores_for(predictions.tolist(), c), targets)
    values = [out[k] for k in ("accuracy", "top5", "mean_class_accuracy", "macro_f1")]
    assert all(0.0 <= v <= 1.0 for v in values)


def test_class_never_predicted_and_class_absent_from_targets():
    targets = np.array([0, 0, 1, 1])
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = classification_metrics(scores_for([0, 1, 1, 1], 3), targets, labels=["a", "b", "c"])
    a, b, c = out["per_class"]
    assert c == {"label": "c", "support": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert a == {"label": "a", "support": 2, "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}
    assert b["precision"] == pytest.approx(2 / 3) and b["recall"] == 1.0
    assert out["mean_class_accuracy"] == pytest.approx(0.75)  # c has no support: left out
    assert out["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # c neither true nor predicted
    assert not any(np.isnan(v) for v in scalar_metrics(out).values())


def test_class_predicted_but_absent_from_targets_counts_in_macro_f1():
    targets = np.array([0, 0, 1])
    out = classification_metrics(scores_for([0, 2, 1], 3), targets, labels=["a", "b", "c"])
    assert out["per_class"][2] == {"label": "c", "support": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert out["mean_class_accuracy"] == pytest.approx(0.75)
    assert out["macro_recall"] == pytest.approx(0.5)


def test_two_classes_top5_is_top2():
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    out = classification_metrics(scores, np.array([1, 1, 0]), labels=["no", "yes"])
    assert out["accuracy"] == 0.0
    assert out["top5"] == 1.0


def test_single_sample():
    out = classification_metrics(np.array([[0.2, 0.5, 0.3]]), np.array([2]), labels=list("xyz"))
    assert (out["accuracy"], out["mean_class_accuracy"], out["macro_f1"]) == (0.0, 0.0, 0.0)
    assert out["top5"] == 1.0 and out["num_samples"] == 1
    assert out["confusion"].tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 0]]


def test_top_k_by_hand():
    row = np.linspace(0.1, 0.7, 7)  # class 6 best, class 0 worst
    scores = np.tile(row, (4, 1))
    out = classification_metrics(scores, np.array([0, 1, 2, 6]), labels=names(7))
    assert out["top5"] == 0.5  # classes 2..6 are the top 5
    assert out["accuracy"] == 0.25


def test_ties_go_to_the_lowest_index_and_top1_equals_accuracy():
    scores = np.zeros((7, 7))
    out = classification_metrics(scores, np.arange(7), labels=names(7))
    assert out["confusion"][:, 0].tolist() == [1] * 7  # everything predicted as class 0
    assert out["accuracy"] == pytest.approx(1 / 7)
    assert out["top5"] == pytest.approx(5 / 7)  # classes 0..4 rank first
    tied = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert vm._top_k_accuracy(tied, np.array([1, 2]), k=1) == 0.0


def test_logits_give_the_same_metrics_as_probabilities():
    rng = np.random.default_rng(7)
    logits, targets = rng.normal(size=(40, 6)), rng.integers(0, 6, size=40)
    a = scalar_metrics(classification_metrics(logits, targets, labels=names(6)))
    b = scalar_metrics(classification_metrics(softmax(logits), targets, labels=names(6)))
    assert a == b


def test_scalar_metrics_keeps_numbers_only():
    out = classification_metrics(scores_for([0, 1], 2), np.array([0, 1]), labels=["a", "b"])
    scalars = scalar_metrics(out)
    assert set(scalars) == {
        "accuracy",
        "top5",
        "mean_class_accuracy",
        "macro_f1",
        "macro_precision",
        "macro_recall",
        "num_samples",
    }
    assert all(type(v) is float for v in scalars.values())
    assert scalar_metrics({"x": np.float32(0.5), "flag": True, "name": "a"}) == {"x": 0.5}


# -- softmax and view averaging -----------------------------------------------------------


def test_softmax_is_stable_and_normalised():
    logits = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0], [0, 0, -np.inf]])
    p = softmax(logits)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], softmax(np.array([[1.0, 2.0, 0.0]]))[0])
    np.testing.assert_allclose(p[1], 1 / 3)
    assert p[2].tolist() == [0.5, 0.5, 0.0]
    assert softmax(np.zeros((2, 3), dtype=np.float32)).dtype == np.float32
    np.testing.assert_allclose(softmax(np.array([[1.0], [2.0]]), axis=0).ravel(), [1 / (1 + np.e), np.e / (1 + np.e)])


@pytest.mark.parametrize(
    "bad, match",
    [([[np.nan, 1.0]], "NaN or \\+inf"), ([[np.inf, 1.0]], "NaN or \\+inf"), ([[-np.inf, -np.inf]], "no finite value")],
)
def test_softmax_rejects_bad_logits(bad, match):
    with pytest.raises(VidseqError, match=match):
        softmax(np.array(bad))


def test_average_views_is_the_mean_of_probabilities():
    rng = np.random.default_rng(0)
    views = [softmax(rng.normal(size=(5, 4))) for _ in range(3)]
    mean = average_views(views)
    np.testing.assert_allclose(mean, np.mean(views, axis=0))
    np.testing.assert_allclose(mean.sum(axis=1), 1.0)
    np.testing.assert_allclose(average_views(views[:1]), views[0])


def test_average_views_errors():
    p = softmax(np.zeros((3, 4)))
    with pytest.raises(VidseqError, match="no views given"):
        average_views([])
    with pytest.raises(VidseqError, match="view 1 has shape \\(2, 4\\)"):
        average_views([p, p[:2]])
    with pytest.raises(VidseqError, match="view 1 is not probabilities.*softmax"):
        average_views([p, np.ones((3, 4))])


# -- input errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "probs, targets, labels, match",
    [
        (np.zeros((0, 3)), np.zeros(0, int), list("abc"), "no samples to score"),
        (np.zeros(3), np.zeros(3, int), list("abc"), "2-D \\(N, C\\) array"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), list("abc"), "targets must have shape \\(2,\\)"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), list("abc"), "integer class indices"),
        (np.zeros((2, 3)), np.array([0, 3]), list("abc"), "targets must be in \\[0, 3\\)"),
        (np.zeros((2, 3)), np.array([-1, 0]), list("abc"), "targets must be in \\[0, 3\\)"),
        (np.zeros((2, 3)), np.array([0, 1]), list("ab"), "2 labels for 3 classes"),
        (np.zeros((2, 3)), np.array([0, 1]), list("aba"), "labels must be unique"),
        (np.array([[np.nan, 0, 0], [0, 0, 0]]), np.array([0, 1]), list("abc"), "must be finite"),
    ],
)
def test_bad_inputs_raise(probs, targets, labels, match):
    with pytest.raises(VidseqError, match=match):
        classification_metrics(probs, targets, labels=labels)


# -- files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics() -> dict:
    targets = np.array([0, 0, 1, 1, 2, 2, 2])
    return classification_metrics(
        scores_for([0, 1, 1, 1, 2, 0, 2], 4), targets, labels=["walk", "run, fast", "jump", "never"]
    )


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_write_confusion_csv(tmp_path, metrics):
    path = write_confusion_csv(
        tmp_path / "deep" / "er" / "confusion.csv", metrics["confusion"], [row["label"] for row in metrics["per_class"]]
    )
    rows = read_csv(path)
    assert rows[0] == ["true\\predicted", "walk", "run, fast", "jump", "never"]
    assert [r[0] for r in rows[1:]] == ["walk", "run, fast", "jump", "never"]
    assert np.array([[int(v) for v in r[1:]] for r in rows[1:]]).tolist() == metrics["confusion"].tolist()
    assert sorted(p.name for p in path.parent.iterdir()) == ["confusion.csv"]  # no temp left
    with pytest.raises(VidseqError, match="does not match 3 labels"):
        write_confusion_csv(tmp_path / "x.csv", metrics["confusion"], ["a", "b", "c"])


def test_write_per_class_report(tmp_path, metrics):
    rows = read_csv(write_per_class_report(tmp_path / "per_class.csv", metrics))
    assert rows[0] == ["label", "support", "precision", "recall", "f1"]
    assert [r[0] for r in rows[1:]] == ["walk", "run, fast", "jump", "never", "macro"]
    for row, expected in zip(rows[1:], metrics["per_class"]):
        assert int(row[1]) == expected["support"]
        assert [float(v) for v in row[2:]] == pytest.approx([expected["precision"], expected["recall"], expected["f1"]])
    macro = rows[-1]
    assert int(macro[1]) == metrics["num_samples"] == 7
    assert float(macro[4]) == pytest.approx(metrics["macro_f1"])


def test_write_json_roundtrip_and_nan(tmp_path, metrics):
    path = write_json(tmp_path / "m" / "metrics.json", {**metrics, "nan": float("nan"), "where": tmp_path})
    back = json.loads(path.read_text())
    assert back["confusion"] == metrics["confusion"].tolist()
    assert back["per_class"] == metrics["per_class"]
    assert back["accuracy"] == metrics["accuracy"] and back["nan"] is None
    assert back["where"] == str(tmp_path)


def test_write_json_error_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "a.json", {"ok": 1})
    with pytest.raises(VidseqError, match="a set value cannot be stored in JSON"):
        write_json(path, {"bad": {1, 2}})
    assert json.loads(path.read_text()) == {"ok": 1}


def test_failed_replace_leaves_no_temporary_file(tmp_path, monkeypatch):
    def broken(src, dst):
        raise OSError("disk full")

    import vidseq.atomic

    monkeypatch.setattr(vidseq.atomic.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_json(tmp_path / "a.json", {"ok": 1})
    assert list(tmp_path.iterdir()) == []


def test_format_report(metrics):
    text = format_report(metrics)
    lines = text.splitlines()
    assert lines[0].split() == ["label", "support", "precision", "recall", "f1"]
    assert lines[1].startswith("walk ") and "run, fast" in lines[2]
    assert any(line.startswith("macro ") for line in lines)
    assert f"accuracy {metrics['accuracy']:.4f}" in lines[-1] and "top-4" in lines[-1]
    assert len({len(line) for line in lines[:5]}) == 1  # columns line up


# -- plots --------------------------------------------------------------------------------


def assert_png(path: Path, min_bytes: int = 5_000) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > min_bytes
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 200
    assert image[..., :3].std() > 0.05  # not a blank canvas
    return image


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_small(tmp_path, metrics, normalize):
    backend = matplotlib.get_backend()
    path = plot_confusion(
        tmp_path / "plots" / "cm.png",
        metrics["confusion"],
        [row["label"] for row in metrics["per_class"]],
        normalize=normalize,
        title="val" if normalize else None,
    )
    assert_png(path)
    assert matplotlib.get_backend() == backend  # the process's backend is left alone
    assert sorted(p.name for p in path.parent.iterdir()) == ["cm.png"]


@pytest.mark.parametrize("c", [40, 120])
def test_plot_confusion_many_classes(tmp_path, c):
    rng = np.random.default_rng(c)
    confusion = rng.integers(0, 5, size=(c, c)) + np.diag(rng.integers(10, 50, size=c))
    assert_png(plot_confusion(tmp_path / "cm.png", confusion, names(c)))


def test_plot_confusion_shape_error(tmp_path):
    with pytest.raises(VidseqError, match="must be \\(C, C\\)"):
        plot_confusion(tmp_path / "cm.png", np.zeros((2, 3)), ["a", "b"])


def test_plot_training_curves(tmp_path):
    history = [
        {
            "epoch": e,
            "train_loss": 2 / e,
            "val_loss": 2.2 / e,
            "train_accuracy": 1 - 1 / e,
            "val_accuracy": 0.9 - 1 / e,
            "lr": 0.1 * 0.5**e,
        }
        for e in range(1, 9)
    ]
    assert_png(plot_training_curves(tmp_path / "curves" / "training.png", history))


def test_plot_training_curves_tolerates_missing_keys(tmp_path):
    history = [
        {"epoch": 0, "train_loss": 1.0},
        {"train_loss": float("nan"), "val_loss": None},
        {"epoch": 2, "train_loss": 0.5, "val_accuracy": 0.4, "lr": 0.0},
        {},
    ]
    assert_png(plot_training_curves(tmp_path / "a.png", history))
    assert_png(plot_training_curves(tmp_path / "b.png", [{"epoch": 1}]))


def test_plot_training_curves_empty_history(tmp_path):
    with pytest.raises(VidseqError, match="history is empty"):
        plot_training_curves(tmp_path / "a.png", [])
    assert not (tmp_path / "a.png").exists()


# -- the module itself ----------------------------------------------------------------------


def test_module_imports_neither_sklearn_nor_matplotlib_at_import():
    source = Path(vm.__file__).read_text()
    imported = {
        alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any(name.startswith("sklearn") for name in imported)
    code = "import sys, vidseq.metrics; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
