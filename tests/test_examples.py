"""Every script in examples/ runs, on tiny data, and does what it says."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name, *args, timeout=600):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_compose(tmp_path):
    out = run("compose.py", "--quick", "--output", tmp_path)
    accuracy = float(out.split("reloaded test accuracy ")[1].split()[0])
    assert accuracy > 0.4  # four classes: chance is 0.25
    assert (tmp_path / "compose.keras").is_file()


@pytest.mark.slow
def test_custom_images(tmp_path):
    run("custom_images.py", "--quick", "--output", tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["class_names"] == ["diagonal", "horizontal", "vertical"]
    assert (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.slow
def test_cam(tmp_path):
    run("cam.py", "--quick", "--output", tmp_path)
    with Image.open(tmp_path / "cam.png") as image:
        image.verify()


@pytest.mark.slow
def test_export(tmp_path):
    out = run("export.py", "--output", tmp_path)
    errors = ast.literal_eval(out.split("from Keras: ")[1].strip())
    for name in ("saved_model", "nin.tflite", "nin.onnx"):
        assert errors[name] < 1e-4, (name, errors)
    assert errors["nin-int8.tflite"] < 0.25  # int8 probabilities
    # int8 weights: about a quarter of the float file.
    sizes = {
        n: (tmp_path / n).stat().st_size for n in ("nin.tflite", "nin-int8.tflite")
    }
    assert sizes["nin.tflite"] > 3 * sizes["nin-int8.tflite"] > 3_000_000, sizes
