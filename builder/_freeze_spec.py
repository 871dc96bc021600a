"""The PyInstaller recipe for the generic device runtime: one spec, two executables.

The spec freezes a *staged* copy of the device-side packages (never the editable
checkout, which PyInstaller cannot follow and which would drag in the builder) and
builds:

* an onedir app ``<distpath>/<name>/`` — launcher ``<name>`` + ``_internal/``: what an
  installed device runs from, with no unpacking on start;
* a onefile app ``<distpath>/<name>-onefile`` holding the same payload plus the onedir
  launcher as the data file ``_onedir_launcher``: what is downloaded. Its ``install``
  command copies ``sys._MEIPASS`` next to that launcher and gets the onedir app back.

Size: the training stack, the heavy optional parts of onnxruntime and standard-library
tooling a device never runs are excluded (:data:`EXCLUDES`; :func:`excluded_uses` proves
at build time that the runtime imports none of them); ELF libraries *and extension
modules* that still carry symbols or debug info are stripped (the standard library's
``lib-dynload`` modules ship with debug info: stripping them saves ~2 MB of the
download), except auditwheel-vendored libraries and OpenBLAS (both break);
``libonnxruntime.so`` (the C API library, ~35 MB) is dropped because the Python binding
is a self-contained extension module that never loads it. Python code is kept as plain
``.pyc`` files (``noarchive``) so the onedir launcher does not carry its own copy.

Bytecode is compiled at :data:`OPTIMIZE` (2: no docstrings, no ``assert``) and the frozen
interpreter runs with the same level (``-OO``: numpy then skips attaching its ~2 MB of
``add_newdoc`` texts): an idle ``serve`` holds ~2 MB less. The exception is every device module
that imports click (:func:`docstring_modules`): click makes a command's ``--help`` from its
function's docstring, so those are compiled at level 1 (docstrings kept, ``assert`` still off).
The runtime's ``assert`` statements only narrow types for the type checker.

Reproducibility: the spec text is a pure function of its parameters, the bytecode
optimisation level is pinned (:data:`OPTIMIZE`, whatever ``PYTHONOPTIMIZE`` says), and the
spec writes the list of every file the frozen bytes are made from (``inputs``) so the
build cache can tell when a system library, a distribution or a tool changed under a
cached runtime (see :mod:`mlpack_edge.builder._freeze`).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence

from mlpack_edge.runtime.embedded import LAUNCHER_DATA_NAME

__all__ = [
    "FACTS_NAME",
    "EXCLUDES",
    "KEEP_UNSTRIPPED",
    "DROP_BINARIES",
    "OPTIMIZE",
    "DOCSTRING_OPTIMIZE",
    "docstring_modules",
    "excluded_uses",
    "render_spec",
]

#: Modules that must never be frozen into a device executable (training stack, web stack,
#: mlpack's workstation parts) or that the runtime never needs.
EXCLUDES: tuple[str, ...] = (
    "sklearn",
    "scipy",
    "pandas",
    "onnx",
    "skl2onnx",
    "joblib",
    "threadpoolctl",
    "matplotlib",
    "PIL",
    "IPython",
    "sympy",
    "torch",
    "tkinter",
    "_tkinter",
    "pytest",
    "setuptools",
    "pkg_resources",
    "distutils",
    "lib2to3",
    "pydoc_data",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "httpx",
    "psycopg",
    "cryptography",
    "mlpack_edge.builder",
    "mlpack_edge.collector",
    "mlpack_edge.cli",
    "onnxruntime.quantization",
    "onnxruntime.transformers",
    "onnxruntime.tools",
    "onnxruntime.backend",
    "onnxruntime.datasets",
    "numpy.f2py",
    "numpy.distutils",
    # numpy's own PyInstaller hook adds it as a hidden import; only numpy's tests use it.
    "numpy._core._multiarray_tests",
    # PyYAML (2.7 MB unstripped extension + pure modules): only numpy.show_config() imports it,
    # inside the function (it prints JSON without it); the runtime never calls it.
    "yaml",
    # Imported only under ``if TYPE_CHECKING`` (click, numpy._typing).
    "typing_extensions",
    # Loaded lazily by numpy 2 and never by the runtime (a build-time check enforces it).
    "numpy.random",
    "numpy.ma",
    "numpy.testing",
    "numpy.fft",
    "numpy.polynomial",
    # Standard-library tooling a device never runs.
    "unittest",
    "pydoc",
    "doctest",
    "pdb",
    "asyncio",
    "multiprocessing",
    "xmlrpc",
    # Imported only inside other modules' command-line main() functions (argparse, getopt,
    # py_compile, pprint) or by paths the device never takes: ftp:// URLs (ftplib, netrc),
    # cookie handling (http.cookiejar), click.launch (webbrowser), and warnings' optional
    # "enable tracemalloc" hint (tracemalloc; its ImportError is caught).
    "argparse",
    "getopt",
    "py_compile",
    "pprint",
    "ftplib",
    "netrc",
    "http.cookiejar",
    "webbrowser",
    "tracemalloc",
    # Only reached through random._test() -> statistics -> fractions/decimal (0.8 MB).
    "statistics",
    "fractions",
    "decimal",
    "_decimal",
    "_pydecimal",
    # Optional compressors: shutil, tarfile and zipfile work without them (ImportError is handled).
    "bz2",
    "_bz2",
    "lzma",
    "_lzma",
    # East-Asian legacy codecs (0.5 MB): the app runs in UTF-8 mode (see render_spec),
    # so neither the locale nor the runtime's own I/O ever asks for them.
    "_codecs_cn",
    "_codecs_hk",
    "_codecs_iso2022",
    "_codecs_jp",
    "_codecs_kr",
    "_codecs_tw",
    "_multibytecodec",
)

#: Binaries left unstripped (regex on the destination path): auditwheel-vendored libraries
#: (patchelf'd; strip corrupts them: "ELF load command address/offset not page-aligned")
#: and OpenBLAS (stripping it makes numpy crash).
KEEP_UNSTRIPPED = r"\.libs/|openblas"

#: Bytecode optimisation level of the frozen modules and of the frozen interpreter (``-OO``).
OPTIMIZE = 2
#: Level of the modules whose docstrings are read at run time (:func:`docstring_modules`):
#: docstrings kept, ``assert`` off as everywhere else.
DOCSTRING_OPTIMIZE = 1

#: Data file inside every runtime naming what it was frozen from (versions, sources digest).
FACTS_NAME = "mlpack_runtime.json"

#: Binaries left out (regex on the destination path).
DROP_BINARIES = r"^onnxruntime/capi/libonnxruntime\.so"

_TEMPLATE = r'''
# Generated by mlpack_edge.builder._freeze_spec -- do not edit; the build cache keys on its source.
import os
import re
import shutil
import struct
import subprocess

_P = json_loads({params!r})


def _has_symbols(path):
    """True for an ELF file that still carries a symbol table or debug info."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:  # 64-bit little-endian only
                return False
            shoff, = struct.unpack_from("<Q", head, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
            fh.seek(shoff)
            table = fh.read(shentsize * shnum)
            _, _, _, _, stroff, strsize = struct.unpack_from("<IIQQQQ", table, shstrndx * shentsize)
            fh.seek(stroff)
            names = fh.read(strsize)
    except (OSError, struct.error, IndexError):
        return False
    return b"\0.symtab\0" in names or b"\0.debug_info\0" in names


def _slim(binaries):
    """Drop unused libraries and strip the rest (a copy: never the installed originals).

    Extension modules are stripped too (the standard library's carry debug info). Left
    alone: libraries vendored by auditwheel (``*.libs/``; patchelf rewrote them and strip
    corrupts them), OpenBLAS, and anything already stripped.
    """
    strip = shutil.which("strip")
    keep = re.compile(_P["keep_unstripped"])
    drop = re.compile(_P["drop"])
    out = []
    for dest, src, kind in binaries:
        posix = dest.replace(os.sep, "/")
        if drop.search(posix):
            continue
        if strip and kind in ("BINARY", "EXTENSION") and not keep.search(posix) and _has_symbols(src):
            target = os.path.join(workpath, "stripped", dest)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(src, target)
            os.chmod(target, 0o755)
            if subprocess.run([strip, target], capture_output=True).returncode == 0:
                src = target
        out.append((dest, src, kind))
    return out


def _write_inputs(analysis, tools):
    """List every file outside this build's scratch folder that the frozen bytes come from.

    Collected libraries and data files, the source of every frozen module, and the tools
    that rewrite bytes (strip, objcopy). The build cache fingerprints them to detect a
    cached runtime that a fresh freeze would no longer reproduce.
    """
    modules = getattr(analysis, "_modules_outside_pyz", None)
    if modules is None:
        raise SystemExit("mlpack: this PyInstaller does not list the frozen modules' sources; update _freeze_spec.py")
    scratch = os.path.join(os.path.abspath(_P["scratch"]), "")
    found = set(t for t in tools if t)
    for toc in (analysis.binaries, analysis.datas, analysis.pure, modules):
        for _dest, src, kind in toc:
            if kind == "SYMLINK" or not src or src == "-":
                continue
            src = os.path.abspath(src)
            if not src.startswith(scratch) and os.path.isfile(src):
                found.add(src)
    with open(_P["inputs"], "w", encoding="utf-8") as fh:
        json_dump(sorted(found), fh, indent=0)


def _write_facts(path):
    """What this runtime was frozen from, as a data file inside it (read by ``mlpack runtime import``)."""
    import importlib.metadata
    import platform
    import sys

    facts = dict(python="%d.%d.%d" % sys.version_info[:3], machine=platform.machine(), sources=_P["sources"])
    for dist in ("numpy", "onnxruntime"):
        facts[dist] = importlib.metadata.version(dist)
    with open(path, "w", encoding="utf-8") as fh:
        json_dump(facts, fh, sort_keys=True)
    return path


_FACTS = _write_facts(os.path.join(_P["scratch"], _P["facts_name"]))

a = Analysis(
    [_P["script"]],
    pathex=[_P["stage"]],
    hiddenimports=_P["hiddenimports"],
    excludes=_P["excludes"],
    datas=[tuple(d) for d in _P["datas"]] + [(_FACTS, ".")],
    # Pinned: the default follows the building interpreter's -O / PYTHONOPTIMIZE.
    optimize=_P["optimize"],
    # Modules as plain .pyc files, not one PYZ: the onedir launcher then carries no copy
    # of the Python code (a PYZ lives inside each executable), which saves ~4 MB.
    noarchive=True,
)
_write_inputs(a, [shutil.which("strip"), shutil.which("objcopy")])
a.binaries = _slim(a.binaries)


def _with_docstrings(analysis, modules, level):
    """``analysis.datas`` with each of ``modules`` compiled again at ``level`` (click reads their docstrings).

    With ``noarchive`` every module is a ``.pyc`` data file that PyInstaller compiled at the
    spec's level; these few are recompiled from the same source by the same function, so
    the bytes are as reproducible as the rest.
    """
    from PyInstaller.building.utils import compile_pymodule

    sources = dict((name, src) for name, src, _kind in analysis._modules_outside_pyz)
    wanted = dict()
    for name in modules:
        if not sources.get(name, "").endswith(".py"):
            raise SystemExit("mlpack: no source for " + name + " among the frozen modules; update _freeze_spec.py")
        package = os.path.basename(sources[name]) == "__init__.py"
        dest = name.replace(".", "/") + ("/__init__" if package else "") + ".pyc"
        wanted[dest] = name
    out, found = [], set()
    for dest, src, kind in analysis.datas:
        name = wanted.get(dest.replace(os.sep, "/"))
        if name is not None:
            src = compile_pymodule(name, sources[name], os.path.join(workpath, "docpycs"), optimize=level)
            found.add(name)
        out.append((dest, src, kind))
    missing = sorted(set(modules) - found)
    if missing:
        raise SystemExit("mlpack: PyInstaller collected no .pyc for " + ", ".join(missing) + "; update _freeze_spec.py")
    return out


a.datas = _with_docstrings(a, _P["docstring_modules"], _P["docstring_optimize"])


def _glibc_floor(paths):
    """Highest GLIBC_x.y any of ``paths`` needs (mlpack's reader, staged next to this spec)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_mlpack_glibc", _P["glibc_reader"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.glibc_floor(paths)


def _marked_bootloader(source, floor):
    """A private copy of mlpack's bootloader whose glibc marker says ``floor`` (same size, in place)."""
    marker = _P["marker"].encode()
    data = open(source, "rb").read()
    at = data.find(marker)
    if at < 0:
        raise SystemExit("mlpack: the bootloader " + source + " has no glibc marker")
    slot = (marker + floor.encode()).ljust(_P["slot"], b"\0")
    target = os.path.join(workpath, "mlpack-bootloader", "run")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as fh:
        fh.write(data[:at] + slot + data[at + len(slot):])
    os.chmod(target, 0o755)
    return target


if _P["bootloader"]:
    if not hasattr(EXE, "_bootloader_file"):
        raise SystemExit("mlpack: this PyInstaller picks its bootloader differently; update _freeze_spec.py")
    _FLOOR = _glibc_floor([src for _d, src, _k in a.binaries + a.datas] + [_P["bootloader"]]) or "0.0"
    _BOOTLOADER = _marked_bootloader(_P["bootloader"], _FLOOR)

    class _MarkedEXE(EXE):
        """EXE built on mlpack's bootloader: refuses in one line below this runtime's glibc floor."""

        def _bootloader_file(self, exe, extension=None):
            return _BOOTLOADER

    EXE = _MarkedEXE
pyz = PYZ(a.pure)

# UTF-8 mode: CSV/JSON on stdin/stdout are UTF-8 whatever the device's locale says.
# One "O" per optimisation level: the interpreter runs as the bytecode was compiled (-OO).
options = [("X utf8_mode=1", None, "OPTION")] + [("O", None, "OPTION")] * _P["optimize"]

launcher = EXE(
    pyz, a.scripts, options, [], exclude_binaries=True, name=_P["name"],
    strip=False, upx=False, console=True,
)
COLLECT(launcher, a.binaries, a.datas, name=_P["name"], strip=False, upx=False)

EXE(
    pyz, a.scripts, options, a.binaries,
    a.datas + [(_P["launcher_data"], os.path.join(DISTPATH, _P["name"], _P["name"]), "DATA")],
    name=_P["name"] + "-onefile", strip=False, upx=False, console=True,
)
'''


def render_spec(
    *,
    name: str,
    script: str,
    stage: str,
    scratch: str,
    inputs: str,
    hiddenimports: Sequence[str],
    datas: Sequence[tuple[str, str]] = (),
    sources: str = "",
    bootloader: str = "",
    glibc_reader: str = "",
    docstring_modules: Sequence[str] = (),
) -> str:
    """The spec text: every input is a JSON literal, so the text is deterministic.

    ``scratch`` is the build's private folder (``script`` and ``stage`` live in it);
    the spec writes the JSON list of every other file it freezes to ``inputs``.
    ``sources`` (digest of the staged mlpack sources) goes into the runtime's facts file
    :data:`FACTS_NAME` with the Python, numpy and onnxruntime versions it was frozen with.
    ``bootloader`` (mlpack's patched one, :mod:`mlpack_edge.builder._bootloader`; empty: the
    stock one) is copied with its glibc marker set to the floor read by ``glibc_reader``
    (a copy of :mod:`mlpack_edge.builder._glibc`) over every collected file, and both
    executables are made from that copy. ``docstring_modules`` are compiled at
    :data:`DOCSTRING_OPTIMIZE`, every other module at :data:`OPTIMIZE`.
    """
    from mlpack_edge.builder._bootloader import _SLOT, MARKER

    params = {
        "name": name,
        "script": script,
        "stage": stage,
        "scratch": scratch,
        "inputs": inputs,
        "hiddenimports": sorted(hiddenimports),
        "excludes": list(EXCLUDES),
        "datas": [list(d) for d in sorted(datas)],
        "keep_unstripped": KEEP_UNSTRIPPED,
        "drop": DROP_BINARIES,
        "launcher_data": LAUNCHER_DATA_NAME,
        "facts_name": FACTS_NAME,
        "sources": sources,
        "bootloader": bootloader,
        "glibc_reader": glibc_reader,
        "marker": MARKER.decode(),
        "slot": _SLOT,
        "optimize": OPTIMIZE,
        "docstring_optimize": DOCSTRING_OPTIMIZE,
        "docstring_modules": sorted(docstring_modules),
    }
    text = json.dumps(params, sort_keys=True)
    return "from json import dump as json_dump, loads as json_loads\n" + _TEMPLATE.format(params=text)


def docstring_modules(sources: Mapping[str, bytes]) -> list[str]:
    """The staged modules that import click: click builds ``--help`` from their functions' docstrings.

    Any such module keeps its docstrings (a new command module is covered without a list to
    update); the slow tier checks each frozen command's ``--help`` still says what it does.
    """
    found = []
    for rel, data in sorted(sources.items()):
        if not rel.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(data, filename=rel)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            if any(n == "click" or n.startswith("click.") for n in names):
                parts = rel[: -len(".py")].split("/")
                found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
                break
    return found


def _is_excluded(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in EXCLUDES)


def excluded_uses(sources: Mapping[str, bytes]) -> list[str]:
    """``file:line module`` for every use of an excluded module in the staged sources.

    An excluded module the runtime does import would only fail on the device, at run
    time; this finds imports (also lazy ones and ``importlib.import_module("...")``)
    and ``np.<submodule>`` attribute use at build time instead.
    """
    found: list[tuple[str, int, str]] = []
    for rel, data in sorted(sources.items()):
        if not rel.endswith(".py"):
            continue
        try:
            tree = ast.parse(data, filename=rel)
        except SyntaxError as exc:
            found.append((rel, exc.lineno or 0, f"(cannot parse: {exc.msg})"))
            continue
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if not _is_excluded(node.module):
                    names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
                arg = node.args[0]
                names = [arg.value] if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else []
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in ("np", "numpy"):
                    names = [f"numpy.{node.attr}"]
            found += [(rel, getattr(node, "lineno", 0), n) for n in names if _is_excluded(n)]
    return [f"{rel}:{line} {what}" for rel, line, what in sorted(found)]


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )
