"""The build, stage by stage: spec -> data -> train -> evaluate -> convert -> parity -> profile
-> bundle (-> executable); for a bring-your-own ONNX model, load replaces train and convert.

Nothing touches the output folder until every check has passed (except the report of a
build that failed a gate, ``<name>-<version>.failed.html``, plainly not a bundle); the bundle is written
atomically and replaces an older build of the same version in one rename. With an
executable, the bundle is first written to a private staging folder, the executable is
frozen from it, and only then is the bundle published, so a failed freeze leaves the
previous bundle and executable as they were. With a signing key (loaded before training,
so a bad key fails fast) each written bundle carries ``manifest.sig``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpack_edge._fs import atomic_write_text, canonical_json
from mlpack_edge.builder import _inputs, boosters, byo, convert, data, estimators, metrics, parity
from mlpack_edge.builder.convert import Converted
from mlpack_edge.builder.data import Dataset
from mlpack_edge.builder.estimators import UserEstimator
from mlpack_edge.builder.metrics import Evaluation
from mlpack_edge.builder.progress import NullReporter, Reporter
from mlpack_edge.builder.report import CARD_FILE, evaluation_section, render_card
from mlpack_edge.builder.signing import load_signing_key
from mlpack_edge.builder.spec import Spec, load_spec
from mlpack_edge.errors import DataError, MlpackError, PackagingError
from mlpack_edge.monitor_agent.profile import Profile, build_profile
from mlpack_edge.runtime._datetime import describe as describe_format
from mlpack_edge.runtime.golden import Golden
from mlpack_edge.runtime.manifest import MANIFEST_NAME, write_bundle

__all__ = ["BuildResult", "build"]

if TYPE_CHECKING:
    from mlpack_edge.builder._freeze import FrozenRuntime

Signer = Callable[[bytes], bytes]  # manifest.json bytes -> manifest.sig bytes

MODEL_FILE = "model.onnx"
PROFILE_FILE = "profile.json"
GOLDEN_FILE = "golden.json"
#: The parity status a failed build's report shows: the build stopped before converting.
NOT_RUN = "not run: the build stopped at a failed gate, before converting the model"


@dataclass(frozen=True)
class BuildResult:
    bundle_dir: Path
    executable: Path | None
    manifest: dict[str, Any]
    stages: list[tuple[str, float]]
    content_hash: str  # sha256 of manifest.json: the model's identity on devices
    replaced: bool  # an older build of this version was swapped out
    estimator: Any = field(default=None, repr=False, compare=False)  # the fitted scikit-learn model
    signed_by: str | None = None  # key id of the manifest.sig signature; None: unsigned
    executables: tuple[Path, ...] = ()  # one per --target, ``executable`` first

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` result."""
        m = self.manifest
        return {
            "ok": True,
            "name": m["name"],
            "version": m["version"],
            "task": m["task"],
            "bundle": str(self.bundle_dir),
            "executable": str(self.executable) if self.executable else None,
            "executables": [str(p) for p in self.executables],
            "content_hash": self.content_hash,
            "replaced": self.replaced,
            "signed_by": self.signed_by,
            "metrics": m["metrics"],
            "gates": m["gates"],
            "parity": m["parity"],
            "stages": [{"name": n, "seconds": round(s, 4)} for n, s in self.stages],
        }


@dataclass
class _Stage:
    summary: str = ""


