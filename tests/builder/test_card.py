"""The model card: every section's facts, read back out of the HTML and checked against the bundle."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from mlpack_edge.builder import build
from mlpack_edge.builder.report import CARD_FILE, render_card
from mlpack_edge.monitor_agent.profile import CategoricalProfile, NumericProfile, Profile

from tests._data import mixed_rows, regression_rows

DESCRIPTION = "Sorts parts into A, B or C grade <for tests> & checks."
OWNER = "qa-team@example.org"
INTENDED_USE = "Grading in the test suite only; never on real parts."


def _spec(task: str, target: str, estimator: str, gates: str, described: bool) -> str:
    about = f'description = "{DESCRIPTION}"\nowner = "{OWNER}"\nintended_use = "{INTENDED_USE}"\n' if described else ""
    return (
        textwrap.dedent(
            f"""\
        [model]
        name = "card-{task}"
        version = "2.1.0"
        task = "{task}"
        seed = 3
        """
        )
        + about
        + textwrap.dedent(
            f"""
        [data]
        path = "data.csv"
        target = "{target}"

        [estimator]
        {estimator}

        [evaluate]
        gates = {gates}
        """
        )
    )


@dataclass
class Bundle:
    dir: Path
    manifest: dict[str, Any]
    profile: Profile
    html: str
    root: Node


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> list[Node]:
        out = [self]
        for c in self.children:
            if isinstance(c, Node):
                out += c.iter()
        return out

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag) and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]


_VOID = {"meta", "br", "link", "img", "input", "hr"}


class _TreeBuilder(HTMLParser):
    """Enough of a DOM for assertions; fails on unbalanced tags (a malformed card)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    p = _TreeBuilder()
    p.feed(html)
    p.close()
    assert p.stack == [p.root], "unclosed tags"
    return p.root


def _build(root: Path, task: str, target: str, data: str, estimator: str, gates: str, described: bool) -> Bundle:
    root.mkdir(parents=True)
    (root / "data.csv").write_text(data)
    (root / "mlpack.toml").write_text(_spec(task, target, estimator, gates, described))
    result = build(root / "mlpack.toml", root / "dist", executable=False)
    html = (result.bundle_dir / CARD_FILE).read_text("utf-8")
    profile = Profile.from_dict(json.loads((result.bundle_dir / "profile.json").read_bytes()))
    return Bundle(result.bundle_dir, result.manifest, profile, html, parse(html))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return _build(
        tmp_path_factory.mktemp("card") / "mixed",
        "multiclass",
        "label",
        mixed_rows(n=300, seed=2),
        'class = "LogisticRegression"\nparams = { max_iter = 500 }',
        '["accuracy >= 0.5", "f1 >= 0.4", "accuracy > 0.45"]',
        described=True,
    )


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return _build(
        tmp_path_factory.mktemp("card") / "regression",
        "regression",
        "y",
        regression_rows(n=200, seed=3),
        'class = "Ridge"',
        '["r2 >= 0.5"]',
        described=False,
    )


def _facts(root: Node, group: str) -> dict[str, str]:
    table = root.find("table", data_group=group)
    return {tr.attrs["data-fact"]: tr.find("td").text() for tr in table.find_all("tr")}


def _svg(root: Node, chart: str) -> Node:
    return root.find("svg", data_chart=chart)


# ---------------------------------------------------------------------------- self-contained


@pytest.mark.parametrize("which", ["mixed", "regression"])
def test_card_is_self_contained_html_without_script_or_network(which: str, request: pytest.FixtureRequest) -> None:
    b: Bundle = request.getfixturevalue(which)
    assert b.html.startswith("<!DOCTYPE html>\n") and b.manifest["files"][CARD_FILE]
    lowered = b.html.lower()
    for banned in ("<script", "<link", "<img", "<iframe", "@import", "url(", " src=", "href="):
        assert banned not in lowered, banned
    # the only URL is the SVG namespace, which names a vocabulary and is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", b.html)) == {"http://www.w3.org/2000/svg"}
    assert b.root.find("head").find("title").text() == f"Model card: {b.manifest['name']} 2.1.0"
    ids = [n.attrs["id"] for n in b.root.find_all("section")]
    errors = "confusion" if which == "mixed" else "residuals"
    assert ids == [
        "intended-use",
        "data",
        "metrics",
        errors,
        "distributions",
        "predictions",
        "parity",
        "lineage",
        "signature",
    ]


