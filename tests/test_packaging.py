"""The wheel builds, installs into a clean venv and imports."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import ninlayers

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'version = { attr = "ninlayers.__version__" }' in pyproject
    assert f"## [{ninlayers.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.slow
def test_wheel_installs_into_a_clean_venv_and_imports(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("ninlayers-*.whl")
    assert wheel.name.startswith(f"ninlayers-{ninlayers.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("__init__", "layers", "model", "runtime", "cli"):
        assert f"ninlayers/{module}.py" in names
    assert "ninlayers/py.typed" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The clean venv has only the wheel; its dependencies (TensorFlow is
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
    assert out[1:] == [ninlayers.__version__, "1588198"]
    help_text = subprocess.run(
        [str(venv / "bin" / "ninlayers"), "--help"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "train" in help_text


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
