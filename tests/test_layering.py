"""The layering ARCHITECTURE.md draws, enforced: the IR, the reference, the compilers, the
cycle models and the targets layer import no hardware or simulator code, and model names
live in the zoo, not in the consumers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = [
    "accel.ir",
    "accel.fixed",
    "accel.reference",
    "accel.kernels",
    "accel.intops",
    "accel.deform",
    "accel.nm",
    "accel.compiler.dataflow",
    "accel.perf",
    "accel.engine.config",
    "accel.engine.isa",
    "accel.engine.program",
    "accel.engine.compile",
    "accel.engine.graph",
    "accel.engine.vit",
    "accel.engine.vector",
    "accel.engine.cycles",
    "accel.targets",
    "accel.zoo",
    "accel.zoo.sweeps",
    "accel.hexio",
    "accel.knobs",
]
HARDWARE = ("amaranth", "accel.rtl", "accel.sim", "accel.flows")


@pytest.mark.parametrize("module", PURE)
def test_pure_layers_import_no_hardware(module):
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({HARDWARE!r}))\n"
        "print(' '.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [], f"{module} imports {out[:5]}"


def _string_constants(path: Path):
    tree = ast.parse(path.read_text())
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def test_model_names_live_in_the_zoo():
    from accel import zoo

    names = set(zoo.MODELS)
    # the zoo and the trainers own the models; the CLI's help text and the calibration
    # script's data name them as examples and points
    allowed = {"accel/zoo", "accel/training", "accel/cli.py", "accel/dse/calibrate.py"}
    found = []
    for top in ("accel", "rtl", "sim", "flows"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if any(rel == a or rel.startswith(a + "/") for a in allowed):
                continue
            for line, text in _string_constants(path):
                if text in names or ("@" in text and text.split("@")[0] in names):
                    found.append(f"{rel}:{line}: {text!r}")
    assert found == []


def test_every_package_is_installed():
    """pyproject.toml lists packages by hand: a new one left out works in an editable
    install and is missing from a wheel."""
    import tomllib

    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(doc["tool"]["setuptools"]["packages"])
    dirs = doc["tool"]["setuptools"]["package-dir"]
    found = set()
    for pkg, where in dirs.items():
        for init in (ROOT / where).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / where).parts
            found.add(".".join((pkg, *rel)))
    assert found <= listed, sorted(found - listed)
