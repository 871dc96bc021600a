"""Input validation: the manifest's features turned into converters, worked out once at load.

Rows arrive as dicts (feature -> value), lists in manifest order, numpy arrays,
columns of strings straight from a CSV file, or a pandas DataFrame's columns (coerced
first by :mod:`._frame`). Every form ends up as a :class:`Batch`:
the valid rows as ONNX-ready arrays, plus one :class:`~mlpack_edge.errors.InputError` per
invalid row naming the row and the field. A bad row never loses the good ones.

Rules (the same for every form):

* numeric features take numbers; strings are parsed as numbers (CSV); booleans,
  lists and objects are the wrong type; values must be finite and fit float32;
* categorical features take strings (integers are accepted as their decimal text);
  a category not in the manifest is an error, or missing, per the feature's ``unseen``;
* ``None``, NaN, the empty string and the text the build read as missing (the
  manifest's ``input.missing``, e.g. ``"NA"``; matched after stripping surrounding
  blanks, as the build matched it) are *missing*: allowed only on nullable features (fed
  to ONNX as NaN, or as ``""`` for a categorical). The tokens apply to text only: a
  JSON number ``-999`` is a number even when the text ``"-999"`` is a missing token;
* every feature must be present and nothing else may be.

Validation is column-wise (one numpy conversion per feature, a Python loop only for a
column holding something unusual), and a single all-numeric row has a fast path
(:meth:`Schema.fast_row`, :meth:`Schema.fast_columns`) because its whole budget is about a
microsecond.
"""

from __future__ import annotations

import math
import operator
import struct
import warnings
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from mlpack_edge._record import Frozen
from mlpack_edge.errors import InputError
from mlpack_edge.runtime.manifest import Feature

__all__ = ["Batch", "Schema", "row_error"]

FLOAT32_MAX = float(np.finfo(np.float32).max)
# A value beyond float32 becomes inf in the fast path's cast and is then refused with a
# clear error; numpy's warning about it is noise. np.errstate would silence it too, but
# costs ~1.5 µs per call, more than the fast path's whole budget, so filter it here, for
# this module only.
warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning, __name__)
_PLAIN_NUMBERS = frozenset({float, int, type(None), np.float64, np.float32, np.int64, np.int32})
# What struct's float32 packing converts exactly as numpy's float32 cast does (None is not:
# a missing value takes the numpy conversion, where it becomes NaN).
_PACKABLE = _PLAIN_NUMBERS - {type(None)}
_MAX_LISTED = 10
_LISTED_TYPES = 1 << 16  # Schema.rows: up to this many numeric values, their types go into a list
_F32 = np.dtype(np.float32)


class Batch(Frozen):
    """Validated rows, ready for onnxruntime.

    ``ok`` holds the positions (within the request) of the rows that passed, ascending;
    the arrays below cover those rows only. ``categorical`` keeps the values as sent
    (``""`` for missing) so unseen categories can still be counted; ``fed`` is what the
    model sees (an unseen category under policy ``missing`` becomes ``""``).
    """

    __slots__ = ("size", "ok", "errors", "numeric", "categorical", "fed")
    _fields = __slots__
    size: int
    ok: np.ndarray
    errors: list[InputError]
    numeric: np.ndarray | None
    categorical: list[Sequence[str]]
    fed: list[Sequence[str]]

    def __init__(
        self,
        size: int,
        ok: np.ndarray,
        errors: list[InputError],
        numeric: np.ndarray | None,
        categorical: list[Sequence[str]],
        fed: list[Sequence[str]],
    ) -> None:
        s = object.__setattr__
        s(self, "size", size)
        s(self, "ok", ok)
        s(self, "errors", errors)
        s(self, "numeric", numeric)
        s(self, "categorical", categorical)
        s(self, "fed", fed)

    def replace(self, **changes: Any) -> Batch:
        """A copy with ``changes`` (field name -> value)."""
        return Batch(**({n: getattr(self, n) for n in self._fields} | changes))

    @property
    def rows(self) -> int:
        return int(self.ok.size)


def row_error(row: int | None, field: str | None, what: str, name_field: bool = True) -> InputError:
    """An ``InputError`` whose message starts with the row number and the field, when known."""
    where = ("" if row is None else f"row {row}: ") + (f"field {field!r}: " if field is not None and name_field else "")
    return InputError(where + what, row=row, field=field)


