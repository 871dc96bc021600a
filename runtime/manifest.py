"""The bundle manifest: what a model is, what it accepts, how it was proven, what files it has.

The builder writes it with :func:`write_bundle`; the device reads it with
:func:`read_manifest` and proves the files intact with :func:`verify_files`;
:meth:`mlpack_edge.runtime.bundle.Bundle.verify` checks the signature (``manifest.sig``)
before calling it.

Format ``mlpack.manifest/1`` (``manifest.json``, canonical JSON, no wall-clock time)::

    {
      "format": "mlpack.manifest/1",
      "name": "breast-cancer", "version": "1.0.0",
      "description": "...", "owner": "...", "intended_use": "...",
      "task": "binary" | "multiclass" | "regression",
      "input": {
        "layout": "matrix" | "columns",      # one float32 [N, F] tensor, or one [N, 1] per feature
        "missing": ["", "NA", "nan", ...],   # text cells read as missing (data.missing); optional
        "datetime": [{"name": "when", "format": "iso", "parts": ["year", "hour"],
                      "nullable": false}],   # optional: columns the device takes as dates and
                                             # turns into the numeric features when_year, when_hour
        "features": [
          {"name": "age", "kind": "numeric", "nullable": false},
          {"name": "colour", "kind": "categorical", "nullable": true,
           "categories": ["blue", "red"], "unseen": "error" | "missing"}
        ]
      },
      "output": {"classes": [0, 1],           # classification only; JSON ints or strings
                 "label": "label", "probabilities": "probabilities"}   # ONNX output names
              | {"value": "variable"},                                 # regression
      "onnx": {"file": "model.onnx", "opset": {"": 18, "ai.onnx.ml": 3},
               "inputs": [{"name": "X", "dtype": "float32", "width": 30}]},
      "metrics": {"accuracy": 0.97, ...},
      "gates": [{"gate": "precision >= 0.9", "metric": "precision", "op": ">=",
                 "threshold": 0.9, "value": 0.95, "passed": true}],
      "parity": {"rows": 114, "probe_rows": 40, "label_agreement": 1.0,
                 "max_abs_diff": 1.2e-07, "tolerance": 0.0001, "passed": true,
                 "label_is_argmax": true},   # classification: every compared row's label was
                                             # its top class (a recorder may take it from the
                                             # probabilities; older bundles lack it)
      "drift": {"psi_warn": 0.1, "psi_drift": 0.2},
      "lineage": {"spec_sha256": "...", "data_sha256": "...", "seed": 0, "estimator": "...",
                  "python": "3.11.7", "sklearn": "...", "skl2onnx": "...", "onnx": "...",
                  "onnxruntime": "...", "numpy": "...", "mlpack": "..."},
      "evaluation": {"stratified": true,     # held-out errors, for the model card and inspect
                     "class_counts": {"train": [...], "held_out": [...]},   # per output.classes
                     "confusion": [[...], ...],                           # rows: true class
                     "per_class": [{"class", "precision", "recall", "f1", "support"}, ...]}
                  | {"stratified": false, "target": {"train": {...}, "held_out": {...}},
                     "residuals": {"mean": ..., "p05": ..., ...},
                     "residual_bins": [{"count", "pred_min", "pred_max", "p05", "p25",
                                        "median", "p75", "p95"}, ...]},   # regression
      "files": {"model.onnx": "<sha256>", "profile.json": "<sha256>",
                "model_card.html": "<sha256>", ...}
    }

``input.missing`` lists the text the build read as missing (``[data] missing``), so the
device reads the same cells as missing (a cell matches when its text, stripped of
surrounding blanks, is in the list). Bundles built before it lack it and mean ``[""]``.

``evaluation`` is optional (bundles built before it lack it; the device never reads it);
:mod:`mlpack_edge.builder._card_eval` writes it.

The *content hash* of a bundle is the sha256 of ``manifest.json``'s bytes: it covers
every file through ``files``, and is what telemetry uses to name the model. A signed
bundle also holds ``manifest.sig`` (an Ed25519 signature over those bytes, format
``mlpack.signature/1``, see :mod:`mlpack_edge.runtime._trust`); it is not listed in
``files`` (it cannot hash itself) and does not change the content hash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from mlpack_edge._record import Frozen
from mlpack_edge._digest import sha256_hex
from mlpack_edge.errors import BundleError, IntegrityError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "Feature",
    "Manifest",
    "sha256_bytes",
    "write_bundle",
    "read_manifest",
    "verify_files",
    "check_file",
]

MANIFEST_FORMAT = "mlpack.manifest/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
_TASKS = ("binary", "multiclass", "regression")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def sha256_bytes(data: bytes) -> str:
    return sha256_hex(data)  # OpenSSL only for large files: see mlpack_edge._digest


class Feature(Frozen):
    """One model input as the manifest declares it."""

    __slots__ = ("name", "kind", "nullable", "categories", "unseen")
    _fields = __slots__
    name: str
    kind: Literal["numeric", "categorical"]
    nullable: bool
    categories: tuple[str, ...]
    unseen: Literal["error", "missing"]

    def __init__(
        self,
        name: str,
        kind: Literal["numeric", "categorical"],
        nullable: bool,
        categories: tuple[str, ...] = (),
        unseen: Literal["error", "missing"] = "error",
    ) -> None:
        s = object.__setattr__
        s(self, "name", name)
        s(self, "kind", kind)
        s(self, "nullable", nullable)
        s(self, "categories", categories)
        s(self, "unseen", unseen)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "nullable": self.nullable}
        if self.kind == "categorical":
            d["categories"] = list(self.categories)
            d["unseen"] = self.unseen
        return d


class Manifest(Frozen):
    """A checked, typed view of ``manifest.json``; ``data`` keeps every field as written."""

    __slots__ = ("data", "raw", "features")
    _fields = __slots__
    data: dict[str, Any]
    raw: bytes
    features: tuple[Feature, ...]

    def __init__(self, data: dict[str, Any], raw: bytes, features: tuple[Feature, ...]) -> None:
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "features", features)

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def task(self) -> str:
        return str(self.data["task"])

    @property
    def layout(self) -> str:
        return str(self.data["input"]["layout"])

    @property
    def classes(self) -> list[Any]:
        return list(self.data["output"].get("classes", []))

    @property
    def missing(self) -> tuple[str, ...]:
        """Text read as missing, as the build read it (``input.missing``; ``("",)`` for older bundles)."""
        return tuple(self.data["input"].get("missing", [""]))

    @property
    def datetimes(self) -> tuple[dict[str, Any], ...]:
        """Datetime columns whose parts are features (``input.datetime``; see :mod:`._datetime`)."""
        return tuple(self.data["input"].get("datetime", ()))

    @property
    def files(self) -> dict[str, str]:
        return dict(self.data["files"])

    @property
    def content_hash(self) -> str:
        return sha256_bytes(self.raw)

    @classmethod
    def parse(cls, raw: bytes, source: str = MANIFEST_NAME) -> Manifest:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{source}: not valid JSON ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(data, dict):
            raise BundleError(f"{source}: expected a JSON object")
        if data.get("format") != MANIFEST_FORMAT:
            raise BundleError(
                f"{source}: unsupported format {data.get('format')!r}, expected {MANIFEST_FORMAT!r}"
            )
        for key in ("name", "version", "task", "input", "output", "onnx", "files"):
            if key not in data:
                raise BundleError(f"{source}: missing field {key!r}")
        if data["task"] not in _TASKS:
            raise BundleError(f"{source}: task must be one of {', '.join(_TASKS)}, got {data['task']!r}")
        inp = data["input"]
        if not isinstance(inp, dict) or inp.get("layout") not in ("matrix", "columns"):
            raise BundleError(f"{source}: input.layout must be 'matrix' or 'columns'")
        tokens = inp.get("missing", [""])
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise BundleError(f"{source}: input.missing must be a list of strings")
        feats = []
        for i, f in enumerate(inp.get("features") or []):
            try:
                kind = f["kind"]
                if kind not in ("numeric", "categorical"):
                    raise ValueError(f"kind {kind!r}")
                unseen = f.get("unseen", "error")
                if unseen not in ("error", "missing"):
                    raise ValueError(f"unseen {unseen!r}")
                feats.append(
                    Feature(
                        name=str(f["name"]),
                        kind=kind,
                        nullable=bool(f["nullable"]),
                        categories=tuple(str(c) for c in f.get("categories", ())),
                        unseen=unseen,
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise BundleError(f"{source}: input.features[{i}] is malformed ({exc})") from None
        if not feats:
            raise BundleError(f"{source}: input.features is empty")
        _check_datetimes(inp.get("datetime", []), {f.name: f for f in feats}, source)
        files = data["files"]
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and _SAFE_NAME.match(k) and isinstance(v, str) for k, v in files.items()
        ):
            raise BundleError(f"{source}: 'files' must map plain file names to sha256 digests")
        return cls(data=data, raw=raw, features=tuple(feats))


def _check_datetimes(items: Any, features: Mapping[str, Feature], source: str) -> None:
    """``input.datetime``: each a column whose parts are numeric features of the model."""
    if not isinstance(items, list):
        raise BundleError(f"{source}: input.datetime must be a list")
    if not items:  # most models: spare start-up the date parsing module (and _strptime, calendar)
        return
    from mlpack_edge.runtime._datetime import PARTS, part_names

    for i, d in enumerate(items):
        ok = (
            isinstance(d, dict)
            and isinstance(d.get("name"), str)
            and isinstance(d.get("format"), str)
            and isinstance(d.get("nullable"), bool)
            and isinstance(d.get("parts"), list)
            and d["parts"]
            and all(p in PARTS for p in d["parts"])
        )
        if not ok:
            raise BundleError(f"{source}: input.datetime[{i}] is malformed")
        for name in part_names(d["name"], d["parts"]):
            if name not in features or features[name].kind != "numeric":
                raise BundleError(f"{source}: input.datetime[{i}]: part {name!r} is not a numeric feature")
        if d["name"] in features:
            raise BundleError(f"{source}: input.datetime[{i}]: {d['name']!r} is also a feature")


def write_bundle(
    target: str | Path,
    files: Mapping[str, bytes],
    manifest: Mapping[str, Any],
    replace: bool = False,
    sign: Callable[[bytes], bytes] | None = None,
) -> Path:
    """Write ``files`` plus ``manifest.json`` (with their digests) into ``target`` atomically.

    ``manifest`` holds every field but ``format`` and ``files``, which are filled in here.
    ``sign(manifest_bytes) -> manifest.sig bytes`` adds a signature (see
    :mod:`mlpack_edge.runtime._trust`), written in the same atomic step.
    Raises ``FileExistsError`` if ``target`` exists, unless ``replace`` is set: then the old
    folder is swapped for the new one in one rename (a reader never sees a mixture).
    """
    from mlpack_edge._fs import atomic_directory, canonical_json  # the device only reads bundles

    for name in files:
        if not _SAFE_NAME.match(name) or name in (MANIFEST_NAME, SIGNATURE_NAME):
            raise BundleError(f"bundle file name {name!r} is not allowed")
    body = dict(manifest)
    body["format"] = MANIFEST_FORMAT
    body["files"] = {name: sha256_bytes(data) for name, data in sorted(files.items())}
    raw = canonical_json(body).encode("utf-8")
    Manifest.parse(raw, "manifest being written")  # never write what we could not read back
    signature = sign(raw) if sign is not None else None
    with atomic_directory(target, replace=replace) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST_NAME).write_bytes(raw)
        if signature is not None:
            (tmp / SIGNATURE_NAME).write_bytes(signature)
    return Path(target)


def read_manifest(bundle_dir: str | Path) -> Manifest:
    path = Path(bundle_dir) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest.json here; is {bundle_dir} a bundle?") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc.strerror})") from None
    return Manifest.parse(raw, str(path))


def verify_files(manifest: Manifest, read: Any, where: str) -> None:
    """Check every file listed in ``manifest`` against its digest.

    ``read(name) -> bytes`` fetches a file (raising ``FileNotFoundError`` when absent), so
    the same check serves a folder and an archive. Errors name the file at fault.
    """
    for name in sorted(manifest.files):
        try:
            data = read(name)
        except FileNotFoundError:
            raise IntegrityError(f"{where}: file {name} listed in the manifest is missing") from None
        check_file(manifest, name, data, where)


def check_file(manifest: Manifest, name: str, data: bytes, where: str) -> None:
    """Check one file's bytes against its digest (for a file read again after verification)."""
    digest = manifest.files.get(name)
    if digest is None:
        raise IntegrityError(f"{where}: file {name} is not listed in the manifest")
    if sha256_bytes(data) != digest:
        raise IntegrityError(f"{where}: file {name} does not match its sha256 in the manifest (tampered or corrupt)")