def test_card_is_a_pure_function_of_the_bundle(mixed: Bundle, regression: Bundle) -> None:
    """Rendered again from the files on disk (keys now sorted), the card is byte-identical."""
    for b in (mixed, regression):
        on_disk = json.loads((b.dir / "manifest.json").read_bytes())
        assert render_card(on_disk, b.profile) == b.html


# ---------------------------------------------------------------------------- sections


def test_intended_use_comes_from_the_spec_and_is_escaped(mixed: Bundle, regression: Bundle) -> None:
    assert _facts(mixed.root, "intended-use") == {
        "Description": DESCRIPTION,
        "Owner": OWNER,
        "Intended use": INTENDED_USE,
    }
    assert "&lt;for tests&gt; &amp; checks" in mixed.html
    section = regression.root.find("section", id="intended-use")
    assert "The spec gives no description, owner or intended use" in section.text()


def test_data_summary_matches_the_manifest_and_profile(mixed: Bundle) -> None:
    m, lin = mixed.manifest, mixed.manifest["lineage"]
    facts = _facts(mixed.root, "data")
    assert facts["rows"] == "300" == str(lin["rows"])
    assert facts["split"] == f"{lin['train_rows']} train, {lin['test_rows']} held out (stratified by class), seed 3"
    assert facts["data file"] == "data.csv" and facts["target"] == "label"
    rows = [tr for tr in mixed.root.find("table", id="features").find_all("tr") if "data-feature" in tr.attrs]
    assert [tr.attrs["data-feature"] for tr in rows] == [f["name"] for f in m["input"]["features"]]
    for tr, f in zip(rows, m["input"]["features"], strict=True):
        cells = [td.text() for td in tr.find_all("td")]
        assert cells[1] == f["kind"] and cells[2] == ("yes" if f["nullable"] else "no")
        expected = mixed.profile.feature(f["name"]).missing_rate
        assert float(tr.find("td", **{"class": "num"}).attrs["data-missing"]) == expected
        assert cells[3] == f"{expected * 100:.1f}%"
        if f["kind"] == "categorical":
            assert cells[4].startswith(", ".join(f["categories"]))
    assert mixed.profile.feature("x2").missing_rate > 0  # the data has gaps: the column is not trivially 0 %
    counts = m["evaluation"]["class_counts"]
    table = mixed.root.find("table", id="class-counts")
    shown = [[td.text() for td in tr.find_all("td")] for tr in table.find_all("tr") if "data-class" in tr.attrs]
    assert shown == [[c, str(a), str(b)] for c, a, b in zip(["A", "B", "C"], counts["train"], counts["held_out"])]
    assert sum(counts["train"]) == lin["train_rows"] and sum(counts["held_out"]) == lin["test_rows"]
    bars = _svg(mixed.root, "class-balance").find_all("rect", data_series="train")
    assert [r.find("title").text() for r in bars] == [
        f"{c}: {n / lin['train_rows'] * 100:.1f}% (train)" for c, n in zip("ABC", counts["train"])
    ]


