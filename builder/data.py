"""The training CSV: read every cell as text, decide kinds, check it, split it.

Cells are read as strings and parsed here rather than by pandas' guessing, so a bad
value is reported with its column and line instead of silently turning a numeric
column into text, and a categorical code like ``"007"`` stays ``"007"``.

In the frames this module returns, numeric features are float32 (NaN = missing: the
model is fitted on exactly the values ONNX will see) and categorical features are
Python strings with ``""`` for missing (ONNX string tensors have no NaN), which is the
same encoding the device uses.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpack_edge.builder._suggest import nearest
from mlpack_edge.builder.spec import DataSpec, FeatureSpec
from mlpack_edge.errors import DataError
from mlpack_edge.runtime import _datetime
from mlpack_edge.runtime.manifest import Feature

__all__ = ["Dataset", "load_data"]

_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Dataset:
    """A checked, split dataset and the input schema it implies."""

    features: tuple[Feature, ...]
    task: str  # binary | multiclass | regression (resolved from "classification")
    classes: tuple[Any, ...]  # sorted class labels (int or str); () for regression
    target: str
    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: np.ndarray
    y_test: np.ndarray
    sha256: str
    rows: int
    inferred: bool  # kinds were inferred (no [data.features])
    ignored: tuple[str, ...]  # CSV columns that are neither feature nor target
    missing: tuple[str, ...] = ("",)  # text read as missing ([data] missing): the manifest's input.missing
    dropped_target: int = 0  # rows left out for a missing target ([data] drop_missing_target)
    # datetime columns: {"name", "format", "parts", "nullable"}; the model sees their parts
    # as numeric features <name>_<part> (the manifest's input.datetime)
    datetimes: tuple[dict[str, Any], ...] = ()

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.kind == "numeric")

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.kind == "categorical")

    @property
    def stratified(self) -> bool:
        return self.task != "regression"


def load_data(spec: DataSpec, task: str, seed: int) -> Dataset:
    """Read ``spec.path``, type and check every column, and make the seeded split."""
    where = str(spec.path)
    raw = _read_bytes(spec.path)
    table = _parse_csv(raw, where)
    header = list(table.columns)
    if spec.target not in header:
        raise DataError(f"{where}: target column '{spec.target}' not found{_did_you_mean(spec.target, header)}")
    for col in spec.exclude:
        if col not in header:
            raise DataError(f"{where}: excluded column '{col}' (data.exclude) not found{_did_you_mean(col, header)}")
    if spec.features is not None:
        declared = list(spec.features)
        for f in declared:
            if f.name == spec.target:
                raise DataError(f"{where}: '{f.name}' is the target and cannot also be a feature (data.features)")
            if f.name not in header:
                raise DataError(f"{where}: feature '{f.name}' (data.features) not found{_did_you_mean(f.name, header)}")
    else:
        declared = [FeatureSpec(c) for c in header if c != spec.target and c not in spec.exclude]
    if not declared:
        raise DataError(f"{where}: no feature columns besides the target '{spec.target}'")
    if table.empty:
        raise DataError(f"{where}: has a header but no data rows")
    missing_tokens = frozenset(spec.missing)
    lines = np.arange(len(table)) + 2  # file line of each row (the header is line 1), kept across dropping
    no_target = table[spec.target].str.strip().isin(missing_tokens).to_numpy()
    dropped = int(no_target.sum()) if spec.drop_missing_target else 0
    if dropped:
        if dropped == len(table):
            raise DataError(f"{where}: every row's target '{spec.target}' is missing; nothing to train on")
        table = table[~no_target].reset_index(drop=True)
        lines = lines[~no_target]
    columns: dict[str, pd.Series] = {}
    features: list[tuple[FeatureSpec, str, pd.Series]] = []
    datetimes: list[dict[str, Any]] = []
    for f in declared:
        cells = table[f.name]
        missing = cells.str.strip().isin(missing_tokens)
        if bool(missing.all()):
            raise DataError(
                f"{where}: column '{f.name}' has no values (every row is missing); exclude it (data.exclude)"
            )
        if f.kind == "datetime":
            source = _datetime_parts(f, cells, missing, missing_tokens, header, where, lines)
            for name, values in source.pop("columns").items():
                columns[name] = values
                features.append((FeatureSpec(name, "numeric", f.nullable), "numeric", missing))
            datetimes.append(source)
            continue
        kind = f.kind or ("numeric" if _all_numbers(cells[~missing]) else "categorical")
        if kind == "numeric":
            values = _numeric(cells, missing, f.name, where, lines)
        else:
            values = cells.where(~missing, "").astype(object)
        if f.nullable is False and bool(missing.any()):
            line = int(lines[np.flatnonzero(missing.to_numpy())[0]])
            raise DataError(
                f"{where}: line {line}: column '{f.name}' is missing but the feature is declared nullable = false"
            )
        columns[f.name] = values
        features.append((f, kind, missing))
    y, classes, resolved = _target(table[spec.target], task, missing_tokens, spec.target, where, lines)
    train_idx, test_idx = _split(len(table), y, resolved, spec.test_size, seed, where)
    frame = pd.DataFrame(columns)
    x_train = frame.iloc[train_idx].reset_index(drop=True)
    x_test = frame.iloc[test_idx].reset_index(drop=True)
    schema = tuple(
        _feature(f, kind, bool(missing.any()), x_train[f.name], spec.unseen) for f, kind, missing in features
    )
    used = {f.name for f in declared} | {spec.target}
    return Dataset(
        features=schema,
        task=resolved,
        classes=classes,
        target=spec.target,
        x_train=x_train,
        x_test=x_test,
        y_train=y[train_idx],
        y_test=y[test_idx],
        sha256=hashlib.sha256(raw).hexdigest(),
        rows=len(table),
        inferred=spec.features is None,
        ignored=tuple(c for c in header if c not in used),
        missing=tuple(spec.missing),
        dropped_target=dropped,
        datetimes=tuple(datetimes),
    )


def _datetime_parts(
    f: FeatureSpec,
    cells: pd.Series,
    missing: pd.Series,
    tokens: frozenset[str],
    header: list[str],
    where: str,
    lines: np.ndarray,
) -> dict[str, Any]:
    """A datetime column's derived part columns (float32), its format (declared or inferred) and parts."""
    present = ~missing.to_numpy()
    if f.nullable is False and not present.all():
        line = int(lines[np.flatnonzero(~present)[0]])
        raise DataError(f"{where}: line {line}: column '{f.name}' is missing but the feature is declared nullable = false")
    fmt = f.format
    if fmt is None:
        values = cells[present].tolist()
        fmt, bad = _datetime.infer_format(values)
        if fmt is None:
            assert bad is not None
            line = int(lines[np.flatnonzero(present)[bad]])
            tried = ", ".join(_datetime.describe(x) for x in _datetime.INFERRED)
            raise DataError(
                f"{where}: line {line}: column '{f.name}' is not a date/time in a format mlpack infers"
                f" (got {values[bad]!r}; tried {tried}); declare its format (data.features.{f.name}.format)"
            )
    derived, problems = _datetime.derive(cells.tolist(), fmt, f.parts, tokens)
    if problems:
        pos = min(problems)
        raise DataError(f"{where}: line {int(lines[pos])}: column '{f.name}': {problems[pos]}")
    names = _datetime.part_names(f.name, f.parts)
    for name in names:
        if name in header:
            raise DataError(
                f"{where}: column '{name}' is also the name of a part of datetime column '{f.name}'; rename or exclude it"
            )
    has_missing = bool(missing.any())
    return {
        "name": f.name,
        "format": fmt,
        "parts": list(f.parts),
        "nullable": has_missing if f.nullable is None else f.nullable,
        "columns": {n: pd.Series(derived[:, j].astype(np.float32), index=cells.index) for j, n in enumerate(names)},
    }


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found (data.path is relative to the spec)") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a CSV file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def _parse_csv(raw: bytes, where: str) -> pd.DataFrame:
    if not raw.strip():
        raise DataError(f"{where}: the file is empty (expected a CSV with a header row)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    header = next(csv.reader(io.StringIO(text)))
    seen: set[str] = set()
    for name in header:
        if not name.strip():
            raise DataError(f"{where}: the header has an empty column name")
        if name in seen:
            raise DataError(f"{where}: column '{name}' appears twice in the header")
        seen.add(name)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as exc:
        raise DataError(f"{where}: not a valid CSV ({' '.join(str(exc).split())})") from None


def _all_numbers(cells: pd.Series) -> bool:
    parsed = pd.to_numeric(cells.str.strip(), errors="coerce")
    return bool(np.isfinite(parsed.to_numpy(dtype=np.float64)).all())


def _numeric(cells: pd.Series, missing: pd.Series, name: str, where: str, lines: np.ndarray) -> pd.Series:
    parsed = pd.to_numeric(cells.str.strip().where(~missing), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~missing.to_numpy() & ~(np.isfinite(parsed) & (np.abs(np.nan_to_num(parsed)) <= _F32_MAX))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}: line {lines[i]}: column '{name}' expects a number, got {cells.iloc[i]!r}")
    return pd.Series(parsed.astype(np.float32), index=cells.index)


def _target(
    cells: pd.Series, task: str, missing_tokens: frozenset[str], name: str, where: str, lines: np.ndarray
) -> tuple[np.ndarray, tuple[Any, ...], str]:
    """The target as an array, its sorted classes, and the task resolved from the data."""
    missing = cells.str.strip().isin(missing_tokens).to_numpy()
    if missing.any():
        line = int(lines[np.flatnonzero(missing)[0]])
        count = int(missing.sum())
        raise DataError(
            f"{where}: line {line}: target '{name}' is missing ({count} row{'s' * (count > 1)} without a target;"
            " leave them out with [data] drop_missing_target = true)"
        )
    if task == "regression":
        parsed = pd.to_numeric(cells.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(parsed)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: line {lines[i]}: target '{name}' must be a number for regression, got {cells.iloc[i]!r}"
            )
        return parsed, (), "regression"
    y = _labels(cells)
    classes = tuple(v.item() if isinstance(v, np.generic) else v for v in np.unique(y))
    if len(classes) < 2:
        raise DataError(
            f"{where}: target '{name}' has a single class ({classes[0]!r}); classification needs at least two"
        )
    resolved = task if task != "classification" else ("binary" if len(classes) == 2 else "multiclass")
    if resolved == "binary" and len(classes) > 2:
        shown = ", ".join(map(str, classes[:8])) + (", ..." if len(classes) > 8 else "")
        raise DataError(
            f"{where}: task is binary but target '{name}' has {len(classes)} classes ({shown}); use task = \"multiclass\""
        )
    return y, classes, resolved


def _labels(cells: pd.Series) -> np.ndarray:
    """Integer labels when every value is written as a plain integer, else the strings as written."""
    text = cells.str.strip()
    parsed = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    if np.isfinite(parsed).all() and (parsed == np.round(parsed)).all() and np.abs(parsed).max() < 2**53:
        ints = parsed.astype(np.int64)
        if all(str(i) == t for i, t in zip(ints.tolist(), text.tolist(), strict=True)):  # "01" and "1" stay distinct
            return ints
    return text.to_numpy(dtype=object)


def _split(n: int, y: np.ndarray, task: str, test_size: float, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    stratify = None
    if task != "regression":
        values, counts = np.unique(y, return_counts=True)
        if counts.min() < 2:
            rare = values[int(np.argmin(counts))]
            raise DataError(
                f"{where}: class {rare!r} of the target has only 1 row; a stratified split needs at least 2 per class"
            )
        stratify = y
    try:
        train, test = train_test_split(
            np.arange(n), test_size=test_size, random_state=seed, shuffle=True, stratify=stratify
        )
    except ValueError as exc:
        raise DataError(f"{where}: cannot split {n} rows with test_size {test_size:g} ({exc})") from None
    return np.sort(train), np.sort(test)


def _feature(spec: FeatureSpec, kind: str, has_missing: bool, train: pd.Series, unseen_default: str) -> Feature:
    nullable = has_missing if spec.nullable is None else spec.nullable
    if kind == "numeric":
        return Feature(spec.name, "numeric", nullable)
    categories = tuple(sorted({v for v in train.tolist() if v != ""}))
    return Feature(spec.name, "categorical", nullable, categories, spec.unseen or unseen_default)  # type: ignore[arg-type]


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    close = nearest(name, options)
    if close:
        return f" (did you mean '{close}'?)"
    shown = ", ".join(options[:10]) + (", ..." if len(options) > 10 else "")
    return f" (columns: {shown})"
