"""``info``: a manifest as a few lines a person reads on a device's console."""

from __future__ import annotations

from typing import Any

from mlpack_edge.runtime.manifest import Feature, Manifest

__all__ = ["describe_manifest"]

_TASK = {"binary": "binary classification", "multiclass": "multiclass classification", "regression": "regression"}


def _feature(f: Feature) -> str:
    text = f.kind
    if f.kind == "categorical":
        shown = ", ".join(f.categories[:8]) + (", ..." if len(f.categories) > 8 else "")
        text += f" [{shown}] ({len(f.categories)} categories; unseen -> {f.unseen})"
    return text + (", nullable" if f.nullable else "")


def _number(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def describe_manifest(manifest: Manifest, location: str) -> str:
    d = manifest.data
    lines = [f"{manifest.name} {manifest.version} ({_TASK.get(manifest.task, manifest.task)})"]
    for key in ("description", "owner", "intended_use"):
        if d.get(key):
            lines.append(f"  {key.replace('_', ' ')}: {d[key]}")
    lines.append(f"  content hash: {manifest.content_hash}")
    lines.append(f"  bundle: {location}")
    width = max(len(f.name) for f in manifest.features)
    lines.append(f"  input: {len(manifest.features)} features ({manifest.layout} layout)")
    lines += [f"    {f.name:<{width}}  {_feature(f)}" for f in manifest.features]
    for dt in manifest.datetimes:  # rows carry the date itself; the device derives these parts
        parts = ", ".join(f"{dt['name']}_{p}" for p in dt["parts"])
        lines.append(f"    ({dt['name']}: a date/time, format {dt['format']}, sent as it is; derived into {parts})")
    if manifest.classes:
        lines.append(f"  classes: {', '.join(map(str, manifest.classes))}")
    if d.get("metrics"):
        lines.append("  metrics: " + ", ".join(f"{k} {_number(v)}" for k, v in sorted(d["metrics"].items())))
    for gate in d.get("gates") or []:
        verdict = "passed" if gate.get("passed") else "FAILED"
        lines.append(f"  gate: {gate.get('gate')} ({_number(gate.get('value'))}) {verdict}")
    parity = d.get("parity") or {}
    if parity:
        lines.append("  parity: " + ", ".join(f"{k} {_number(v)}" for k, v in sorted(parity.items())))
    lines.append("  files: " + ", ".join(f"{name} ({digest[:12]})" for name, digest in sorted(manifest.files.items())))
    return "\n".join(lines)
