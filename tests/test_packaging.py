"""The wheel and the sdist build, hold what they should, install and import."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import ninlayers

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'version = { attr = "ninlayers.__version__" }' in pyproject
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = ninlayers.__version__
    if ".dev" in version:
        # A development version: its changes wait under [Unreleased], and
        # the release it leads to has no section yet.
        assert "## [Unreleased]" in changelog
        assert f"## [{version.split('.dev')[0]}]" not in changelog
    else:
        assert f"## [{version}]" in changelog


def _source_files() -> list[str]:
    """The checkout's files, tracked or new but not ignored; [] outside git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return []
    return [name for name in listed if (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """Builds the sdist, then the wheel from the sdist, as `python -m build` does."""
    outdir = tmp_path_factory.mktemp("dist")
    source = ROOT
    files = _source_files()
    if files:
        # Build from a copy of the checkout's files: an `egg-info` left in
        # the tree by `pip install -e` would otherwise supply its stale list.
        source = tmp_path_factory.mktemp("source")
        for name in files:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(outdir), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = outdir.glob("ninlayers-*.whl")
    (sdist,) = outdir.glob("ninlayers-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.mark.slow
def test_wheel_holds_the_package_and_its_type_marker(dist):
    wheel = dist["wheel"]
    assert wheel.name.startswith(f"ninlayers-{ninlayers.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("__init__", "__main__", "layers", "backbone", "classifier"):
        assert f"ninlayers/{module}.py" in names
    for module in ("image_converter", "model", "presets", "runtime", "app/cli"):
        assert f"ninlayers/{module}.py" in names
    # The module paths removed in 0.3.0 are not shipped.
    assert "ninlayers/cli.py" not in names and "ninlayers/datasets.py" not in names
    assert "ninlayers/py.typed" in names
    assert "ninlayers_cli.py" in names  # the console script's launcher
    # The pretrained preset's weights ship; they grow the wheel by < 8 MB.
    assert "ninlayers/weights/fashion_mnist.weights.h5" in names
    assert wheel.stat().st_size < 8_000_000 + 1_000_000
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


@pytest.mark.slow
def test_sdist_holds_what_building_and_testing_need(dist):
    sdist = dist["sdist"]
    prefix = f"ninlayers-{ninlayers.__version__}/"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(prefix) for name in archive.getnames()}
    folders = ("src/", "tests/", "examples/", "benchmarks/", "docs/")
    tracked = [name for name in _source_files() if name.startswith(folders)]
    expected = {"pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", "mkdocs.yml"}
    if tracked:  # Run from a git checkout: every tracked file must ship.
        expected.update(tracked)
    else:
        expected.update({"tests/conftest.py", "tests/helpers.py"})
    assert expected <= names, sorted(expected - names)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_distribution_installs_into_a_clean_venv_and_imports(dist, kind, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The sdist is built again by pip, in its own isolated environment with
    # setuptools from the package index: the way users without a wheel get it.
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(dist[kind])],
        check=True,
        capture_output=True,
        timeout=600,
    )
    # The clean venv has only the package; its dependencies (TensorFlow is
    # 600 MB) come from this environment's site-packages, read as a plain
    # path so that no editable install of ninlayers leaks in.
    purelib = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    (purelib / "site-packages" / "deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import ninlayers; print(ninlayers.__file__); "
            "print(ninlayers.__version__); print(ninlayers.NiN().count_params())",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    assert out[0].startswith(str(venv))
    assert out[1:] == [ninlayers.__version__, "1594882"]
    help_text = subprocess.run(
        [str(venv / "bin" / "ninlayers"), "--help"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "train" in help_text
    # TensorFlow's start-up lines are hidden: an error is the only line.
    quiet = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    failed = subprocess.run(
        [str(venv / "bin" / "ninlayers"), "predict", "missing.keras", "x.png"],
        capture_output=True,
        text=True,
        env=quiet,
        cwd=tmp_path,
    )
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        "ninlayers: error: Model file missing.keras does not exist."
    ], failed.stderr


def test_ruff_is_clean():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "src",
            "tests",
            "examples",
            "benchmarks",
            "docs",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_docs_build_strictly(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for page in ("index.html", "api/index.html", "recipes/index.html"):
        assert (tmp_path / "site" / page).is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "NiNBlock" in api and "class_activation_maps" in api
