"""The package's shape: the library never needs the application.

- `import ninlayers` loads no `ninlayers.app` module, and no matplotlib or
  Pillow beyond what Keras itself imports;
- no library module imports `ninlayers.app`;
- no function body is longer than 80 lines; `train()` at most 60;
- no class is longer than 300 lines, `NiN` at most 150; `presets.py` is data
  and imports no model module;
- the module paths removed in 0.3.0 fail naming their new place.
"""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

import ninlayers
from helpers import run_python

SRC = Path(ninlayers.__file__).parent
LIBRARY = sorted(SRC.glob("*.py"))


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


@pytest.mark.parametrize("name", sorted(ninlayers._MOVED))
def test_paths_removed_in_0_3_0_name_their_new_place(name):
    """0.2.0 promised the old module paths would go in 0.3.0."""
    with pytest.raises(AttributeError, match=ninlayers._MOVED[name]):
        getattr(ninlayers, name)
    target = ninlayers._MOVED[name].removesuffix(f".{name}")
    assert importlib.import_module(target) is not None
    if not name[0].isupper():  # a module path: gone, not forwarded
        assert importlib.util.find_spec(f"ninlayers.{name}") is None
