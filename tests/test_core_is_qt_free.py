"""Principle 1: the core imports no Qt. Checked by importing every core module in a fresh interpreter."""

import pkgutil
import subprocess
import sys

import pytest

import workbench

GUI_PACKAGES = ("workbench.gui",)


def core_modules() -> list[str]:
    names = ["workbench"]
    for info in pkgutil.walk_packages(workbench.__path__, prefix="workbench."):
        if not info.name.startswith(GUI_PACKAGES) and info.name != "workbench.__main__":
            names.append(info.name)
    return names


def test_core_modules_exist():
    modules = core_modules()
    expected_modules = ("workbench.models.loading", "workbench.store.writer", "workbench.capture", "workbench.cli.main")
    # Reports: spec, running, HTML and data are core; the PDF renderer imports Qt only inside its functions.
    expected_modules += ("workbench.report", "workbench.report.spec", "workbench.report.build", "workbench.report.html", "workbench.report.data", "workbench.report.pagination")
    # ROME weight edits: the rank-one update, key statistics and the edit stack.
    expected_modules += ("workbench.editing", "workbench.editing.rome", "workbench.editing.edits", "workbench.editing.covariance", "workbench.editing.prompts", "workbench.editing.target")
    for expected in expected_modules:
        assert expected in modules


def test_importing_the_core_loads_no_qt():
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'qtpy'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"core imported Qt modules: {result.stdout.strip()}"


@pytest.mark.slow
def test_headless_plugin_parts_load_no_qt():
    """Listing plugins and importing every analysis and result type (what `workbench run` does) stays Qt-free."""
    code = (
        "import sys\n"
        "from workbench.plugin_api import discover_plugins\n"
        "registry = discover_plugins()\n"
        "for plugin in registry.enabled():\n"
        "    if plugin.analysis is not None:\n"
        "        plugin.analysis.run_function()\n"
        "    plugin.result_classes()\n"
        "print('plugins:', ','.join(p.id for p in registry.enabled()))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'qtpy'))\n"
        "print('qt:', ','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in result.stdout.splitlines())
    assert "logit-lens" in lines["plugins"]
    assert lines["qt"] == "", f"headless plugin code imported Qt: {lines['qt']}"