def _at(start: int | None, pos: int) -> int | None:
    """The number of the row at ``pos`` when rows are numbered from ``start`` (``None``: unnumbered)."""
    return None if start is None else start + pos


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


class Schema:
    """Converters for one model's input features (manifest order)."""

    def __init__(
        self, features: Sequence[Feature], missing: Sequence[str] = (), datetimes: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        self.features = tuple(features)
        # Text read as missing: the build's tokens, plus "" (always missing on the device).
        self._missing = frozenset(missing) | {""}
        # Tokens numpy would parse as a number ("-999", "inf"): numeric text columns then
        # need a per-value look (NaN-like tokens need none: numpy reads them as NaN).
        self._number_tokens = any(_parses_as_number(t) for t in self._missing)
        self.names = tuple(f.name for f in self.features)
        self.width = len(self.names)
        self._nameset = frozenset(self.names)
        self.numeric = tuple(i for i, f in enumerate(self.features) if f.kind == "numeric")
        self.categorical = tuple(i for i, f in enumerate(self.features) if f.kind == "categorical")
        self.all_numeric = not self.categorical
        self._categories = {i: frozenset(self.features[i].categories) for i in self.categorical}
        # Numeric columns where missing is an error (a mask over the numeric block).
        self._strict = np.array([not self.features[i].nullable for i in self.numeric], dtype=bool)
        self._blank: tuple[Any, ...] = (None,) * self.width
        self._values = _getter(self.names)
        self._numeric_values = _getter(self.numeric)
        self._categorical_values = _getter(self.categorical)
        self._category_sets = tuple(self._categories[i] for i in self.categorical)
        # A dict row's numeric values straight into float32 bytes (see _packed).
        n_numeric = len(self.numeric)
        # A list: comparing map(type, values) collected into a list costs ~0.8k instructions
        # less than into a tuple (30 values), which grows by reallocation.
        self._float_types = [float] * n_numeric
        packer = struct.Struct(f"={n_numeric}f")
        self._pack = packer.pack
        self._pack_into = packer.pack_into
        self._packed_shape = (1, n_numeric)
        self._init_inputs(datetimes)

    def _init_inputs(self, datetimes: Sequence[Mapping[str, Any]]) -> None:
        """What callers send: the model's features, a datetime column in place of its parts.

        ``inputs``/``input_names`` are those (a datetime column as ``Feature(name,
        "datetime", nullable)`` at the place of its first part); ``features``/``names``
        stay the model's. Without datetime columns the two are the same.
        """
        self._datetimes = tuple(dict(d) for d in datetimes)
        if not self._datetimes:
            self.inputs = self.features
            self.input_names = self.names
            return
        owner = {}
        for k, d in enumerate(self._datetimes):
            for part in d["parts"]:
                owner[f"{d['name']}_{part}"] = k
        inputs: list[Feature] = []
        emitted: set[int] = set()
        for f in self.features:
            k = owner.get(f.name)
            if k is None:
                inputs.append(f)
            elif k not in emitted:
                emitted.add(k)
                d = self._datetimes[k]
                inputs.append(Feature(d["name"], "datetime", bool(d["nullable"])))  # type: ignore[arg-type]
        self.inputs = tuple(inputs)
        self.input_names = tuple(f.name for f in inputs)
        self._input_set = frozenset(self.input_names)
        self._input_values = _getter(self.input_names)
        self._model_position = {n: i for i, n in enumerate(self.names)}

    # ------------------------------------------------------------------ datetime columns

    def _expand_columns(
        self, columns: Sequence[Sequence[Any]]
    ) -> tuple[list[Sequence[Any]], dict[int, tuple[str, str]]]:
        """Columns in input order -> columns in model order, each datetime column derived into
        its parts; and ``{position: (field, problem)}`` for values that are not dates."""
        from mlpack_edge.runtime._datetime import derive

        out: list[Sequence[Any]] = [()] * self.width
        found: dict[int, tuple[str, str]] = {}
        by_name = dict(zip(self.input_names, columns))
        for d in self._datetimes:
            name = d["name"]
            parts, problems = derive(by_name.pop(name), d["format"], d["parts"], self._missing)
            for pos, problem in problems.items():
                found.setdefault(pos, (name, problem))
            if not d["nullable"]:
                for pos in np.flatnonzero(np.isnan(parts[:, 0])).tolist():
                    found.setdefault(pos, (name, "is missing (null/empty) but the feature is not nullable"))
            for j, part in enumerate(d["parts"]):
                out[self._model_position[f"{name}_{part}"]] = parts[:, j]
        for name, values in by_name.items():
            out[self._model_position[name]] = values
        return out, found

    def _rows_by_input(self, rows: Sequence[Any], start: int | None, errors: dict[int, InputError]) -> Batch:
        """:meth:`rows` for a model with datetime columns: rows by input names, validated column-wise.

        Rows keyed by the model's own features (the golden set's) are taken as they are.
        """
        size = len(rows)
        given: list[int] = []  # positions of rows by input names
        table: list[Sequence[Any]] = []
        own: dict[int, Mapping[Any, Any]] = {}  # position -> row by the model's features
        width = len(self.input_names)
        for pos, r in enumerate(rows):
            if pos in errors:
                continue
            if isinstance(r, Mapping):
                if r.keys() == self._input_set:
                    given.append(pos)
                    table.append(self._input_values(r))
                elif r.keys() == self._nameset:
                    own[pos] = r
                else:
                    problem, field = self._key_problem(r, self.input_names, self._input_set)
                    errors[pos] = row_error(_at(start, pos), field, problem, name_field=False)
            elif isinstance(r, (list, tuple)) or (isinstance(r, np.ndarray) and r.ndim == 1):
                if len(r) == width:
                    given.append(pos)
                    table.append(r)  # type: ignore[arg-type]
                else:
                    problem = f"expected {width} values in manifest order, got {len(r)}"
                    errors[pos] = row_error(_at(start, pos), None, problem, name_field=False)
            else:
                problem = f"expected an object (feature -> value) or a list of {width} values, got {type(r).__name__}"
                errors[pos] = row_error(_at(start, pos), None, problem, name_field=False)
        inputs = list(zip(*table)) if table else [() for _ in self.input_names]
        derived, found = self._expand_columns(inputs)
        for k, (field, problem) in found.items():
            errors.setdefault(given[k], row_error(_at(start, given[k]), field, problem))
        if len(given) == size:  # the common case: every row by input names, nothing to scatter
            columns: list[Sequence[Any]] = derived
        else:
            columns = [[None] * size for _ in self.names]
            for j, col in enumerate(derived):
                target = columns[j]
                for k, pos in enumerate(given):
                    target[pos] = col[k]
            for pos, r in own.items():
                for j, name in enumerate(self.names):
                    columns[j][pos] = r[name]
        return self._complete(self._parse_numeric(columns, size, start, errors), columns, size, start, errors)

    # ------------------------------------------------------------------ single row

    def fast_row(self, row: Any) -> np.ndarray | None:
        """A ``[1, F]`` float32 array for a plainly valid all-numeric row, else ``None``.

        ``None`` means "take the full path" (which explains any problem), never "invalid".
        """
        x: np.ndarray | None
        if type(row) is np.ndarray:
            dtype = row.dtype
            if row.ndim != 1 or row.shape[0] != self.width or dtype.kind != "f":
                return None
            x = row if dtype is _F32 else row.astype(np.float32)
        elif type(row) is dict:
            if len(row) != self.width:
                return None
            try:
                values = self._values(row)
            except KeyError:
                return None
            x = self._packed(values)
            if x is not None:
                return x
            x = self._plain_numbers(values)
            if x is None:
                return None
        else:
            return None
        return x.reshape(1, self.width) if self._finite(x) else None

    def dict_row(self, row: dict[str, Any]) -> np.ndarray | None:
        """The common single row of an all-numeric model: a dict of finite floats, as ``[1, F]`` float32.

        ``None`` for anything else (missing values, other keys, other types): :meth:`fast_row`
        and then the full path take it from there.
        """
        if len(row) != self.width:
            return None
        try:
            return self._packed(self._values(row))
        except KeyError:
            return None

    def dict_row_into(self, row: dict[str, Any], out: np.ndarray) -> bool:
        """:meth:`dict_row` written into ``out`` (a writable ``[1, F]`` float32 array); ``False``
        (``out`` unspecified) where :meth:`dict_row` would give ``None``.

        For a caller that reuses its input array between calls (``Model.predict_proba``
        without a recorder): no bytes object and no array made per row.
        """
        if len(row) != self.width:
            return False
        try:
            values = self._values(row)
        except KeyError:
            return False
        if list(map(type, values)) != self._float_types and not set(map(type, values)) <= _PACKABLE:
            return False
        try:
            self._pack_into(out, 0, *values)
        except (struct.error, OverflowError):
            return False
        return math.isfinite(sum(values))

    def fast_columns(self, row: Any) -> tuple[np.ndarray, tuple[str, ...]] | None:
        """For a plainly valid dict row: numeric values ``[1, n_numeric]`` and the categories, else ``None``.

        Plainly valid: every feature present, numbers for numeric features, known
        categories for categorical ones (anything missing or unseen takes the full path).
        """
        if type(row) is not dict or len(row) != self.width:
            return None
        try:
            values = self._values(row)
        except KeyError:
            return None
        if self.numeric:
            numbers = self._numeric_values(values)
            x = self._packed(numbers)
            if x is None:
                x = self._plain_numbers(numbers)
                if x is None or not self._finite(x):
                    return None
                x = x.reshape(1, -1)
        else:
            x = np.empty((1, 0), np.float32)
        cats = self._categorical_values(values) if self.categorical else ()
        for v, allowed in zip(cats, self._category_sets):
            if type(v) is not str or v not in allowed:
                return None
        return x, cats

    def _packed(self, values: tuple[Any, ...]) -> np.ndarray | None:
        """Finite plain numbers (no ``None``) as a read-only ``[1, n]`` float32 array, else ``None``.

        struct packs a tuple of floats into float32 bytes (the same rounding as numpy's
        cast) in a fraction of what ``np.array(values, dtype=float32)`` costs, and
        ``sum`` over Python floats settles finiteness without a numpy call: a NaN or an
        infinity makes the sum non-finite, and values that fit float32 cannot overflow it.
        Only exact types pass (``bool`` and strings would pack as numbers), so validation is
        the same as on the full path; anything else returns ``None`` to take the numpy path.
        The bytes are immutable, so the array can be kept (the recorder does) without a copy.
        """
        if list(map(type, values)) != self._float_types and not set(map(type, values)) <= _PACKABLE:
            return None
        try:
            packed = self._pack(*values)
        except (struct.error, OverflowError):  # beyond float32: the full path names the field
            return None
        if not math.isfinite(sum(values)):
            return None
        return np.ndarray(self._packed_shape, _F32, packed)

    @staticmethod
    def _plain_numbers(values: tuple[Any, ...]) -> np.ndarray | None:
        if not set(map(type, values)) <= _PLAIN_NUMBERS:
            return None
        try:
            return np.array(values, dtype=np.float32)  # None -> NaN
        except (TypeError, ValueError, OverflowError):
            return None

    def _finite(self, x: np.ndarray) -> bool:
        """No NaN in a non-nullable feature, no inf anywhere (values of the numeric features).

        If the sum of squares is finite, so is every value (a square of inf stays inf, NaN
        propagates): one dot product settles the common case; the rare false alarm (an
        overflowing sum) falls through to the exact test.
        """
        if math.isfinite(x.dot(x)):  # ndarray.dot: ~0.3 µs on a row, `x @ x` ~0.65 µs
            return True
        with np.errstate(invalid="ignore"):
            return not (np.isinf(x).any() or (np.isnan(x) & self._strict).any())

    # ------------------------------------------------------------------ batches

    def rows(
        self, rows: Sequence[Any], start: int | None = 0, errors: dict[int, InputError] | None = None
    ) -> Batch:
        """Validate rows given as dicts (feature -> value) or sequences in manifest order.

        Rows are numbered from ``start`` in error messages; ``None`` means one unnumbered row.
        ``errors`` holds rows already known to be bad (by position); their values are ignored.
        """
        errors = dict(errors or {})
        if self._datetimes:
            return self._rows_by_input(rows, start, errors)
        table: list[Sequence[Any]] = self._plain_dicts(rows) if not errors else []
        for pos, r in enumerate(rows if not table else ()):
            if pos in errors:
                table.append(self._blank)
                continue
            if isinstance(r, Mapping):
                if r.keys() == self._nameset:
                    table.append(self._values(r))
                    continue
                problem, field = self._key_problem(r)
            elif isinstance(r, (list, tuple)) or (isinstance(r, np.ndarray) and r.ndim == 1):
                if len(r) == self.width:
                    table.append(r)  # type: ignore[arg-type]  # a 1-D array is a sequence here
                    continue
                problem, field = f"expected {self.width} values in manifest order, got {len(r)}", None
            else:
                problem = f"expected an object (feature -> value) or a list of {self.width} values, got {type(r).__name__}"
                field = None
            errors[pos] = row_error(_at(start, pos), field, problem, name_field=False)
            table.append(self._blank)
        size = len(table)
        numeric = None
        if self.numeric:
            # The common case (plain numbers) converts the whole numeric block in one call.
            block = table if self.all_numeric else [self._numeric_values(t) for t in table]
            # All floats (what JSON clients mostly send) is settled by one list comparison of
            # the types (identity per item): ~35% less than collecting them into a set. Only for
            # a request-sized block: the list (and struct's argument tuple) hold a pointer per value.
            count = size * len(self.numeric)
            types = list(map(type, chain.from_iterable(block))) if count <= _LISTED_TYPES else None
            if types is not None and types == self._float_types * size:
                # Floats only: struct packs them as float64 bytes (~25% less than fromiter); read-only,
                # which is fine: _complete makes the float32 block the model is fed.
                flat = np.frombuffer(struct.pack("%dd" % count, *chain.from_iterable(block)), np.float64)
                numeric = flat.reshape(size, len(self.numeric))
            elif set(map(type, chain.from_iterable(block)) if types is None else types) <= _PLAIN_NUMBERS:
                try:  # fromiter: no nested-sequence discovery (None reads as NaN, as np.array does)
                    flat = np.fromiter(chain.from_iterable(block), dtype=np.float64, count=size * len(self.numeric))
                    numeric = flat.reshape(size, len(self.numeric))
                except (TypeError, ValueError, OverflowError):
                    numeric = None
        columns: list[Sequence[Any]] = []
        if numeric is None or self.categorical:  # transpose only when a column is needed
            columns = list(zip(*table)) if table else [() for _ in self.names]
        if numeric is None:
            numeric = self._parse_numeric(columns, size, start, errors)
        return self._complete(numeric, columns, size, start, errors)

    def _plain_dicts(self, rows: Sequence[Any]) -> list[Sequence[Any]]:
        """Each row's values in manifest order when every row is a ``dict`` with exactly the
        features as keys (a JSON batch), else ``[]`` (the per-row loop then says what is wrong).

        Same length as the features and every feature found means the same keys: three
        passes in C instead of a ``Mapping`` check and a key-set comparison per row.
        """
        if type(rows) is not list or set(map(type, rows)) != {dict} or set(map(len, rows)) != {self.width}:
            return []
        try:
            return list(map(self._values, rows))
        except KeyError:
            return []

    def columns(
        self,
        columns: Sequence[Sequence[Any]],
        size: int,
        start: int | None = 0,
        errors: dict[int, InputError] | None = None,
    ) -> Batch:
        """Validate one value sequence per feature (manifest order), ``size`` rows each.

        ``errors`` holds rows already known to be bad (by position); their values are ignored.
        """
        errs = dict(errors or {})
        if self._datetimes:
            columns, found = self._expand_columns(columns)
            for pos, (field, problem) in found.items():
                errs.setdefault(pos, row_error(_at(start, pos), field, problem))
        return self._complete(self._parse_numeric(columns, size, start, errs), columns, size, start, errs)

    def matrix(self, X: np.ndarray, start: int | None = 0) -> Batch:
        """Validate a numeric 2-D array whose columns are the features in manifest order."""
        if self._datetimes:  # a datetime column arrives as text (or datetimes): row by row
            if X.ndim != 2 or X.shape[1] != len(self.input_names):
                raise row_error(
                    None, None, f"expected an array of shape (n, {len(self.input_names)}) in manifest order, got {X.shape}"
                )
            return self.rows(X.tolist() if X.dtype.kind != "O" else list(X), start)
        if X.ndim != 2 or X.shape[1] != self.width:
            raise row_error(None, None, f"expected an array of shape (n, {self.width}) in manifest order, got {X.shape}")
        if not self.all_numeric or X.dtype.kind not in "fiu":
            return self.rows(X.tolist() if X.dtype.kind != "O" else list(X), start)
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.ascontiguousarray(X, dtype=np.float32)
            flat = x.ravel()
            if math.isfinite(flat @ flat):  # see _finite: exact for NaN/inf, one BLAS pass
                return Batch(len(x), np.arange(len(x)), [], x, [], [])
        errors: dict[int, InputError] = {}
        self._check_numeric(x, start, errors, shown=X)
        return self._finish(len(x), errors, x, [], [])

    # ------------------------------------------------------------------ helpers

    def _parse_numeric(
        self, columns: Sequence[Sequence[Any]], size: int, start: int | None, errors: dict[int, InputError]
    ) -> np.ndarray | None:
        if not self.numeric:
            return None
        block = np.empty((size, len(self.numeric)), dtype=np.float64)
        for j, i in enumerate(self.numeric):
            block[:, j] = self._numeric_column(columns[i], i, start, errors)
        return block

    def _complete(
        self,
        numeric: np.ndarray | None,
        columns: Sequence[Sequence[Any]],
        size: int,
        start: int | None,
        errors: dict[int, InputError],
    ) -> Batch:
        """Range/missing checks on the numeric block, categoricals, then drop the bad rows."""
        if numeric is not None:
            self._check_numeric(numeric, start, errors, shown=numeric)
            with np.errstate(over="ignore", invalid="ignore"):
                numeric = numeric.astype(np.float32)
        original: list[Sequence[str]] = []
        fed: list[Sequence[str]] = []
        for i in self.categorical:
            o, f = self._categorical_column(columns[i], i, start, errors)
            original.append(o)
            fed.append(f)
        return self._finish(size, errors, numeric, original, fed)

    def _check_numeric(
        self, block: np.ndarray, start: int | None, errors: dict[int, InputError], shown: np.ndarray
    ) -> None:
        """Record NaN in non-nullable columns and values beyond float32 (per row, first column)."""
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(block) <= FLOAT32_MAX)  # NaN, inf, and finite values float32 cannot hold
        if not bad.any():
            return
        for pos, j in zip(*(a.tolist() for a in np.nonzero(bad))):
            if pos in errors:
                continue
            value = float(shown[pos, j])
            if math.isnan(value):
                if not self._strict[j]:
                    continue
                what = "is missing (null/NaN) but the feature is not nullable"
            else:
                what = f"expected a finite number within float32 range, got {value!r}"
            name = self.features[self.numeric[j]].name
            errors[pos] = row_error(_at(start, pos), name, what)

    def _finish(
        self,
        size: int,
        errors: dict[int, InputError],
        numeric: np.ndarray | None,
        original: list[Sequence[str]],
        fed: list[Sequence[str]],
    ) -> Batch:
        if not errors:
            return Batch(size, np.arange(size), [], numeric, original, fed)
        good = np.ones(size, dtype=bool)
        good[list(errors)] = False
        ok = np.flatnonzero(good)
        keep = ok.tolist()
        return Batch(
            size,
            ok,
            [errors[p] for p in sorted(errors)],
            numeric[ok] if numeric is not None else None,
            [[c[p] for p in keep] for c in original],
            [[c[p] for p in keep] for c in fed],
        )

    def _key_problem(
        self, row: Mapping[Any, Any], names: Sequence[str] | None = None, nameset: frozenset[str] | None = None
    ) -> tuple[str, str | None]:
        names = self.names if names is None else names
        nameset = self._nameset if nameset is None else nameset
        missing = [n for n in names if n not in row]
        if missing:
            return f"missing feature{'s' if len(missing) > 1 else ''} {_listing([repr(m) for m in missing])}", missing[0]
        unknown = [str(k) for k in row if k not in nameset]
        return (
            f"unknown feature{'s' if len(unknown) > 1 else ''} {_listing([repr(u) for u in unknown])}"
            f" (the model takes: {_listing(list(names))})",
            unknown[0],
        )

    def _numeric_column(self, values: Sequence[Any], i: int, start: int | None, errors: dict[int, InputError]) -> np.ndarray:
        """float64 values (NaN = missing); unparseable values go into ``errors`` by position."""
        feature = self.features[i]
        if type(values) is np.ndarray and values.dtype == np.float64:  # e.g. a DataFrame's column
            return values
        types = set(map(type, values))
        arr: np.ndarray | None = None
        try:
            if types <= _PLAIN_NUMBERS:
                arr = np.array(values, dtype=np.float64)
            elif types == {str}:
                missing = self._missing
                try:
                    arr = np.array(values, dtype=np.float64)
                except ValueError:  # most often missing cells ("", "NA"): read them as NaN
                    arr = np.array(["nan" if v.strip() in missing else v for v in values], dtype=np.float64)
                if self._number_tokens:
                    for pos, v in enumerate(values):
                        if v.strip() in missing:
                            arr[pos] = math.nan
        except (TypeError, ValueError, OverflowError):
            arr = None
        if arr is None:
            arr = np.empty(len(values), dtype=np.float64)
            for pos, v in enumerate(values):
                x, problem = _to_number(v, self._missing)
                arr[pos] = x
                if problem is not None and pos not in errors:
                    errors[pos] = row_error(_at(start, pos), feature.name, problem)
        return arr

    def _categorical_column(
        self, values: Sequence[Any], i: int, start: int | None, errors: dict[int, InputError]
    ) -> tuple[Sequence[str], Sequence[str]]:
        feature = self.features[i]
        name = feature.name
        if set(map(type, values)) == {str}:
            original: Sequence[str] = values
        else:
            texts: list[str] = []
            for pos, v in enumerate(values):
                text, problem = _to_category(v)
                texts.append(text)
                if problem is not None and pos not in errors:
                    errors[pos] = row_error(_at(start, pos), name, problem)
            original = texts
        unseen = set(original) - self._categories[i]
        unseen.discard("")
        blanks = {v for v in unseen if v.strip() in self._missing}  # "NA", " ": missing, as in training
        if blanks:
            original = ["" if v in blanks else v for v in original]
            unseen -= blanks
        if not feature.nullable and "" in original:
            for pos, v in enumerate(original):
                if v == "" and pos not in errors:
                    errors[pos] = row_error(
                        _at(start, pos), name, "is missing (null/empty) but the feature is not nullable"
                    )
        if not unseen:
            return original, original
        if feature.unseen == "missing":
            return original, ["" if v in unseen else v for v in original]
        allowed = _listing([repr(c) for c in feature.categories])
        for pos, v in enumerate(original):
            if v in unseen and pos not in errors:
                errors[pos] = row_error(
                    _at(start, pos),
                    name,
                    f"category {_show(v)} was not seen in training (expected one of {allowed})",
                )
        return original, original


