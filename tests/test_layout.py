"""The package's shape: the library never needs the application.

- `import ninlayers` loads no `ninlayers.app` module, and no matplotlib or
  Pillow beyond what Keras itself imports;
- no library module imports `ninlayers.app` (the deprecated shims of the old
  module paths aside, which exist to forward there);
- no function body is longer than 80 lines; `train()` at most 60;
- no class is longer than 300 lines, `NiN` at most 150; `presets.py` is data
  and imports no model module;
- the old module paths still work, with a `DeprecationWarning`.
"""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ninlayers
from helpers import run_python

SRC = Path(ninlayers.__file__).parent
# The deprecated shims of the old module paths forward to ninlayers.app by
# design; every other library module is checked.
SHIMS = {f"{name}.py" for name in ninlayers._MOVED_MODULES}
LIBRARY = [p for p in sorted(SRC.glob("*.py")) if p.name not in SHIMS]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_import_loads_no_application_module_nor_its_dependencies():
    # Keras imports matplotlib and Pillow itself when they are installed, so
    # what counts is what `import ninlayers` adds to what `import keras` loads.
    out = run_python(
        """
        import sys
        import keras
        before = set(sys.modules)
        import ninlayers
        added = sorted(set(sys.modules) - before)
        print(" ".join(added))
        """
    )
    added = out.split()
    assert "ninlayers.layers" in added and "ninlayers.model" in added
    offending = [
        m
        for m in added
        if m.startswith(("ninlayers.app", "matplotlib", "PIL"))
        or m.split(".")[0] in {"datasets", "experiment"}
    ]
    assert offending == []


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_library_modules_do_not_import_the_application(path):
    app_imports = {
        name
        for name in _imports(path)
        if name == "ninlayers.app" or name.startswith("ninlayers.app.")
    }
    assert app_imports == set(), f"{path.name} imports {app_imports}"


def test_the_import_rule_checker_sees_an_application_import(tmp_path):
    offender = tmp_path / "offender.py"
    offender.write_text("from ninlayers.app import data\nimport ninlayers.app.cli\n")
    assert {"ninlayers.app", "ninlayers.app.cli"} <= _imports(offender)


def _long_functions(path: Path, limit: int) -> list[str]:
    long = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                body = body[1:]  # the docstring does not count
            if body:
                lines = body[-1].end_lineno - body[0].lineno + 1
                if lines > limit:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines})")
    return long


def test_no_function_body_is_longer_than_80_lines():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += _long_functions(path, 80)
    assert found == []


def test_train_is_a_short_orchestrator(tmp_path):
    trainer = SRC / "app" / "trainer.py"
    source = ast.parse(trainer.read_text())
    (train,) = [
        n for n in source.body if isinstance(n, ast.FunctionDef) and n.name == "train"
    ]
    body = train.body[1:]
    assert body[-1].end_lineno - body[0].lineno + 1 <= 60
    # The checker itself counts: a 100-line function is reported.
    long = tmp_path / "long.py"
    long.write_text("def f():\n    '''doc'''\n" + "    x = 1\n" * 100)
    assert _long_functions(long, 80) == ["long.py:1 f (100)"]


def _long_classes(path: Path, limit: int) -> list[str]:
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_class_is_longer_than_300_lines_and_nin_is_thin(tmp_path):
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += _long_classes(path, 300)
    assert found == []
    assert _long_classes(SRC / "model.py", 150) == []
    long = tmp_path / "long.py"
    long.write_text("class C:\n" + "    x = 1\n" * 300)
    assert _long_classes(long, 300) == ["long.py:1 C (301)"]


def test_presets_are_data_importing_no_model_module():
    models = {"ninlayers.model", "ninlayers.backbone", "ninlayers.classifier"}
    models |= {"ninlayers.image_converter", "ninlayers.layers"}
    imported = _imports(SRC / "presets.py")
    assert not {name for name in imported if name.startswith(tuple(models))}
    assert "ninlayers.errors" in imported  # the checker sees its imports


OLD_PATHS = {
    "ninlayers.experiment": ("train", "ninlayers.app.trainer"),
    "ninlayers.datasets": ("load_fashion_mnist", "ninlayers.app.data"),
    "ninlayers.training": ("build_optimizer", "ninlayers.app.recipes"),
    "ninlayers.plots": ("plot_history", "ninlayers.app.plots"),
    "ninlayers.benchmark": ("run_benchmark", "ninlayers.app.benchmark"),
    "ninlayers.cli": ("main", "ninlayers.app.cli"),
}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_module_paths_work_with_a_deprecation_warning(old):
    name, new = OLD_PATHS[old]
    code = f"""
        import warnings
        warnings.simplefilter("error", DeprecationWarning)
        try:
            import {old}
        except DeprecationWarning as warning:
            print("warned:", warning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import importlib
        old = importlib.import_module("{old}")
        new = importlib.import_module("{new}")
        print(getattr(old, "{name}") is getattr(new, "{name}"))
    """
    out = run_python(textwrap.dedent(code))
    assert f"warned: {old} moved to" in out and "0.3.0" in out
    assert out.strip().endswith("True")


def test_old_top_level_names_warn_and_resolve():
    with pytest.warns(DeprecationWarning, match="ninlayers.app.recipes"):
        recipes = ninlayers.RECIPES
    from ninlayers.app.recipes import RECIPES

    assert recipes is RECIPES
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ninlayers.nope  # noqa: B018


def test_python_dash_m_old_cli_still_runs():
    result = subprocess.run(
        [sys.executable, "-m", "ninlayers.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "train" in result.stdout
