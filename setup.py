"""Package list and package data for setuptools, computed from the folders (metadata lives in
pyproject.toml).

The repository keeps one folder per part (``builder/``, ``runtime/``, ``monitor_agent/``,
``collector/``) and installs them as subpackages of ``mlpack_edge``. Listing packages by
hand once shipped a wheel without ``mlpack_edge.collector.storage``, and a glob like
``*.html`` once left ``collector/templates/page.html`` out (it is in a plain folder, not
a package); here every folder with an ``__init__.py`` below a part is a package, however
deep, and every file with a data suffix below it, at any depth, is its package data.
``tests/test_packaging.py`` builds the wheel and compares it with the source tree, so a file
with a suffix not listed in :data:`DATA_SUFFIXES` fails there instead of at a user's.
"""

from __future__ import annotations

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PARTS = {
    "mlpack_edge": "mlpack_edge",
    "mlpack_edge.builder": "builder",
    "mlpack_edge.runtime": "runtime",
    "mlpack_edge.monitor_agent": "monitor_agent",
    "mlpack_edge.collector": "collector",
}
#: Non-Python files that ship: templates, styles, scripts, SQL, documents, images.
DATA_SUFFIXES = (".html", ".css", ".js", ".sql", ".json", ".md", ".txt", ".svg", ".png", ".ico", ".service")
_SKIP_DIRS = {"__pycache__"}


def _packages() -> list[str]:
    found: list[str] = []
    for package, folder in PARTS.items():
        found.append(package)
        found += [f"{package}.{sub}" for sub in find_packages(folder)]
    return sorted(found)


def _package_data() -> dict[str, list[str]]:
    """Per part: its data files as paths relative to the part's folder (setuptools accepts
    paths into plain subfolders, and a file below a subpackage is still shipped)."""
    data: dict[str, list[str]] = {}
    for package, folder in PARTS.items():
        files = []
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            files += [
                os.path.relpath(os.path.join(root, n), folder).replace(os.sep, "/")
                for n in sorted(names)
                if n.endswith(DATA_SUFFIXES)
            ]
        if files:
            data[package] = files
    return data


class _BuildPy(build_py):
    """``build_py`` that also deletes what an earlier build left in ``build/lib``.

    setuptools copies into ``build/lib`` and the wheel takes everything there, so a module
    deleted or renamed in the tree would otherwise still ship from a checkout that was
    built before.
    """

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        keep = {os.path.abspath(p) for p in self.get_outputs(include_bytecode=True)}
        for top in {p.split(".")[0] for p in PARTS}:
            for root, _dirs, names in os.walk(os.path.join(self.build_lib, top), topdown=False):
                for name in names:
                    path = os.path.abspath(os.path.join(root, name))
                    if path not in keep:
                        os.remove(path)
                if not os.listdir(root):
                    os.rmdir(root)


setup(package_dir=PARTS, packages=_packages(), package_data=_package_data(), cmdclass={"build_py": _BuildPy})
