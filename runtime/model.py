"""A verified model ready to predict: validation in front of one onnxruntime session.

Three ways in, for three kinds of caller:

* :meth:`Model.predict` / :meth:`Model.predict_proba` — one row (a dict, a list in
  manifest order, a 1-D array, a pandas Series) gives one answer; a batch (a list of
  rows, a 2-D array, a pandas DataFrame) gives an array. Any invalid row raises
  :class:`~mlpack_edge.errors.InputError`. A DataFrame's columns are coerced by the
  model's schema, the way training read its CSV (:mod:`._frame`: a firmware column that
  pandas parsed as 1.3 is the category "1.3"); pandas itself is never imported here.
* :meth:`Model.predict_one` — one row as a :class:`Prediction` with class names.
* :meth:`Model.predict_rows` — a batch that never raises for bad rows: the good ones are
  predicted, the bad ones come back as errors (what ``predict`` on the CLI and ``serve``
  use).

A plainly valid single row skips the general validator and the Batch/BatchResult
machinery (``Schema.fast_row`` / ``Schema.fast_columns``), and the recorder hook costs
one ``is None`` test when no recorder is set: together they keep a single-row call
within a microsecond or so of a bare ``InferenceSession.run``. With the agent's recorder
(running, or rolling its own windows on the wall clock), a classifier's single row is one
``list.extend`` into the recorder's row sink
(:meth:`~mlpack_edge.monitor_agent.recorder.Recorder.row_sink`), no call into the recorder;
``predict_proba``'s runs into a bound output as without a recorder, its input and
probabilities going to :meth:`~mlpack_edge.monitor_agent.recorder.Recorder.proba_sink` as
bytes, where the build proved the label is the most probable class.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from mlpack_edge._record import Frozen
from mlpack_edge.errors import BundleError, InferenceError, InputError
from mlpack_edge.runtime import _frame
from mlpack_edge.runtime._format import error_record, finite_or_none, json_floats, short_floats
from mlpack_edge.runtime._signature import Signature, bind
from mlpack_edge.runtime.bundle import Bundle
from mlpack_edge.runtime.manifest import Manifest
from mlpack_edge.runtime.schema import Batch, Schema
from mlpack_edge.runtime.session import batch_threads, bound_row, create_session, first_line, runner

__all__ = ["Recorder", "Prediction", "BatchResult", "Model", "open_model"]

T = TypeVar("T")

#: A batch of at least this many rows runs on a second session with one intra-op thread per
#: usable physical core (session.batch_threads), unless the caller chose ``threads``. One thread is right for single rows and
#: small requests (see :mod:`.session`), but a default ``InferenceSession`` uses every core
#: and was 1.5-1.9x faster on 100k-row batches of tree and MLP models; the second session
#: is made on the first large batch only, so a ``serve`` that never sees one never pays for it.
#: It spins, as a default session does: without, a 20k-row batch was 0.68-0.80x a default
#: ``InferenceSession`` on an idle machine; the spin after each large call is short.
BATCH_THREADS_ROWS = 1024
# A plainly valid single row skips Batch and BatchResult: (feeds, numeric [1, n], categorical).
# The last item says whether the numeric array is ours (not a view of the caller's buffer).
_FastRow = tuple[dict[str, np.ndarray], np.ndarray, list[list[str]], bool]
# A bound single-row run: (run, input row [F], its bytes, output row [C], its bytes); see session.bound_row.
_Bound = tuple[Any, np.ndarray, memoryview, np.ndarray, memoryview]
_F32 = np.dtype(np.float32)
_clock = time.perf_counter


class Recorder(Protocol):
    """What the monitoring agent receives after every predict call (see the runtime brief)."""

    def record(
        self,
        numeric: np.ndarray | None,
        categorical: Sequence[Sequence[str]],
        predictions: np.ndarray,
        latency_s: float,
        requests: int = 1,
    ) -> None: ...

    def record_error(self, kind: str, count: int) -> None: ...


class Prediction(Frozen):
    """One row's answer: a label with per-class probabilities, or a regression value."""

    __slots__ = ("label", "probabilities", "value")
    _fields = __slots__
    label: Any
    probabilities: dict[Any, float] | None
    value: float | None

    def __init__(self, label: Any = None, probabilities: dict[Any, float] | None = None, value: float | None = None) -> None:
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "probabilities", probabilities)
        object.__setattr__(self, "value", value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: class names as keys, NaN/infinity as ``None``."""
        if self.value is not None:
            return {"value": finite_or_none(self.value)}
        probabilities = {str(k): finite_or_none(v) for k, v in (self.probabilities or {}).items()}
        return {"label": self.label, "probabilities": probabilities}



class BatchResult(Frozen):
    """Outputs for the valid rows of a batch plus one error per invalid row.

    ``ok`` holds the positions of the predicted rows (ascending); ``labels``,
    ``probabilities`` (columns in ``classes`` order) and ``values`` cover those rows.
    """

    __slots__ = ("size", "ok", "errors", "classes", "labels", "probabilities", "values")
    _fields = __slots__
    size: int
    ok: np.ndarray
    errors: list[InputError]
    classes: tuple[Any, ...]
    labels: np.ndarray | None
    probabilities: np.ndarray | None
    values: np.ndarray | None

    def __init__(
        self,
        size: int,
        ok: np.ndarray,
        errors: list[InputError],
        classes: tuple[Any, ...],
        labels: np.ndarray | None = None,
        probabilities: np.ndarray | None = None,
        values: np.ndarray | None = None,
    ) -> None:
        s = object.__setattr__
        s(self, "size", size)
        s(self, "ok", ok)
        s(self, "errors", errors)
        s(self, "classes", classes)
        s(self, "labels", labels)
        s(self, "probabilities", probabilities)
        s(self, "values", values)

    @property
    def predicted(self) -> int:
        return int(self.ok.size)

    def prediction(self, k: int) -> Prediction:
        """The :class:`Prediction` of the ``k``-th predicted row (not the ``k``-th input row)."""
        if self.values is not None:
            return _valued(self.values[k : k + 1])
        assert self.labels is not None and self.probabilities is not None
        return _classified(self.classes, self.labels[k], self.probabilities[k])

    def __iter__(self) -> Iterator[Prediction | InputError]:
        """Every input row in input order: its prediction, or the error that stopped it."""
        return self.in_order(self.prediction(k) for k in range(self.ok.size))

    def records(self) -> list[dict[str, Any]]:
        """JSON-ready outputs in input order: ``{"label", "probabilities"}`` or ``{"value"}``,
        and ``{"error", "row", "field"}`` for a row that failed validation."""
        outs: list[dict[str, Any]]
        if self.values is not None:
            outs = [{"value": v} for v in json_floats(self.values)]
        else:
            assert self.labels is not None and self.probabilities is not None
            names = [str(c) for c in self.classes]
            outs = [
                {"label": label, "probabilities": dict(zip(names, p))}
                for label, p in zip(self.labels.tolist(), json_floats(self.probabilities))
            ]
        if not self.errors:  # every row predicted: already in input order (no merge per row)
            return outs
        return [x if isinstance(x, dict) else error_record(x) for x in self.in_order(outs)]

    def in_order(self, outputs: Iterable[T]) -> Iterator[T | InputError]:
        """Merge per-predicted-row ``outputs`` with the errors, in input row order."""
        errors = iter(self.errors)
        ok = iter(self.ok.tolist())
        next_ok = next(ok, None)
        out = iter(outputs)
        for pos in range(self.size):
            if pos == next_ok:
                yield next(out)
                next_ok = next(ok, None)
            else:
                yield next(errors)


class Model:
    """A bundle's model behind input validation; thread-safe, session created once."""

    def __init__(self, bundle: Bundle, *, threads: int | None = None, recorder: Recorder | None = None) -> None:
        if not bundle.verified:
            bundle.verify()
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.schema = Schema(self.manifest.features, self.manifest.missing, self.manifest.datetimes)
        where = f"{bundle.location}/{bundle.model_file}"
        if self.manifest.layout == "matrix" and not self.schema.all_numeric:
            raise BundleError(f"{bundle.location}/manifest.json: input.layout 'matrix' needs numeric features only")
        session = create_session(bundle.read(bundle.model_file), where, threads)
        self._sig: Signature = bind(self.manifest, session, where)
        self._run = runner(session)
        self._session = session
        self._threads_chosen = threads is not None
        self._batch_run: Any = None  # the multi-threaded runner, made on the first large batch
        self._batch_session: Any = None  # its session (tests read its options)
        self._batch_lock = threading.Lock()
        self.classes: tuple[Any, ...] = tuple(self.manifest.classes)
        self._class_pos = {c: i for i, c in enumerate(self.classes)}
        self._code_arrays = {c: _frozen_code(i) for c, i in self._class_pos.items()}
        self._has_numeric = bool(self.schema.numeric)
        self._classifier = self.manifest.task != "regression"
        self._outputs = self._sig.outputs
        self._matrix_input = self._sig.matrix_input  # input name when one float32 matrix feeds the model
        names = self.schema.names
        self._numeric_inputs = [(j, names[i]) for j, i in enumerate(self.schema.numeric)]
        self._categorical_inputs = [names[i] for i in self.schema.categorical]
        self._fast = self._fast_matrix if self._matrix_input is not None else self._fast_columns
        # The shape of a 1-D row that may take predict_proba's inlined path (never, without a matrix input).
        self._row_shape = (self.schema.width,) if self._matrix_input is not None else (-1,)
        self._recorder = recorder
        # The single-row path calls the agent's lean entry point when the recorder has one.
        self._record_row: Any = None if recorder is None else getattr(recorder, "record_row", recorder.record)
        # A classifier's single rows go straight into the agent recorder's row_sink list (no call
        # into the recorder, no label -> code lookup per row) while the list is shorter than the
        # recorder's sink_cap and the call began before its sink_until (the window's end or next
        # checkpoint while it rolls windows itself); else record_row, or record when full or due.
        sink = getattr(recorder, "row_sink", None) if self._classifier else None
        self._sink: list[Any] | None = None if sink is None else sink(self._class_pos)
        self._sink_owner: Any = recorder
        # Single rows ask onnxruntime for the one output the call returns (labels or values for
        # predict, probabilities for predict_proba without a recorder): turning an output into
        # a numpy array (an object array of class names, for labels) is part of every run.
        self._first_out = self._outputs[:1]
        self._proba_out = self._outputs[1:2]
        # A dict row of a matrix model goes straight to a float32 array (Schema.dict_row).
        self._dict_row: Any = self.schema.dict_row if self._matrix_input is not None else None
        self._inputs: list[np.ndarray] = []  # reusable [1, F] inputs for predict_proba of a dict row
        # predict_proba of one row: (run, input row, input bytes, output row, output bytes)
        # sets made by _new_bound, one per thread in flight; None where the output cannot be bound.
        self._bound: list[_Bound] | None = [] if self._bindable() else None
        # With a recorder, predict_proba of one row runs bound as well, where the build proved the
        # model's label is the class of its highest probability (parity.label_is_argmax): the row's
        # input and probabilities go to the recorder's proba_sink as bytes, and its flush takes the
        # classes from the probabilities (no label output asked for, no label looked up per row).
        proba_sink = getattr(recorder, "proba_sink", None)
        self._proba_sink: list[Any] | None = None
        if proba_sink is not None and self._bound is not None and self._label_is_argmax():
            self._proba_sink = proba_sink(len(self.classes))

    # ------------------------------------------------------------------ facts

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def content_hash(self) -> str:
        return self.manifest.content_hash

    @property
    def feature_names(self) -> tuple[str, ...]:
        """What a row holds: the model's features, a datetime column in place of its parts."""
        return self.schema.input_names

    @property
    def threads(self) -> int:
        return int(self._session.get_session_options().intra_op_num_threads)

    # ------------------------------------------------------------------ strict API

    def predict(self, X: Any) -> Any:
        """Labels (classification) or values (regression): one for a row, an array for a batch."""
        record = self._record_row
        t0 = _clock() if record is not None else 0.0
        if type(X) is dict and self._dict_row is not None:
            # The common single row of a matrix model, inlined: every call layer costs ~0.1 µs
            # of a ~4 µs linear model. The array is built from immutable bytes: the recorder
            # may keep it as it is.
            x = self._dict_row(X)
            if x is not None:
                try:
                    out = self._run(self._first_out, {self._matrix_input: x}, None)[0]
                except Exception as exc:
                    raise self._failed(exc) from None
                value = out.item()  # the label or value, also the key of its code array
                if record is not None:
                    rows = self._sink
                    if rows is not None and len(rows) < self._sink_owner.sink_cap and t0 < self._sink_owner.sink_until:
                        rows.extend((x, (), value, _clock() - t0))
                    else:
                        if rows is not None and self._sink_owner.sink_cap:
                            record = self._sink_owner.record  # the sink is full: record flushes it
                        record(x, (), self._code_arrays[value] if self._classifier else out.reshape(-1), _clock() - t0)
                return value
        fast = self._fast(X)
        if fast is not None:
            return self._run_one(fast, t0, self._first_out)[0].item()
        result, single = self._strict(X, t0, self._first_out)
        if self._classifier:
            assert result.labels is not None
            return _plain(result.labels[0]) if single else result.labels
        assert result.values is not None
        return float(result.values[0]) if single else result.values

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in :attr:`classes` order: ``[C]`` for a row, ``[N, C]`` for a batch."""
        if not self._classifier:
            raise TypeError(f"model {self.name!r} is a regression model: it has no class probabilities")
        bound = self._bound
        if bound is not None and self._recorder is None:
            # The leanest paths, inlined (every call layer costs ~0.1 µs of a ~4 µs linear
            # model): a float32 row whose values are all finite (Schema.fast_row's rule; a NaN
            # in a nullable feature takes the general path below), or a dict of finite floats
            # (Schema.dict_row), written into a bound input and run into a bound output
            # (session.bound_row). One binding per thread in flight: the list's pop and
            # append are atomic; the output is copied out before the binding goes back.
            if type(X) is np.ndarray:
                if X.dtype is _F32 and X.shape == self._row_shape and math.isfinite(X.dot(X)):
                    try:  # not `pop() if bound`: another thread may take the last one in between
                        slot = bound.pop()
                    except IndexError:
                        slot = self._new_bound()
                    slot[1][...] = X
                    try:
                        slot[0]()
                        return slot[3].copy()
                    except Exception as exc:
                        raise _inference_failed(exc, 1) from None
                    finally:
                        bound.append(slot)
            elif type(X) is dict:
                try:
                    slot = bound.pop()
                except IndexError:
                    slot = self._new_bound()
                try:
                    if self.schema.dict_row_into(X, slot[2]):
                        try:
                            slot[0]()
                        except Exception as exc:
                            raise _inference_failed(exc, 1) from None
                        return slot[3].copy()
                finally:
                    bound.append(slot)
        elif (
            (sunk := self._proba_sink) is not None
            and len(sunk) < self._sink_owner.sink_cap
            and (t0 := _clock()) < self._sink_owner.sink_until
        ):
            # The first branch with a recorder (see _proba_sink): the input's and the
            # probabilities' bytes go to the sink, copied out before the binding goes back.
            if type(X) is dict:
                try:
                    slot = bound.pop()  # type: ignore[union-attr]  # _proba_sink is only set with a binding
                except IndexError:
                    slot = self._new_bound()
                try:
                    if self.schema.dict_row_into(X, slot[2]):
                        try:
                            slot[0]()
                        except Exception as exc:
                            raise self._failed(exc) from None
                        sunk.extend((slot[2].tobytes(), (), slot[4].tobytes(), _clock() - t0))
                        return slot[3].copy()
                finally:
                    bound.append(slot)  # type: ignore[union-attr]
            elif type(X) is np.ndarray and X.dtype is _F32 and X.shape == self._row_shape and math.isfinite(X.dot(X)):
                try:
                    slot = bound.pop()  # type: ignore[union-attr]
                except IndexError:
                    slot = self._new_bound()
                slot[1][...] = X
                try:
                    slot[0]()
                    sunk.extend((slot[2].tobytes(), (), slot[4].tobytes(), _clock() - t0))
                    return slot[3].copy()
                except Exception as exc:
                    raise self._failed(exc) from None
                finally:
                    bound.append(slot)  # type: ignore[union-attr]
        elif self._recorder is None and self._matrix_input is not None:
            # The same rows where the model's output cannot be bound (see _bindable).
            x = None
            if type(X) is np.ndarray:
                if X.dtype is _F32 and X.shape == self._row_shape and math.isfinite(X.dot(X)):
                    x = X[None]
            elif type(X) is dict:
                # Packed into an input array taken from a pool (one per thread in flight; the
                # list's pop and append are atomic), not into a new array per row.
                pool = self._inputs
                try:
                    x = pool.pop()
                except IndexError:
                    x = np.empty((1, self.schema.width), np.float32)
                if self.schema.dict_row_into(X, x):
                    try:
                        return self._run(self._proba_out, {self._matrix_input: x}, None)[0][0]  # type: ignore[no-any-return]
                    except Exception as exc:
                        raise _inference_failed(exc, 1) from None
                    finally:
                        pool.append(x)
                pool.append(x)
                x = None
            if x is not None:
                try:
                    return self._run(self._proba_out, {self._matrix_input: x}, None)[0][0]  # type: ignore[no-any-return]
                except Exception as exc:
                    raise _inference_failed(exc, 1) from None
        t0 = _clock() if self._recorder is not None else 0.0
        if type(X) is dict and self._dict_row is not None and self._recorder is not None:
            # A recorder wants the label too: one run for both outputs, inlined as in predict
            # (the row's array is made from immutable bytes, so the recorder keeps it as it is).
            x = self._dict_row(X)
            if x is not None:
                try:
                    out = self._run(self._outputs, {self._matrix_input: x}, None)
                except Exception as exc:
                    raise self._failed(exc) from None
                rows = self._sink
                # With a proba sink, a row it could take gets here only when it is full: record
                # flushes it (the row sink would only fill up as well, the slow path for twice as long).
                if (rows is not None and len(rows) < self._sink_owner.sink_cap and t0 < self._sink_owner.sink_until
                        and self._proba_sink is None):
                    rows.extend((x, (), out[0].item(), _clock() - t0))
                else:
                    record = self._record_row
                    if rows is not None and self._sink_owner.sink_cap:
                        record = self._sink_owner.record  # the sink is full: record flushes it
                    record(x, (), self._code_arrays[out[0].item()], _clock() - t0)
                return out[1][0]  # type: ignore[no-any-return]
        fast = self._fast(X)
        if fast is not None:
            return self._run_one(fast, t0, self._outputs)[1][0]
        result, single = self._strict(X, t0, self._proba_out if self._recorder is None else self._outputs)
        assert result.probabilities is not None
        return result.probabilities[0] if single else result.probabilities

    def predict_one(self, row: Any) -> Prediction:
        """One row as a :class:`Prediction` (label and probabilities by class name, or value)."""
        if not _is_single(row):
            raise InputError("predict_one takes one row (a dict, a list of values or a 1-D array), got a batch")
        t0 = _clock() if self._recorder is not None else 0.0
        fast = self._fast(row)
        if fast is None:
            return self._strict(row, t0)[0].prediction(0)
        out = self._run_one(fast, t0, self._outputs)
        if self._classifier:
            return _classified(self.classes, out[0][0], out[1][0])
        return _valued(out[0].reshape(-1))

    # ------------------------------------------------------------------ tolerant API

    def predict_rows(self, rows: Any, start: int = 0) -> BatchResult:
        """Predict every valid row of a batch; invalid rows come back as errors (never raised).

        Rows are numbered from ``start`` in errors. A 2-D numeric array is validated as a
        whole; anything else is a sequence of rows.
        """
        t0 = _clock() if self._recorder is not None else 0.0
        batch = self._validate(rows, start)
        return self._infer(batch, t0)

    def predict_batch(self, batch: Batch) -> BatchResult:
        """Predict an already validated :class:`Batch` (e.g. columns from a CSV reader)."""
        return self._infer(batch, _clock() if self._recorder is not None else 0.0)

    def predict_all(self, batch: Batch) -> BatchResult:
        """Predict a validated batch only if every row passed: all rows or none.

        For protocols whose answer has no slot for a per-row error (MLflow's
        ``/invocations``, KServe v2 tensors). Invalid rows are reported to the recorder
        as on every other path; the first one is raised, with how many failed.
        """
        if batch.errors:
            if self._recorder is not None:
                self._recorder.record_error("validation", len(batch.errors))
            first = batch.errors[0]
            more = f" ({len(batch.errors)} of {batch.size} rows invalid; nothing predicted)" if batch.size > 1 else ""
            raise InputError(f"{first}{more}", row=first.row, field=first.field)
        return self.predict_batch(batch)

    # ------------------------------------------------------------------ internals

    def _validate(self, rows: Any, start: int | None) -> Batch:
        if _frame.is_frame(rows):
            columns, size = _frame.frame_columns(rows, self.schema.inputs)
            return self.schema.columns(columns, size, start)
        if isinstance(rows, np.ndarray):
            if rows.ndim == 2:
                batch = self.schema.matrix(rows, start)
                if self._recorder is not None and batch.numeric is not None and np.shares_memory(batch.numeric, rows):
                    # The recorder keeps arrays until its next flush: never hand it the caller's buffer.
                    batch = batch.replace(numeric=batch.numeric.copy())
                return batch
            if rows.ndim != 1:
                raise InputError(f"expected a 1-D array (one row) or a 2-D array (a batch), got {rows.ndim}-D")
        elif isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
            raise InputError(
                "expected a row (an object, a list of values, a 1-D array) or a batch"
                f" (a list of rows, a 2-D array), got {type(rows).__name__}"
            )
        return self.schema.rows(rows, start)

    def _strict(self, X: Any, t0: float, outputs: list[str] | None = None) -> tuple[BatchResult, bool]:
        if _frame.is_series(X):
            X = _frame.series_row(X, self.schema.inputs)
        single = _is_single(X)
        batch = self._validate([X] if single else X, None if single else 0)
        if batch.errors:
            if self._recorder is not None:
                self._recorder.record_error("validation", len(batch.errors))
            raise batch.errors[0]
        return self._infer(batch, t0, outputs), single

    def _infer(self, batch: Batch, t0: float, outputs: list[str] | None = None) -> BatchResult:
        """Run the valid rows of ``batch``. ``outputs`` (default: all) may ask for labels/values
        only, or for probabilities only when no recorder wants the labels; the result then
        holds ``None`` for what was not asked (``predict`` and ``predict_proba`` read one)."""
        recorder = self._recorder
        if recorder is not None and batch.errors:
            recorder.record_error("validation", len(batch.errors))
        if batch.rows == 0:
            return self._empty(batch)
        outputs = self._outputs if outputs is None else outputs
        try:
            run = self._run if batch.rows < BATCH_THREADS_ROWS or self._threads_chosen else self._large_batch_runner()
            out = run(outputs, self._feeds(batch), None)
        except BundleError:
            raise
        except Exception as exc:
            if recorder is not None:
                recorder.record_error("runtime", batch.rows)
            raise _inference_failed(exc, batch.rows) from None
        if not self._classifier:
            result = BatchResult(batch.size, batch.ok, batch.errors, self.classes, values=out[0].reshape(-1))
        elif outputs is self._proba_out:
            result = BatchResult(batch.size, batch.ok, batch.errors, self.classes, probabilities=out[0])
        else:
            probabilities = out[1] if len(out) > 1 else None
            result = BatchResult(batch.size, batch.ok, batch.errors, self.classes, labels=out[0], probabilities=probabilities)
        if recorder is not None:
            recorder.record(batch.numeric, batch.categorical, self._prediction_codes(result), _clock() - t0)
        return result

    def _large_batch_runner(self) -> Any:
        """The runner for large batches: a spinning session with one thread per usable physical core (made once)."""
        if self._batch_run is None:
            with self._batch_lock:
                if self._batch_run is None:
                    n = batch_threads()
                    if n <= 1:
                        self._batch_run = self._run
                    else:
                        where = f"{self.bundle.location}/{self.bundle.model_file}"
                        session = create_session(self.bundle.read(self.bundle.model_file), where, n, spinning=True)
                        self._batch_run = runner(session)
                        self._batch_session = session
        return self._batch_run

    @property
    def large_batch_threads(self) -> int:
        """Intra-op threads a batch of :data:`BATCH_THREADS_ROWS` rows or more runs with."""
        return self.threads if self._threads_chosen else max(self.threads, batch_threads())

    def _bindable(self) -> bool:
        """Whether a single row's probabilities can be run into a bound ``[1, C]`` float32 array:
        a classifier with one matrix input whose probabilities output declares ``C`` columns
        (bind checked the type) and a batch axis that takes one row."""
        if not self._classifier or self._matrix_input is None:
            return False
        shape = next(o.shape for o in self._session.get_outputs() if o.name == self._proba_out[0])
        rows = shape[0] if len(shape) == 2 else 0
        return len(shape) == 2 and shape[1] == len(self.classes) and (rows is None or rows == 1 or isinstance(rows, str))

    def _label_is_argmax(self) -> bool:
        """The build's proof that every compared row's label was its top class (bundles built
        before it have no such field: their recorder takes labels from the model)."""
        parity = self.manifest.data.get("parity")
        return isinstance(parity, dict) and parity.get("label_is_argmax") is True

    def _new_bound(self) -> _Bound:
        """A binding for one row's probabilities (the first call, or one more thread in flight)."""
        run, x, out = bound_row(self._session, self._matrix_input, self.schema.width, self._proba_out[0], len(self.classes))  # type: ignore[arg-type]
        return run, x[0], memoryview(x).cast("B"), out[0], memoryview(out).cast("B")

    def _fast_matrix(self, X: Any) -> _FastRow | None:
        x = self.schema.fast_row(X)
        if x is None:
            return None
        # x is the caller's own buffer only for a float32 array (anything else was converted).
        return {self._matrix_input: x}, x, [], type(X) is not np.ndarray or X.dtype is not _F32  # type: ignore[dict-item]

    def _fast_columns(self, X: Any) -> _FastRow | None:
        got = self.schema.fast_columns(X)
        if got is None:
            return None
        x, cats = got
        feeds = {name: x[:, j : j + 1] for j, name in self._numeric_inputs}
        for name, v in zip(self._categorical_inputs, cats):
            feeds[name] = np.array([[v]], dtype=object)
        return feeds, x, [[v] for v in cats], True

    def _run_one(self, fast: _FastRow, t0: float, outputs: list[str]) -> list[np.ndarray]:
        """Run one validated row for ``outputs`` (the first is always labels or values)."""
        try:
            out: list[np.ndarray] = self._run(outputs, fast[0], None)
        except Exception as exc:
            raise self._failed(exc) from None
        if self._record_row is not None:
            numeric = fast[1] if fast[3] else fast[1].copy()  # never keep the caller's buffer
            if not self._has_numeric:
                numeric = None
            rows = self._sink
            if rows is not None and len(rows) < self._sink_owner.sink_cap and t0 < self._sink_owner.sink_until:
                rows.extend((numeric, fast[2], out[0][0], _clock() - t0))
            else:
                # A shared read-only [code] array per class: no array made per call.
                codes = self._code_arrays[out[0][0]] if self._classifier else out[0].reshape(-1)
                record = self._record_row
                if rows is not None and self._sink_owner.sink_cap:
                    record = self._sink_owner.record  # the sink is full: record flushes it
                record(numeric, fast[2], codes, _clock() - t0)
        return out

    def _failed(self, exc: BaseException) -> InferenceError:
        """A single row's run failed: count it (with a recorder) and say what onnxruntime said."""
        if self._recorder is not None:
            self._recorder.record_error("runtime", 1)
        return _inference_failed(exc, 1)

    def _feeds(self, batch: Batch) -> dict[str, np.ndarray]:
        if self._matrix_input is not None:
            return {self._matrix_input: batch.numeric}
        feeds: dict[str, np.ndarray] = {}
        names = self.schema.names
        if batch.numeric is not None:
            for j, i in enumerate(self.schema.numeric):
                feeds[names[i]] = np.ascontiguousarray(batch.numeric[:, j : j + 1])
        for k, i in enumerate(self.schema.categorical):
            column = np.empty((batch.rows, 1), dtype=object)
            column[:, 0] = batch.fed[k]
            feeds[names[i]] = column
        return feeds

    def _empty(self, batch: Batch) -> BatchResult:
        if self._classifier:
            return BatchResult(
                batch.size,
                batch.ok,
                batch.errors,
                self.classes,
                labels=np.array([], dtype=self._sig.label_dtype),
                probabilities=np.zeros((0, len(self.classes)), dtype=np.float32),
            )
        return BatchResult(batch.size, batch.ok, batch.errors, self.classes, values=np.zeros(0, dtype=np.float32))

    def code(self, prediction: Prediction) -> float:
        """One prediction as the feedback join stores it: class index, or the value."""
        if prediction.value is not None:
            return float(prediction.value)
        return float(self._class_pos[prediction.label])

    def codes(self, result: BatchResult) -> np.ndarray:
        """The predicted rows of ``result`` as class indices or values (see :meth:`code`)."""
        return self._prediction_codes(result)

    def _prediction_codes(self, result: BatchResult) -> np.ndarray:
        """Class indices (classification) or values (regression), as the recorder wants them."""
        if result.values is not None:
            return result.values
        assert result.labels is not None
        # map over the dict's __getitem__: no generator frame per label (100 labels: 5.3 -> 3.8 us)
        return np.fromiter(map(self._class_pos.__getitem__, result.labels.tolist()), dtype=np.int64, count=result.labels.size)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.version!r}, task={self.task!r})"