def _parses_as_number(text: str) -> bool:
    """Whether numpy would read ``text`` as a number other than NaN."""
    try:
        return not math.isnan(float(text))
    except ValueError:
        return False


def _to_number(v: Any, missing: frozenset[str] = frozenset({""})) -> tuple[float, str | None]:
    """One value as a float (NaN = missing), or NaN and what is wrong with it."""
    if isinstance(v, (bool, np.bool_)):
        return math.nan, "expected a number, got a boolean"
    if isinstance(v, (int, float, np.integer, np.floating)):
        try:
            return float(v), None
        except OverflowError:
            return math.nan, f"expected a finite number within float32 range, got {_show(v)}"
    if v is None:
        return math.nan, None
    if isinstance(v, str):
        text = v.strip()
        if not text or text in missing:
            return math.nan, None
        try:
            return float(text), None
        except ValueError:
            return math.nan, f"expected a number, got {_show(v)}"
    return math.nan, f"expected a number, got {type(v).__name__}"


def _to_category(v: Any) -> tuple[str, str | None]:
    """One value as category text (``""`` = missing), or ``""`` and what is wrong with it."""
    if isinstance(v, str):
        return str(v), None
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return "", None
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return str(int(v)), None
    return "", f"expected a category (text), got {type(v).__name__} {_show(v)}"


def _getter(keys: Sequence[Any]) -> Any:
    """``row -> tuple of row[k] for k in keys`` in C (``itemgetter``), always a tuple."""
    if not keys:
        return lambda row: ()
    if len(keys) == 1:
        key = keys[0]
        return lambda row: (row[key],)
    return operator.itemgetter(*keys)
