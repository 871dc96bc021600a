"""Freezing reports PyInstaller's phases as progress lines instead of going quiet for minutes."""

from __future__ import annotations

import sys
from pathlib import Path

from mlpack_edge.builder._freeze import _run_pyinstaller

# What PyInstaller 6 prints at --log-level INFO, shortened; the phases repeat for the two executables.
_LOG = """\
123 INFO: PyInstaller: 6.22.3, contrib hooks: 2026.10
627 INFO: Analyzing modules for base_library.zip ...
1586 INFO: Processing standard module hook 'hook-heapq.py' from '/x'
5787 INFO: Analyzing /tmp/mlpack-freeze-x/device_main.py
9934 INFO: Analyzing hidden import 'mlpack_edge.monitor_agent.cli'
10547 INFO: Looking for dynamic libraries
11226 INFO: Building PKG (CArchive) mlpack-device.pkg
11251 INFO: Building EXE from EXE-00.toc
11260 INFO: Building COLLECT COLLECT-00.toc
11392 INFO: Building COLLECT COLLECT-00.toc completed successfully.
11416 INFO: Building PKG (CArchive) mlpack-device-onefile.pkg
36258 INFO: Building PKG (CArchive) mlpack-device-onefile.pkg completed successfully.
36272 INFO: Building EXE from EXE-01.toc
WARNING: something the log keeps
"""


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def test_each_phase_reported_once_and_the_whole_log_kept(tmp_path: Path) -> None:
    script = tmp_path / "fake_pyinstaller.py"
    script.write_text(f"import sys\nsys.stderr.write({_LOG!r})\nsys.exit(3)\n")
    reporter = _Lines()
    code, output = _run_pyinstaller([sys.executable, str(script)], tmp_path, None, reporter)
    assert code == 3
    assert output == _LOG
    phases = [line.split("freezing: ", 1)[1].rsplit(" (", 1)[0] for line in reporter.lines]
    assert phases == [
        "analysing the standard library",
        "analysing the runtime's imports",
        "collecting shared libraries",
        "writing the installed layout",
        "compressing the download (the longest step)",
        "writing the download",
    ]
    assert all(line.startswith("  freezing: ") and line.endswith(" s)") for line in reporter.lines)