def _classified(classes: Sequence[Any], label: Any, probabilities: np.ndarray) -> Prediction:
    """One row's label and probabilities (shortest repr of each float32: exact, readable)."""
    return Prediction(label=_plain(label), probabilities=dict(zip(classes, short_floats(probabilities))))


def _valued(value: np.ndarray) -> Prediction:
    """One row's regression value from a one-element array."""
    return Prediction(value=short_floats(value)[0])


def _frozen_code(i: int) -> np.ndarray:
    """``[i]`` as a read-only int64 array: one per class, handed to the recorder on every single-row call."""
    a = np.array([i], dtype=np.int64)
    a.flags.writeable = False
    return a


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (labels from an object array already are)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_single(X: Any) -> bool:
    """A dict, a 1-D array or a flat list of values is one row; a list of rows is a batch."""
    if isinstance(X, Mapping):
        return True
    if isinstance(X, np.ndarray):
        return X.ndim == 1
    if isinstance(X, (list, tuple)):
        return bool(X) and not isinstance(X[0], (Mapping, list, tuple, np.ndarray))
    return _frame.is_series(X)


def _inference_failed(exc: BaseException, rows: int) -> InferenceError:
    return InferenceError(f"onnxruntime failed on {rows} row{'s' if rows != 1 else ''}: {first_line(exc)}")


def open_model(
    path: str | os.PathLike[str], *, threads: int | None = None, recorder: Recorder | None = None
) -> Model:
    """Open, verify and load the bundle at ``path`` (a folder or an archive)."""
    return Model(Bundle.open(path), threads=threads, recorder=recorder)