@dataclass
class _Timer:
    reporter: Reporter
    stages: list[tuple[str, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[_Stage]:
        self.reporter.stage_started(name)
        box = _Stage()
        start = time.perf_counter()
        try:
            yield box
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, MlpackError) else type(exc).__name__
            self.reporter.stage_failed(name, time.perf_counter() - start, reason)
            raise
        seconds = time.perf_counter() - start
        self.stages.append((name, seconds))
        self.reporter.stage_finished(name, seconds, box.summary)


def build(
    spec_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    executable: bool = True,
    reporter: Reporter | None = None,
    sign_key: str | Path | None = None,
    onnx: str | Path | None = None,
    floor: str = "host",
    targets: Sequence[str] = (),
) -> BuildResult:
    """Build the bundle ``<out_dir>/<name>-<version>/`` (and the device executable) from a spec.

    ``out_dir`` defaults to ``./dist``; ``onnx`` (``--onnx``) is a bring-your-own ONNX model
    in place of ``[estimator]`` (:mod:`mlpack_edge.builder.byo`); ``floor`` (``host`` or
    ``glibc-2.31``) is where the device runtime is frozen (:mod:`mlpack_edge.builder._buildroot`);
    ``targets`` (default: this machine's) names one executable per target
    (``linux-aarch64`` is frozen in an arm64 build root under qemu). Raises an
    :class:`~mlpack_edge.errors.MlpackError` subclass for every expected failure; nothing
    is written to ``out_dir`` then, but for a failed gate's report (``<name>-<version>.failed.html``,
    its model card: not a bundle, nothing installable; a later successful build removes it).
    """
    rep = reporter if reporter is not None else NullReporter()
    out = Path(out_dir) if out_dir is not None else Path.cwd() / "dist"
    timer = _Timer(rep)

    with timer.stage("spec") as st:
        spec = load_spec(spec_path, onnx=onnx)
        user = estimators.resolve_estimator(spec) if spec.model.onnx is None else None
        n_gates = len(spec.evaluate.gates)
        st.summary = (
            f"{spec.model.name} {spec.model.version}, task {spec.model.task}, {n_gates} gate{'s' * (n_gates != 1)}"
        )
        target = out / f"{spec.model.name}-{spec.model.version}"
        _check_target(target)  # before training, not after: fail fast
        signer = load_signing_key(sign_key) if sign_key is not None else None
        sign = signer.sign_manifest if signer is not None else None
        own = byo.read(spec.model.onnx) if spec.model.onnx is not None else None
        if own is not None:
            st.summary += f"; ONNX model {spec.model.onnx.path_text} ({own.producer}, {len(own.raw) / 1024:.1f} kB)"  # type: ignore[union-attr]

    with timer.stage("data") as st:
        data_spec = spec.data if own is None else byo.data_spec(spec.data, own)
        ds = data.load_data(data_spec, spec.model.task, spec.model.seed)
        _check_positive(spec, ds)
        dropped = f" ({ds.dropped_target} without a target left out)" if ds.dropped_target else ""
        st.summary = (
            f"{ds.rows} rows{dropped}, {len(ds.features)} features; {len(ds.x_train)} train / {len(ds.x_test)} held out"
            f" ({'stratified, ' if ds.stratified else ''}seed {spec.model.seed}); task {ds.task}"
        )
    for line in _feature_lines(ds):
        rep.info(line)

    if own is None:
        assert user is not None
        done = _trained(timer, rep, spec, ds, user, target)
    else:
        done = _brought(timer, rep, spec, ds, own, target)
    ds = done.dataset
    evaluation, converted, y_pred = done.evaluation, done.converted, done.y_pred

    with timer.stage("profile") as st:
        profile = _profile(spec, ds, y_pred)
        st.summary = f"{len(profile.features)} features + predictions, {spec.drift.bins} bins"

    manifest = _manifest(spec, ds, done)
    manifest["evaluation"] = evaluation_section(ds, evaluation, y_pred)
    files = {
        MODEL_FILE: converted.model,
        PROFILE_FILE: canonical_json(profile.to_dict()).encode("utf-8"),
        GOLDEN_FILE: canonical_json(done.golden.to_dict()).encode("utf-8"),
    }

    def card(m: dict[str, Any]) -> bytes:
        return render_card(m, profile, signing_key_id=signer.key_id if signer else None).encode("utf-8")

    exes: list[Path] = []
    if executable:
        exes = _with_executable(timer, rep, target, files, manifest, sign, floor, targets, card)
    else:
        files[CARD_FILE] = card(manifest)
    with timer.stage("bundle") as st:
        _check_target(target)
        replaced = target.exists()
        _write(target, files, manifest, replace=True, sign=sign)
        _failed_path(target).unlink(missing_ok=True)  # an earlier failed attempt's report is stale now
        size = sum(len(b) for b in files.values())
        st.summary = f"{target} ({len(files) + 1} files, {size / 1024:.1f} kB)" + (
            "; replaced the previous build of this version" if replaced else ""
        )
    raw = (target / MANIFEST_NAME).read_bytes()
    return BuildResult(
        bundle_dir=target,
        executable=exes[0] if exes else None,
        executables=tuple(exes),
        manifest=json.loads(raw),
        stages=timer.stages,
        content_hash=hashlib.sha256(raw).hexdigest(),
        replaced=replaced,
        signed_by=signer.key_id if signer is not None else None,
        estimator=done.estimator,
    )


@dataclass(frozen=True)
class _Done:
    """A model ready to bundle, whichever way it came: trained here or brought as ONNX."""

    dataset: Dataset
    layout: str
    converted: Converted
    evaluation: Evaluation
    y_pred: Any
    parity: dict[str, Any]
    golden: Golden
    lineage: dict[str, Any]
    estimator: Any = None  # the fitted scikit-learn model (trained builds)


def _trained(timer: _Timer, rep: Reporter, spec: Spec, ds: Dataset, user: UserEstimator, target: Path) -> _Done:
    """train -> evaluate -> convert -> parity, for a spec with [estimator]."""
    with timer.stage("train") as st:
        model = estimators.fit(
            estimators.assemble(user, ds, spec.preprocess, spec.model.seed, spec.path), ds, spec.path
        )
        st.summary = f"{estimators.describe(model.estimator)} ({model.layout} layout)"
    for w in model.warnings:
        rep.info(f"warning: {w}")

    with timer.stage("evaluate") as st:
        x_test = _inputs.model_input(ds.x_test, model.layout)
        y_pred = model.estimator.predict(x_test)
        proba = None if ds.task == "regression" else model.estimator.predict_proba(x_test)
        evaluation = metrics.evaluate(
            ds.task, ds.y_test, y_pred, proba, ds.classes, spec.evaluate.gates, spec.evaluate.positive
        )
        st.summary = (
            f"{metrics.format_evaluation(evaluation, len(ds.classes))}; {metrics.gate_summary(evaluation.gates)}"
        )
        if evaluation.failed:
            described = {"estimator": estimators.describe(model.estimator)}
            report = _failed_report(target, spec, ds, evaluation, y_pred, model.layout, described, rep)
            metrics.check_gates(evaluation, report)

    with timer.stage("convert") as st:
        converted = convert.convert(model, ds, spec.model.name)
        st.summary = f"ONNX {len(converted.model) / 1024:.1f} kB, opset {_opset(converted)}"

    with timer.stage("parity") as st:
        proof = parity.prove(model, converted, ds, spec.parity.tolerance, spec.model.seed)
        st.summary = proof.result.describe()
    lineage: dict[str, Any] = {"estimator": estimators.describe(model.estimator), **boosters.versions(model.estimator)}
    if spec.estimator.factory is not None:
        lineage["factory"] = spec.estimator.factory
        lineage["factory_sha256"] = user.factory_sha256
    return _Done(
        ds, model.layout, converted, evaluation, y_pred, proof.result.to_dict(), proof.golden, lineage, model.estimator
    )


def _brought(timer: _Timer, rep: Reporter, spec: Spec, ds: Dataset, own: byo.OnnxModel, target: Path) -> _Done:
    """load -> evaluate -> parity, for a spec with [model] onnx (no training)."""
    onnx_spec = spec.model.onnx
    assert onnx_spec is not None
    where = onnx_spec.path_text
    with timer.stage("load") as st:
        bound = byo.bind(own, ds, onnx_spec)
        ds = bound.dataset
        added = f"; appended {', '.join(bound.added)}" if bound.added else ""
        st.summary = (
            f"ONNX {len(bound.converted.model) / 1024:.1f} kB, opset {_opset(bound.converted)}"
            f" ({bound.layout} layout){added}"
        )

    with timer.stage("evaluate") as st:
        held = byo.run(bound, ds.x_test, where)
        byo.check_probabilities(held, bound, where, onnx_spec)
        byo.check_values(held, bound, where)
        y_pred = held.values if ds.task == "regression" else held.labels
        evaluation = metrics.evaluate(
            ds.task, ds.y_test, y_pred, held.probabilities, ds.classes, spec.evaluate.gates, spec.evaluate.positive
        )
        st.summary = (
            f"{metrics.format_evaluation(evaluation, len(ds.classes))}; {metrics.gate_summary(evaluation.gates)}"
        )
        if evaluation.failed:
            described = {"estimator": f"ONNX model ({own.producer})"}
            report = _failed_report(target, spec, ds, evaluation, y_pred, bound.layout, described, rep)
            metrics.check_gates(evaluation, report)

    with timer.stage("parity") as st:
        lineage: dict[str, Any] = {
            "estimator": f"ONNX model ({own.producer})",
            "onnx_file": Path(onnx_spec.path_text).name,
            "onnx_sha256": own.sha256,
        }
        if onnx_spec.reference_outputs is not None:
            assert onnx_spec.reference_text is not None
            frame = byo.all_rows(ds, spec.data)
            expected = byo.read_reference(onnx_spec.reference_outputs, ds, len(frame))
            got = byo.run(bound, frame, where)
            result = byo.prove(got, expected, frame, ds, spec.parity.tolerance, onnx_spec.reference_text)
            section = {**result.to_dict(), "against": "reference outputs", "reference": onnx_spec.reference_text}
            lineage["reference_outputs"] = onnx_spec.reference_text
            lineage["reference_sha256"] = hashlib.sha256(onnx_spec.reference_outputs.read_bytes()).hexdigest()
            missing = f"{result.missing_rows} with missing values; " if result.missing_rows else ""
            st.summary = (
                f"{result.rows} data rows agree with {onnx_spec.reference_text}"
                f" ({missing}max abs diff {result.max_abs_diff:.2e} <= {result.tolerance:g})"
            )
        else:
            section = byo.not_proven(spec.parity.tolerance)
            if ds.task != "regression" and held.labels is not None and held.probabilities is not None:
                # a fact of the graph alone (no reference needed), on the held-out rows it answered
                section["label_is_argmax"] = parity.label_is_argmax(held.labels, held.probabilities, ds.classes)
            st.summary = f"{byo.NOT_PROVEN}: set [model] reference_outputs to prove it"
        golden = byo.golden(bound, spec.parity.tolerance, where)
    return _Done(ds, bound.layout, bound.converted, evaluation, y_pred, section, golden, lineage)


def _opset(converted: Converted) -> str:
    return ", ".join(f"{domain or 'ai.onnx'} {v}" for domain, v in sorted(converted.opset.items()))


def _with_executable(
    timer: _Timer,
    rep: Reporter,
    target: Path,
    files: dict[str, bytes],
    manifest: dict[str, Any],
    sign: Signer | None,
    floor: str = "host",
    targets: Sequence[str] = (),
    card: Callable[[dict[str, Any]], bytes] | None = None,
) -> list[Path]:
    """Freeze the executables (one per target) from a staged copy of the bundle, next to where it will live.

    The runtimes are frozen first (all in the first ``executable`` stage): each one's glibc
    floor is a fact of the bundle, so it goes into ``manifest["targets"]`` (signed) and the
    model card (``card`` renders it into ``files``) before the bundle is written.
    """
    from mlpack_edge.builder.executable import build_executable, device_runtime

    devices = list(dict.fromkeys(targets or [None]))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    except OSError as exc:
        raise PackagingError(f"{target.parent}: cannot create the output folder ({exc.strerror or exc})") from None
    try:
        exes: list[Path] = []
        runtimes: list[FrozenRuntime] = []
        staged = staging / target.name
        for i, device in enumerate(devices):
            with timer.stage("executable" if i == 0 else f"executable {device}") as st:
                if i == 0:
                    runtimes = [device_runtime(None, rep, floor=floor, target=d) for d in devices]
                    manifest["targets"] = targets_section(runtimes)
                    if card is not None:
                        files[CARD_FILE] = card(manifest)
                    _write(staged, files, manifest, replace=False, sign=sign)
                exe = build_executable(staged, target.parent, rep, floor=floor, target=device, runtime=runtimes[i])
                st.summary = f"{exe} ({exe.stat().st_size / 1e6:.1f} MB)"
            exes.append(exe)
        return exes
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def targets_section(runtimes: Sequence[FrozenRuntime]) -> dict[str, dict[str, str | None]]:
    """``{"linux-x86_64": {"glibc_floor": "2.30"}}``: what each executable of the bundle needs on a device."""
    return {rt.target: {"glibc_floor": rt.glibc_floor} for rt in sorted(runtimes, key=lambda rt: rt.target)}


def _write(
    target: Path, files: dict[str, bytes], manifest: dict[str, Any], replace: bool, sign: Signer | None = None
) -> Path:
    try:
        return write_bundle(target, files, manifest, replace=replace, sign=sign)
    except OSError as exc:
        raise PackagingError(f"{target}: cannot write the bundle ({exc.strerror or exc})") from None


def _check_target(target: Path) -> None:
    """Refuse to replace a folder that is not an mlpack bundle (someone's data)."""
    if target.exists() and not (target / MANIFEST_NAME).is_file():
        raise PackagingError(f"{target} exists and is not an mlpack bundle; move it away or choose another --out")


def _check_positive(spec: Spec, ds: Dataset) -> None:
    pos = spec.evaluate.positive
    if pos is None:
        return
    if ds.task != "binary":
        raise DataError(
            f"{spec.path}: evaluate.positive applies to binary tasks, but the target has {len(ds.classes)} classes"
        )
    if pos not in ds.classes:
        raise DataError(
            f"{spec.path}: evaluate.positive {pos!r} is not a class of target '{ds.target}'"
            f" (classes: {', '.join(repr(c) for c in ds.classes)})"
        )


def _feature_lines(ds: Dataset) -> list[str]:
    """The inferred-schema summary (and what was left out), for the progress output."""

    def names(items: tuple[str, ...]) -> str:
        shown = ", ".join(items[:6])
        return shown + (f", … (+{len(items) - 6})" if len(items) > 6 else "")

    how = "inferred" if ds.inferred else "declared"
    lines = [
        f"datetime {d['name']} ({describe_format(d['format'])}) -> numeric "
        + ", ".join(f"{d['name']}_{p}" for p in d["parts"])
        for d in ds.datetimes
    ]
    if ds.numeric:
        lines.append(f"{len(ds.numeric)} numeric ({how}): {names(ds.numeric)}")
    if ds.categorical:
        lines.append(f"{len(ds.categorical)} categorical ({how}): {names(ds.categorical)}")
    nullable = tuple(f.name for f in ds.features if f.nullable)
    if nullable:
        lines.append(f"nullable: {names(nullable)}")
    if ds.ignored:
        lines.append(f"not used: {names(ds.ignored)}")
    return lines


def _profile(spec: Spec, ds: Dataset, y_pred: Any) -> Profile:
    """The drift reference: training split features, held-out predictions."""
    prediction: tuple[Any, Any, Any]
    if ds.task == "regression":
        prediction = ("numeric", y_pred, None)
    else:
        prediction = ("categorical", [str(v) for v in y_pred], [str(c) for c in ds.classes])
    return build_profile(
        [(f.name, f.kind, ds.x_train[f.name].to_numpy()) for f in ds.features], prediction, bins=spec.drift.bins
    )


def _failed_path(target: Path) -> Path:
    """Where a build that failed a gate leaves its report: beside the bundle, plainly not one."""
    return target.parent / f"{target.name}.failed.html"


def _failed_report(
    target: Path,
    spec: Spec,
    ds: Dataset,
    evaluation: Evaluation,
    y_pred: Any,
    layout: str,
    described: dict[str, Any],
    rep: Reporter,
) -> str | None:
    """Write the model card of a build that failed a gate (``dist/<name>-<version>.failed.html``).

    The user sees why (metrics, per-class scores, confusion matrix, data) without a
    bundle: no manifest, no model, nothing a device could install. Returns its path, or
    ``None`` (with a warning) when it cannot be written: the gate failure stays the error.
    """
    m = spec.model
    manifest: dict[str, Any] = {
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "owner": m.owner,
        "intended_use": m.intended_use,
        "task": ds.task,
        "input": _input(ds, layout),
        "output": {} if ds.task == "regression" else {"classes": list(ds.classes)},
        "metrics": {k: (None if math.isnan(v) else v) for k, v in evaluation.metrics.items()},
        "gates": [_finite(r.to_dict()) for r in evaluation.gates],
        "parity": {"proven": False, "status": NOT_RUN, "tolerance": spec.parity.tolerance},
        "lineage": _lineage(spec, ds, described),
        "evaluation": evaluation_section(ds, evaluation, y_pred),
    }
    path = _failed_path(target)
    try:
        html = render_card(manifest, _profile(spec, ds, y_pred), failed=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, html)
    except OSError as exc:
        rep.info(f"warning: cannot write the report of the failed build to {path} ({exc.strerror or exc})")
        return None
    return str(path)


def _input(ds: Dataset, layout: str) -> dict[str, Any]:
    section: dict[str, Any] = {
        "layout": layout,
        "missing": list(ds.missing),  # the device reads these cells as missing, as the build did
        "features": [f.to_dict() for f in ds.features],
    }
    if ds.datetimes:  # the device derives these features' parts itself (runtime/_datetime.py)
        section["datetime"] = [dict(d) for d in ds.datetimes]
    return section


def _lineage(spec: Spec, ds: Dataset, extra: dict[str, Any]) -> dict[str, Any]:
    m = spec.model
    lineage: dict[str, Any] = {
        "spec_sha256": spec.sha256,
        "data_sha256": ds.sha256,
        "data_path": spec.data.path_text,
        "target": ds.target,
        "rows": ds.rows,
        "train_rows": len(ds.x_train),
        "test_rows": len(ds.x_test),
        "seed": m.seed,
        **extra,
        **_versions(),
    }
    if ds.dropped_target:
        lineage["dropped_missing_target"] = ds.dropped_target
    if ds.task == "binary":
        lineage["positive_class"] = spec.evaluate.positive if spec.evaluate.positive is not None else ds.classes[1]
    return lineage


def _manifest(spec: Spec, ds: Dataset, done: _Done) -> dict[str, Any]:
    output: dict[str, Any] = dict(done.converted.output)
    if ds.task != "regression":
        output["classes"] = list(ds.classes)
    m = spec.model
    lineage = _lineage(spec, ds, done.lineage)
    return {
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "owner": m.owner,
        "intended_use": m.intended_use,
        "task": ds.task,
        "input": _input(ds, done.layout),
        "output": output,
        "onnx": done.converted.manifest_section(MODEL_FILE),
        "metrics": {k: (None if math.isnan(v) else v) for k, v in done.evaluation.metrics.items()},
        "gates": [_finite(r.to_dict()) for r in done.evaluation.gates],
        "parity": done.parity,
        "drift": spec.drift.manifest_section(),
        "lineage": lineage,
    }


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import pandas
    import skl2onnx
    import sklearn

    import mlpack_edge

    return {
        "python": platform.python_version(),
        "mlpack": mlpack_edge.__version__,
        "sklearn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
    }
