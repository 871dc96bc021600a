"""One exception tree for every stage of mlpack.

Library code raises these; only command-line entry points turn them into
``click.ClickException`` (exit code 1, one line, no traceback). Anything that is
*not* an ``MlpackError`` is a bug and is allowed to show its traceback.

    MlpackError
    ├── SpecError            the spec file: missing, malformed TOML, unknown or invalid keys
    ├── DataError            the training CSV: missing file or column, bad values, empty, one class
    ├── TrainingError        resolving or fitting the estimator
    ├── GateError            one or more metric gates failed (carries every failed gate)
    ├── ConversionError      skl2onnx could not convert the fitted model
    ├── ParityError          ONNX output disagrees with scikit-learn beyond tolerance
    ├── PackagingError       writing the bundle or freezing the device executable
    ├── BundleError          a bundle cannot be opened or its manifest is malformed
    │   └── IntegrityError   a file is missing or tampered with, or the signature is bad
    ├── InputError           a row handed to the runtime does not match the input schema
    ├── InferenceError       onnxruntime failed while running a valid input
    ├── InstallError         installing, rolling back or uninstalling on a device
    ├── ServeError           the local HTTP server could not start (port in use, ...)
    ├── AgentError           the monitoring agent: configuration, outbox, upload
    │   ├── OutboxError      the on-disk outbox is unusable
    │   └── UploadError      the collector could not be reached or refused a batch
    ├── CollectorError       the central collector: configuration, storage
    │   └── StorageError     the database refused or failed an operation
    └── SigningKeyError      signing keys: generation, loading, trust

Every message is a single line that names the file, field or row at fault and
what was expected.
"""

from __future__ import annotations

__all__ = [
    "MlpackError",
    "SpecError",
    "DataError",
    "TrainingError",
    "GateError",
    "ConversionError",
    "ParityError",
    "PackagingError",
    "BundleError",
    "IntegrityError",
    "InputError",
    "InferenceError",
    "InstallError",
    "ServeError",
    "AgentError",
    "OutboxError",
    "UploadError",
    "CollectorError",
    "StorageError",
    "SigningKeyError",
]


class MlpackError(Exception):
    """Base of every error mlpack expects and explains (exit code 1 at the CLI)."""

    exit_code: int = 1


class SpecError(MlpackError):
    """The spec file is missing, is not valid TOML, or holds unknown or invalid keys."""


class DataError(MlpackError):
    """The training data cannot be used as the spec describes it."""


class TrainingError(MlpackError):
    """The estimator cannot be resolved, configured or fitted."""


class GateError(MlpackError):
    """Metric gates failed; ``failures`` lists ``(gate_text, measured_value)``.

    ``report`` is the failed build's model card (``<name>-<version>.failed.html``), when written.
    """

    def __init__(
        self, message: str, failures: list[tuple[str, float]] | None = None, report: str | None = None
    ) -> None:
        super().__init__(message)
        self.failures = list(failures or [])
        self.report = report


class ConversionError(MlpackError):
    """skl2onnx could not convert the fitted model."""


class ParityError(MlpackError):
    """The ONNX model disagrees with the fitted estimator beyond tolerance."""


class PackagingError(MlpackError):
    """Writing the bundle or freezing the device executable failed."""


class BundleError(MlpackError):
    """A bundle cannot be opened, or its manifest is malformed."""


class IntegrityError(BundleError):
    """A bundle file is missing or altered, or its signature does not verify."""


class InputError(MlpackError):
    """An input row does not match the model's schema.

    ``row`` is the 0-based row index within the request (``None`` for a single row)
    and ``field`` the feature at fault (``None`` when the row as a whole is wrong).
    """

    def __init__(self, message: str, row: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.field = field


class InferenceError(MlpackError):
    """onnxruntime failed on an input that passed validation."""


class InstallError(MlpackError):
    """Installing, switching, rolling back or uninstalling a model failed."""


class ServeError(MlpackError):
    """The local HTTP server could not start."""


class AgentError(MlpackError):
    """The monitoring agent cannot do what was asked."""


class OutboxError(AgentError):
    """The on-disk telemetry outbox is unusable."""


class UploadError(AgentError):
    """The collector could not be reached, or refused a batch."""


class CollectorError(MlpackError):
    """The collector cannot do what was asked."""


class StorageError(CollectorError):
    """The collector's database refused or failed an operation."""


class SigningKeyError(MlpackError):
    """A signing key cannot be generated, loaded or trusted."""
