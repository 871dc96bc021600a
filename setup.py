"""Package list for setuptools, computed from the folders (metadata lives in pyproject.toml).

The repository keeps one folder per part (``builder/``, ``runtime/``, ``monitor_agent/``,
``collector/``) and installs them as subpackages of ``mlpack_edge``. Listing packages by
hand once shipped a wheel without ``mlpack_edge.collector.storage``; here every folder with
an ``__init__.py`` below a part is found, however deep.
"""

from setuptools import find_packages, setup

PARTS = {
    "mlpack_edge": "mlpack_edge",
    "mlpack_edge.builder": "builder",
    "mlpack_edge.runtime": "runtime",
    "mlpack_edge.monitor_agent": "monitor_agent",
    "mlpack_edge.collector": "collector",
}


def _packages() -> list[str]:
    found: list[str] = []
    for package, folder in PARTS.items():
        found.append(package)
        found += [f"{package}.{sub}" for sub in find_packages(folder)]
    return sorted(found)


setup(package_dir=PARTS, packages=_packages())