def test_metrics_and_gates_match_the_manifest(mixed: Bundle) -> None:
    m = mixed.manifest
    rows = {
        tr.attrs["data-metric"]: tr
        for tr in mixed.root.find("table", id="metrics-table").find_all("tr")
        if "data-metric" in tr.attrs
    }
    assert sorted(rows) == sorted(m["metrics"]) == ["accuracy", "f1", "precision", "recall", "roc_auc"]
    for name, value in m["metrics"].items():
        cells = rows[name].find_all("td")
        assert float(cells[1].attrs["data-value"]) == value and cells[1].text() == f"{value:.4f}"
    accuracy = [td.text() for td in rows["accuracy"].find_all("td")]
    assert accuracy[2] == "accuracy >= 0.5accuracy > 0.45" and accuracy[3] == "pass"  # two gates, one row
    assert [td.text() for td in rows["recall"].find_all("td")][2:] == ["—", "no gate"]
    assert all(g["passed"] for g in m["gates"]) and len(m["gates"]) == 3
    assert mixed.root.find("span", data_chip="gates").text() == "gates 3/3 passed"
    assert mixed.root.find("span", data_chip="gates").attrs["class"] == "chip ok"


def test_confusion_matrix_cells_are_the_held_out_counts(mixed: Bundle) -> None:
    confusion = mixed.manifest["evaluation"]["confusion"]
    svg = _svg(mixed.root, "confusion")
    cells = [t.text() for t in svg.find_all("text") if t.attrs.get("class", "").startswith("cell")]
    assert cells == [str(n) for row in confusion for n in row]
    assert sum(map(sum, confusion)) == mixed.manifest["lineage"]["test_rows"]
    # shading follows the share of the row: a row's largest count gets its darkest cell
    rects = svg.find_all("rect")
    for i, row in enumerate(confusion):
        fills = [r.attrs["fill"] for r in rects if r.attrs["data-row"] == str(i)]
        assert min(fills) == fills[row.index(max(row))]  # darker = smaller hex in every channel


def test_feature_distributions_are_drawn_from_the_profile(mixed: Bundle) -> None:
    figures = mixed.root.find("section", id="distributions").find_all("figure")
    assert [f.attrs["data-feature"] for f in figures] == [p.name for p in mixed.profile.features]
    for fig, p in zip(figures, mixed.profile.features, strict=True):
        rects = fig.find_all("rect")
        tips = [r.find("title").text() for r in rects]
        if isinstance(p, NumericProfile):
            assert len(rects) == len(p.shares) == len(p.edges) + 1
            assert [t.rsplit(": ", 1)[1] for t in tips] == [f"{s * 100:.1f}%" for s in p.shares]
            assert tips[0].startswith(f"[{p.min:.4g}, ") and tips[-1].endswith(
                f", {p.max:.4g}): {p.shares[-1] * 100:.1f}%"
            )
        else:
            assert isinstance(p, CategoricalProfile)
            assert sorted(r.attrs["data-label"] for r in rects) == sorted(p.categories)
            assert sorted(tips) == sorted(f"{c}: {s * 100:.1f}%" for c, s in zip(p.categories, p.shares))
    caption = mixed.root.find("figure", data_feature="x2").find("figcaption").text()
    assert (
        caption == f"numeric, {mixed.manifest['lineage']['train_rows']} training rows · "
        f"{mixed.profile.feature('x2').missing_rate * 100:.1f}% missing"
    )


def test_prediction_distribution_shows_predicted_and_true_shares(mixed: Bundle) -> None:
    pred = mixed.profile.prediction
    assert isinstance(pred, CategoricalProfile) and pred.count == mixed.manifest["lineage"]["test_rows"]
    svg = _svg(mixed.root, "prediction")
    predicted = [r.find("title").text() for r in svg.find_all("rect", data_series="predicted")]
    assert predicted == [f"{c}: {s * 100:.1f}% (predicted)" for c, s in zip(pred.categories, pred.shares)]
    held_out = mixed.manifest["evaluation"]["class_counts"]["held_out"]
    true = [r.find("title").text() for r in svg.find_all("rect", data_series="true")]
    assert true == [f"{c}: {n / pred.count * 100:.1f}% (true)" for c, n in zip(pred.categories, held_out)]


