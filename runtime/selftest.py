"""``verify``: is this bundle intact, and does this CPU still compute what the build machine did?

Integrity is :meth:`Bundle.verify` (every file against the manifest). Then the golden
set — probe rows with the outputs scikit-learn gave at build time — is replayed
through onnxruntime here, through the same validation a request takes. A device whose
onnxruntime build, CPU arithmetic or files differ finds out before it serves a wrong
answer; the installer runs this before it switches versions.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlpack_edge.errors import ParityError
from mlpack_edge.runtime.golden import GoldenCheck, compare
from mlpack_edge.runtime.model import Model

__all__ = ["SelfTest", "self_test"]


@dataclass(frozen=True)
class SelfTest:
    """The outcome of :func:`self_test`; ``golden`` is ``None`` when the bundle has no golden set."""

    name: str
    version: str
    content_hash: str
    location: str
    files: int
    golden: GoldenCheck | None

    @property
    def passed(self) -> bool:
        return self.golden is None or self.golden.passed

    def describe(self) -> str:
        head = f"{self.name} {self.version} at {self.location}: {self.files} files match the manifest"
        tail = self.golden.describe() if self.golden is not None else "no golden set to replay"
        return f"{head}; {tail}"


def self_test(model: Model) -> SelfTest:
    """Replay the golden set of ``model``'s (already verified) bundle; never raises on a mismatch.

    A golden row the model refuses (the manifest and the golden set disagree) is a
    ``ParityError``: the bundle contradicts itself.
    """
    bundle = model.bundle
    golden = bundle.golden()
    check = None
    if golden is not None:
        result = model.predict_rows(golden.rows)
        if result.errors:
            raise ParityError(f"{bundle.location}/golden.json: the model refuses a probe row: {result.errors[0]}")
        check = compare(
            golden,
            labels=result.labels.tolist() if result.labels is not None else None,
            probabilities=result.probabilities,
            values=result.values,
        )
    return SelfTest(model.name, model.version, model.content_hash, bundle.location, len(model.manifest.files), check)
