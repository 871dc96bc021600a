"""Metrics that say what they are: macro averages named, per-class scores, weakest classes, failed reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support

from mlpack_edge.builder import build
from mlpack_edge.builder.inspect_cli import inspect_command
from mlpack_edge.builder.metrics import check_gates, evaluate, format_evaluation, parse_gate
from mlpack_edge.errors import GateError

from .conftest import Project, mixed_rows, spec_text
from .test_card import parse

CLASSES = ["a", "b", "c", "d"]
# a: never right (all called b); b: 1 of 5 right; c and d: all right
Y_TRUE = np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["d"] * 5, dtype=object)
Y_PRED = np.array(["b"] * 5 + ["b"] + ["c"] * 4 + ["c"] * 5 + ["d"] * 5, dtype=object)


def _multiclass(*gates: str):  # type: ignore[no-untyped-def]
    return evaluate("multiclass", Y_TRUE, Y_PRED, None, CLASSES, [parse_gate(g, "multiclass") for g in gates])


@pytest.mark.parametrize("task", ["binary", "multiclass", "classification"])
@pytest.mark.parametrize("name", ["precision_macro", "recall_macro", "f1_macro", "roc_auc_macro"])
def test_macro_names_are_gates_for_classification(task: str, name: str) -> None:
    assert parse_gate(f"{name} >= 0.5", task).metric == name


def test_macro_names_do_not_apply_to_regression() -> None:
    with pytest.raises(ValueError) as info:
        parse_gate("recall_macro >= 0.5", "regression")
    assert str(info.value) == (
        "metric 'recall_macro' in gate 'recall_macro >= 0.5' does not apply to a regression task (metrics: mae, rmse, r2)"
    )


def test_a_misspelt_macro_name_gets_a_suggestion() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'recall_macro'\?"):
        parse_gate("recal_macro >= 0.5", "multiclass")


def test_multiclass_recall_macro_is_recall() -> None:
    ev = _multiclass("recall_macro >= 0.5", "recall >= 0.5")
    assert ev.metrics["recall"] == pytest.approx(0.55)
    assert "recall_macro" not in ev.metrics  # one number, one name in the manifest
    assert [r.value for r in ev.gates] == [ev.metrics["recall"]] * 2


def test_per_class_scores_are_sklearns() -> None:
    ev = _multiclass()
    p, r, f, n = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=CLASSES, zero_division=0.0)
    assert [c.label for c in ev.per_class] == CLASSES
    assert [(c.precision, c.recall, c.f1, c.support) for c in ev.per_class] == list(
        zip(p.tolist(), r.tolist(), f.tolist(), n.tolist())
    )


def test_failed_gate_names_the_weakest_classes() -> None:
    ev = _multiclass("recall_macro >= 0.9", "accuracy >= 0.9", "precision >= 0.1")
    with pytest.raises(GateError) as info:
        check_gates(ev)
    assert str(info.value) == (
        "2 of 3 gates failed: recall_macro >= 0.9 (measured 0.5500; macro; weakest: a 0.00, b 0.20, c 1.00, …);"
        " accuracy >= 0.9 (measured 0.5500)"
    )


def test_failed_f1_gate_ranks_by_f1_and_two_classes_need_no_ellipsis() -> None:
    ev = evaluate(
        "multiclass", Y_TRUE[:10], Y_PRED[:10], None, ["a", "b"], [parse_gate("f1 >= 0.9", "multiclass")]
    )
    with pytest.raises(GateError) as info:
        check_gates(ev, report="dist/x-1.0.0.failed.html")
    # b: precision 1/6, recall 1/5 -> f1 0.18
    assert str(info.value) == (
        "1 of 1 gate failed: f1 >= 0.9 (measured 0.0909; macro; weakest: a 0.00, b 0.18)."
        " Report: dist/x-1.0.0.failed.html"
    )
    assert info.value.report == "dist/x-1.0.0.failed.html"


def test_binary_recall_macro_is_balanced_accuracy_and_plain_recall_is_the_positive_class() -> None:
    y_true = np.array(["no"] * 6 + ["yes"] * 4, dtype=object)
    y_pred = np.array(["no"] * 5 + ["yes"] + ["yes"] * 1 + ["no"] * 3, dtype=object)
    gates = [parse_gate("recall_macro >= 0.9", "binary"), parse_gate("recall >= 0.9", "binary")]
    ev = evaluate("binary", y_true, y_pred, None, ["no", "yes"], gates)
    assert ev.metrics["recall_macro"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert ev.metrics["recall"] == pytest.approx(0.25)
    with pytest.raises(GateError) as info:
        check_gates(ev)
    assert str(info.value) == (
        "2 of 2 gates failed: recall_macro >= 0.9 (measured 0.5417; macro; weakest: yes 0.25, no 0.83);"
        " recall >= 0.9 (measured 0.2500)"
    )


def test_the_evaluate_line_says_macro() -> None:
    ev = _multiclass()
    ev.metrics["roc_auc"] = 0.875
    # precision: a 0 (never predicted), b 1/6, c 5/9, d 1; f1: a 0, b 2/11, c 5/7, d 1
    assert format_evaluation(ev, 4) == (
        "accuracy 0.5500; macro over 4 classes: precision 0.4306, recall 0.5500, f1 0.4740, roc_auc 0.8750 (one-vs-rest)"
    )


# ---------------------------------------------------------------------------- through a build

MULTICLASS = dict(task="multiclass", target="label", estimator='class = "LogisticRegression"\nparams = { max_iter = 300 }')


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, object, list[tuple[str, ...]]]:
    from mlpack_edge.builder import RecordingReporter

    project = Project(tmp_path_factory.mktemp("macro"))
    project.write(
        spec_text(**MULTICLASS, extra='[evaluate]\ngates = ["recall_macro >= 0.5", "f1 >= 0.5", "accuracy >= 0.5"]\n'),
        mixed_rows(),
    )
    rec = RecordingReporter()
    result = project.build(reporter=rec)
    return project, result, rec.events


def test_build_output_says_macro(multiclass) -> None:  # type: ignore[no-untyped-def]
    _, result, events = multiclass
    line = next(e[-1] for e in events if e[0] == "finished" and e[1] == "evaluate")
    m = result.manifest["metrics"]
    assert line == (
        f"accuracy {m['accuracy']:.4f}; macro over 3 classes: precision {m['precision']:.4f}, recall {m['recall']:.4f},"
        f" f1 {m['f1']:.4f}, roc_auc {m['roc_auc']:.4f} (one-vs-rest); 3/3 gates passed"
    )


def test_manifest_records_per_class_scores_and_the_gate_as_written(multiclass) -> None:  # type: ignore[no-untyped-def]
    _, result, _ = multiclass
    ev = result.manifest["evaluation"]
    assert [c["class"] for c in ev["per_class"]] == ["A", "B", "C"]
    assert [c["support"] for c in ev["per_class"]] == ev["class_counts"]["held_out"]
    # per-class recall = confusion diagonal / row sum
    for c, row, i in zip(ev["per_class"], ev["confusion"], range(3)):
        assert c["recall"] == pytest.approx(row[i] / sum(row), abs=1e-6)
    macro = np.mean([c["recall"] for c in ev["per_class"]])
    assert result.manifest["metrics"]["recall"] == pytest.approx(macro, abs=1e-6)
    gate = result.manifest["gates"][0]
    assert (gate["gate"], gate["metric"]) == ("recall_macro >= 0.5", "recall_macro")


def test_card_labels_macro_and_shows_the_per_class_table(multiclass) -> None:  # type: ignore[no-untyped-def]
    _, result, _ = multiclass
    root = parse((result.bundle_dir / "model_card.html").read_text())
    recall = root.find("tr", data_metric="recall")
    assert recall.text().startswith("recall (macro)") and "recall_macro >= 0.5" in recall.text()
    assert root.find("tr", data_metric="roc_auc").text().startswith("roc_auc (macro, one-vs-rest)")
    assert root.find("tr", data_metric="accuracy").text().startswith("accuracy0.")
    table = root.find("table", id="per-class-table")
    rows = [[td.text() for td in tr.find_all("td")] for tr in table.find_all("tr") if "data-class" in tr.attrs]
    expected = [
        [str(c["class"]), f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", str(c["support"])]
        for c in result.manifest["evaluation"]["per_class"]
    ]
    assert rows == expected
    assert "macro averages: the unweighted mean over classes" in root.find("section", id="metrics").text()


def test_inspect_labels_macro_and_shows_the_per_class_table(multiclass) -> None:  # type: ignore[no-untyped-def]
    _, result, _ = multiclass
    out = CliRunner().invoke(inspect_command, [str(result.bundle_dir)]).stdout
    lines = out.splitlines()
    assert re.search(r"^  recall \(macro\) +0\.\d{4}  recall_macro >= 0\.5 +pass$", out, re.M), out
    assert "  macro: the unweighted mean over classes (gates: recall or recall_macro, etc.)" in lines
    start = lines.index("Per class (held-out split)")
    assert re.fullmatch(r"  class +precision +recall +f1 +support", lines[start + 1])
    got = [line.split() for line in lines[start + 2 : start + 5]]
    expected = [
        [str(c["class"]), f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", str(c["support"])]
        for c in result.manifest["evaluation"]["per_class"]
    ]
    assert got == expected


def test_binary_card_names_the_positive_class(tmp_path: Path) -> None:
    from tests._data import binary_rows

    project = Project(tmp_path)
    project.write(spec_text(extra='[evaluate]\npositive = "yes"\ngates = ["recall_macro >= 0.5"]\n'), binary_rows())
    result = project.build()
    root = parse((result.bundle_dir / "model_card.html").read_text())
    assert root.find("tr", data_metric="recall").text().startswith("recall (class yes)")
    assert root.find("tr", data_metric="recall_macro").text().startswith("recall_macro (macro)0.")
    assert "recall_macro >= 0.5" in root.find("tr", data_metric="recall_macro").text()


def test_failed_multiclass_build_names_weakest_classes_and_writes_only_a_report(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(spec_text(**MULTICLASS, extra='[evaluate]\ngates = ["recall_macro >= 0.99"]\n'), mixed_rows())
    result = project.cli("--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    report = project.dist / "demo-1.0.0.failed.html"
    assert doc["error"]["report"] == str(report)
    assert re.fullmatch(
        r"1 of 1 gate failed: recall_macro >= 0\.99 \(measured 0\.\d{4}; macro; weakest: [ABC] \d\.\d\d, [ABC] \d\.\d\d,"
        r" [ABC] \d\.\d\d\)" + re.escape(f". Report: {report}"),
        doc["error"]["message"],
    ), doc["error"]["message"]
    assert [p.name for p in project.dist.iterdir()] == [report.name]  # no bundle, no executable
    root = parse(report.read_text())
    assert "not a bundle" in root.find("p", id="failed-build").text()
    assert root.find("span", data_chip="build").text() == "build FAILED: no bundle"
    assert root.find("span", data_chip="parity").text() == "parity not run"
    assert root.find("tr", data_metric="recall").text().endswith("recall_macro >= 0.99FAIL")
    classes = [tr.attrs["data-class"] for tr in root.find("table", id="per-class-table").find_all("tr") if "data-class" in tr.attrs]
    assert classes == ["A", "B", "C"]
    # the weakest named in the message are the lowest recalls of the report's table
    recalls = {
        tr.attrs["data-class"]: float(tr.find_all("td")[2].text())
        for tr in root.find("table", id="per-class-table").find_all("tr")
        if "data-class" in tr.attrs
    }
    named = re.findall(r"([ABC]) (\d\.\d\d)", doc["error"]["message"])
    assert [c for c, _ in named] == sorted(recalls, key=lambda c: (recalls[c], c))
    assert all(f"{recalls[c]:.2f}" == v for c, v in named)