def test_parity_and_lineage_facts(mixed: Bundle) -> None:
    p, lin = mixed.manifest["parity"], mixed.manifest["lineage"]
    facts = _facts(mixed.root, "parity")
    assert facts["held-out rows"] == str(p["rows"]) and facts["probe rows"].startswith(f"{p['probe_rows']} (")
    assert float(facts["max abs diff"]) == pytest.approx(p["max_abs_diff"], rel=1e-3)
    assert float(facts["tolerance"]) == p["tolerance"] and facts["result"] == "passed"
    assert facts["label agreement"] == f"{p['label_agreement'] * 100:.1f}%"
    lineage = _facts(mixed.root, "lineage")
    for key in ("spec_sha256", "data_sha256"):
        assert lineage[key.replace("_", " ")] == lin[key] and len(lin[key]) == 64
    assert lineage["seed"] == "3" and lineage["estimator"] == lin["estimator"]
    for key in ("python", "mlpack", "sklearn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas"):
        assert lineage[key] == lin[key]
    assert lineage["ONNX opset"] == "ai.onnx 18, ai.onnx.ml 3"


def test_signature_section_states_what_the_builder_was_told(mixed: Bundle) -> None:
    unsigned = mixed.root.find("p", data_fact="signature").text()
    assert unsigned.startswith("Built without a signing key: the bundle has no manifest.sig")
    signed = parse(render_card(mixed.manifest, mixed.profile, signing_key_id="0123456789abcdef"))
    text = signed.find("p", data_fact="signature").text()
    assert text.startswith("Signed at build time with Ed25519 key 0123456789abcdef: manifest.sig holds a signature")
    assert mixed.root.find("span", data_chip="signature").text() == "unsigned"
    assert signed.find("span", data_chip="signature").text() == "signed: key 0123456789abcdef"


def test_regression_card_has_residuals_target_and_no_confusion(regression: Bundle) -> None:
    ev = regression.manifest["evaluation"]
    assert "confusion" not in ev and not regression.root.find_all("svg", data_chart="confusion")
    boxes = _svg(regression.root, "residuals").find_all("rect")
    assert len(boxes) == len(ev["residual_bins"]) >= 5
    assert sum(b["count"] for b in ev["residual_bins"]) == regression.manifest["lineage"]["test_rows"]
    summary = regression.root.find("table", id="residual-summary")
    shown = {
        tr.attrs["data-stat"]: float(tr.find("td").attrs["data-value"])
        for tr in summary.find_all("tr")
        if "data-stat" in tr.attrs
    }
    assert shown == ev["residuals"] and set(shown) >= {"mean", "median", "p05", "p95", "max_abs"}
    target = regression.root.find("table", id="target")
    counts = [td.text() for td in target.find("tr", data_stat="count").find_all("td")]
    lin = regression.manifest["lineage"]
    assert counts == [str(lin["train_rows"]), str(lin["test_rows"])]
    pred = regression.profile.prediction
    assert isinstance(pred, NumericProfile)
    assert len(_svg(regression.root, "prediction").find_all("rect")) == len(pred.shares)


def test_a_signed_build_names_its_key_on_the_card(tmp_path: Path) -> None:
    from mlpack_edge.builder.signing import generate_key
    from mlpack_edge.runtime.manifest import SIGNATURE_NAME

    keys = generate_key(tmp_path / "keys", "release")
    (tmp_path / "data.csv").write_text(regression_rows(n=120, seed=5))
    (tmp_path / "mlpack.toml").write_text(_spec("regression", "y", 'class = "Ridge"', "[]", described=False))
    result = build(tmp_path / "mlpack.toml", tmp_path / "dist", executable=False, sign_key=keys.private)
    assert result.signed_by is not None
    signature = json.loads((result.bundle_dir / SIGNATURE_NAME).read_bytes())
    assert signature["key_id"] == result.signed_by
    root = parse((result.bundle_dir / CARD_FILE).read_text("utf-8"))
    assert root.find("span", data_chip="signature").text() == f"signed: key {result.signed_by}"
    assert root.find("p", data_fact="signature").text().startswith(
        f"Signed at build time with Ed25519 key {result.signed_by}: manifest.sig holds a signature"
    )
