"""Export for deployment: SavedModel, TFLite (LiteRT) and ONNX, float or int8.

`export(model, path)` writes one file (or SavedModel directory) that computes
in float32 whatever the model's dtype policy, optionally quantized to full
integer (int8) after training, calibrated on a few hundred images. The file
carries ninlayers' metadata (class names, input range, whether it outputs
logits), which `ninlayers.exported.ExportedModel` reads back to run it with
the supported runtimes (LiteRT, onnxruntime, TensorFlow).

`NiN.export` (Keras's `Model.export`) exports the same float32 graph in
Keras's formats. Conversion uses TensorFlow (`tf.lite`, `tf2onnx`,
`onnxruntime.quantization`), so it needs the TensorFlow backend.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ninlayers import _checks, _keras_compat, classifier, pixels
from ninlayers._utils import all_layers
from ninlayers.errors import MissingDependencyError

__all__ = [
    "FORMATS",
    "IO_TYPES",
    "METADATA_KEY",
    "export",
    "export_saved_model",
    "float32_copy",
    "format_of",
    "metadata",
    "to_tflite",
    "with_test_time",
    "with_test_time_flip",
]

#: The formats `export` writes.
FORMATS = ("saved_model", "tflite", "onnx")

#: The input and output types of an int8 file.
IO_TYPES = ("float32", "uint8", "int8")

#: The name of ninlayers' metadata in exported files (a JSON object).
METADATA_KEY = "ninlayers"

# Where a SavedModel keeps it: files the graph does not use.
_SAVED_MODEL_METADATA = Path("assets.extra") / "ninlayers.json"


def float32_copy(model: keras.Model) -> keras.Model:
    """Returns a float32 copy of a model, with the same weights, called once.

    Mixed-precision models (`mixed_bfloat16`, `mixed_float16`) keep float32
    weights, so the copy computes the same function in float32. The copy has
    been called on one image, as Keras's ONNX export requires.

    Args:
        model: keras.Model. A `NiN`, functional or Sequential model.

    Returns:
        keras.Model. `model` itself when it already computes in float32.

    Example:

    >>> from ninlayers import NiN
    >>> float32_copy(NiN(precision="mixed_bfloat16")).dtype_policy.name
    'float32'
    """
    policies = {layer.dtype_policy.compute_dtype for layer in all_layers(model)}
    if policies <= {"float32"}:
        copy = model
    else:
        config = model.get_config()
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")
        try:
            config = _strip_dtypes(config)
            if "precision" in config:
                config["precision"] = "float32"
            copy = model.__class__.from_config(config)
        finally:
            keras.config.set_dtype_policy(previous)
        copy.set_weights(model.get_weights())
    if not _keras_compat.was_called(copy):
        copy(np.zeros((1, *_example_shape(copy)), "float32"), training=False)
    return copy


def _example_shape(model: keras.Model) -> tuple[int, ...]:
    """One image's shape, free sizes set to the smallest the model takes."""
    is_nin = isinstance(model, classifier.NiNImageClassifier)
    smallest = model.minimum_input_size if is_nin else 1
    return tuple(d or smallest for d in model.input_shape[1:])


def _strip_dtypes(config):
    """Drops every `dtype` entry of a config, so the global policy applies."""
    if isinstance(config, dict):
        return {k: _strip_dtypes(v) for k, v in config.items() if k != "dtype"}
    if isinstance(config, list):
        return [_strip_dtypes(v) for v in config]
    return config


def metadata(model: keras.Model) -> dict[str, Any]:
    """What an exported file needs besides its graph, as a JSON-able dict.

    Keys: `class_names` (list or `None`), `input_range` (a NiN's, onto
    which integer pixels are mapped; `None` for other models, whose inputs
    are taken as they are), `logits` (whether the outputs are logits rather
    than probabilities), `input_shape`, `test_time_flip` (whether the graph
    averages each image with its mirror image, at twice the work) and
    `test_time_shift` (the pixels by which it also averages each image moved
    right, left, down and up, at five times the work; `0` for none).

    Example:

    >>> from ninlayers import NiN
    >>> metadata(NiN(output_activation=None))["logits"]
    True
    """
    from ninlayers.layers import NiNClassifierHead

    heads = [
        layer for layer in all_layers(model) if isinstance(layer, NiNClassifierHead)
    ]
    return {
        "class_names": (
            model.class_names
            if isinstance(model, classifier.NiNImageClassifier)
            else None
        ),
        "input_range": _input_range(model),
        "logits": bool(heads) and heads[-1].output_activation is None,
        "input_shape": list(model.input_shape[1:]),
        "test_time_flip": bool(
            isinstance(model, classifier.NiNImageClassifier) and model.test_time_flip
        ),
        "test_time_shift": (
            int(model.test_time_shift)
            if isinstance(model, classifier.NiNImageClassifier)
            else 0
        ),
    }


def _input_range(model: keras.Model) -> list[float] | None:
    input_range = classifier.input_range(model)
    return None if input_range is None else [float(v) for v in input_range]


def format_of(path: str | os.PathLike) -> str:
    """The format a path's suffix names: `.tflite`, `.onnx`, else a SavedModel.

    >>> format_of("nin.tflite"), format_of("nin.onnx"), format_of("serving/nin")
    ('tflite', 'onnx', 'saved_model')
    """
    suffix = Path(path).suffix.lower()
    return {".tflite": "tflite", ".onnx": "onnx"}.get(suffix, "saved_model")


def export(
    model: keras.Model,
    path: str | os.PathLike,
    format: str | None = None,
    int8: bool = False,
    calibration: np.ndarray | None = None,
    input_type: str = "float32",
    output_type: str = "float32",
    test_time_flip: bool | None = None,
    verbose: bool = False,
    test_time_shift: int | None = None,
) -> Path:
    """Exports a model for deployment, in float32 or full-integer int8.

    Args:
        model: keras.Model. A `NiN`, or any functional or Sequential model
            (of ninlayers layers or not), in any dtype policy: the file
            computes in float32 (or int8).
        path: str or path. The file to write (a directory for a SavedModel).
        format: str or `None`. One of `FORMATS`; `None` takes it from the
            suffix (`format_of`). Defaults to `None`.
        int8: bool. Full-integer post-training quantization (weights and
            activations in int8; `"tflite"` and `"onnx"` only), calibrated
            on `calibration`. Defaults to `False`.
        calibration: array of images or `None`. A few hundred images like
            those the model will see (integer pixels or floats in its
            input range). Required with `int8=True`.
        input_type: str. The input type of an int8 TFLite file, one of
            `IO_TYPES`: `"uint8"` takes quantized pixels, `"float32"` floats.
            Defaults to `"float32"`.
        output_type: str. Its output type, one of `IO_TYPES`. Defaults to
            `"float32"`.
        test_time_flip: bool or `None`. For a `NiN`, whether the file
            averages each image with its mirror image (twice the cost);
            `None` keeps the model's setting. Defaults to `None`.
        verbose: bool. Print each stage, and a progress bar over the
            calibration images (Keras's `Progbar`). Defaults to `False`.
        test_time_shift: int or `None`. For a `NiN`, the pixels by which the
            file also averages each image moved right, left, down and up
            (five times the cost; `0` for none); `None` keeps the model's
            setting. Defaults to `None`.

    Returns:
        Path of the file or directory.

    Raises:
        ValueError: for an unknown format or type, int8 without calibration
            images or for a SavedModel, a backend other than TensorFlow, or
            test-time views asked of a model that is not a `NiN`.
        MissingDependencyError: when ONNX export's packages are missing.

    Example:

    >>> import tempfile
    >>> from ninlayers import NiN
    >>> path = export(NiN(), f"{tempfile.mkdtemp()}/nin.tflite")
    >>> path.suffix
    '.tflite'
    """
    format = _checks.one_of("format", format or format_of(path), FORMATS)
    input_type = _checks.one_of("input_type", input_type, IO_TYPES)
    output_type = _checks.one_of("output_type", output_type, IO_TYPES)
    _check_export(format, int8, calibration, input_type, output_type)
    if isinstance(model, classifier.NiNImageClassifier):
        model = with_test_time(model, test_time_flip, test_time_shift)
    elif test_time_flip or test_time_shift:
        raise _no_views(
            model,
            f"test_time_flip={test_time_flip!r}, test_time_shift={test_time_shift!r}",
        )
    copy = float32_copy(model)
    info = {**metadata(copy), "int8": bool(int8), "format": format}
    if int8:
        calibration = _calibration_images(copy, calibration)
    path = Path(path)
    if verbose:
        kind = f"int8, calibrated on {len(calibration)} images" if int8 else "float32"
        print(f"Converting {copy.name} to {format} ({kind})", flush=True)
        if int8:
            calibration = _Counted(calibration, keras.utils.Progbar(len(calibration)))
    with _atomic_target(path, format) as target:
        if format == "saved_model":
            copy.export(str(target), format="tf_saved_model", verbose=False)
            (target / _SAVED_MODEL_METADATA).parent.mkdir(exist_ok=True)
            (target / _SAVED_MODEL_METADATA).write_text(json.dumps(info))
        elif format == "tflite":
            flatbuffer = _tflite(copy, calibration, input_type, output_type)
            target.write_bytes(_with_tflite_metadata(flatbuffer, info))
        else:
            _onnx(copy, target, calibration, info)
    return path


class _Counted:
    """Calibration images that advance a progress bar as they are read."""

    def __init__(self, images: np.ndarray, bar: Any) -> None:
        self.images, self.bar, self.seen = images, bar, 0
        self.shape, self.dtype = images.shape, images.dtype

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: slice) -> np.ndarray:
        batch = self.images[index]
        self.seen = min(self.seen + len(batch), len(self.images))
        self.bar.update(self.seen)
        return batch


@contextlib.contextmanager
def _atomic_target(path: Path, format: str) -> Iterator[Path]:
    """Yields a temporary sibling of `path` to write; on success it replaces
    `path` at once, so a failed, killed or concurrent export never leaves a
    half-written file or folder there, nor damages a previous export.

    Raises:
        ValueError: for a SavedModel into a folder holding other things, or
            a file over a folder (or the reverse).
    """
    folder = format == "saved_model"
    if path.exists():
        empty = path.is_dir() and not any(path.iterdir())
        if folder and not empty and not (path / "saved_model.pb").is_file():
            raise ValueError(
                f"{path} exists and is not a SavedModel: a SavedModel export "
                "replaces its folder whole. Choose a new or empty path."
            )
        if path.is_dir() != folder:
            kind = "a folder" if path.is_dir() else "a file"
            raise ValueError(f"{path} is {kind}; a {format} export cannot replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp{path.suffix}"
    try:
        yield tmp
        if not folder:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            old = path.parent / f".{path.name}.{os.getpid()}.old"
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _check_export(
    format: str, int8: bool, calibration: Any, input_type: str, output_type: str
) -> None:
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "ninlayers.export converts through TensorFlow: run it with "
            "KERAS_BACKEND=tensorflow (a .keras file saved on any backend "
            "loads there), or use model.export(...) on this backend. "
            f"Received: backend {keras.backend.backend()!r}"
        )
    if int8 and format == "saved_model":
        raise ValueError(
            "int8 export writes .tflite or .onnx files, not SavedModels. "
            "Received: format='saved_model', int8=True"
        )
    if int8 and calibration is None:
        raise ValueError(
            "int8 export needs calibration images (a few hundred like those "
            "the model will see). Received: calibration=None"
        )
    if not int8 and (input_type, output_type) != ("float32", "float32"):
        raise ValueError(
            "Integer inputs and outputs are for int8 files: add int8=True "
            f"(--int8). Received: input_type={input_type!r}, "
            f"output_type={output_type!r}"
        )
    if format == "onnx" and (input_type, output_type) != ("float32", "float32"):
        raise ValueError(
            "ONNX int8 files take and return float32 (the quantization is "
            f"inside). Received: input_type={input_type!r}, "
            f"output_type={output_type!r}"
        )


def with_test_time_flip(model: keras.Model, flip: bool) -> keras.Model:
    """A `NiN` with `test_time_flip` set to `flip` (see `with_test_time`).

    >>> from ninlayers import NiN
    >>> with_test_time_flip(NiN(), True).test_time_flip
    True
    """
    return with_test_time(model, flip=bool(flip))


def with_test_time(
    model: keras.Model, flip: bool | None = None, shift: int | None = None
) -> keras.Model:
    """A `NiN` with its test-time views set: the model itself when they
    already are, else a copy with the same weights.

    Args:
        model: `NiNImageClassifier` (`NiN`).
        flip: bool or `None`. Its `test_time_flip`; `None` keeps it.
        shift: int or `None`. Its `test_time_shift`; `None` keeps it.

    Returns:
        keras.Model.

    Raises:
        ValueError: for another kind of model, or a negative shift.

    Example:

    >>> from ninlayers import NiN
    >>> model = with_test_time(NiN(test_time_flip=True), shift=1)
    >>> model.test_time_flip, model.test_time_shift
    (True, 1)
    """
    if not isinstance(model, classifier.NiNImageClassifier):
        raise _no_views(model, f"flip={flip!r}, shift={shift!r}")
    changes = {}
    if flip is not None and bool(flip) != model.test_time_flip:
        changes["test_time_flip"] = bool(flip)
    if shift is not None:
        shift = _checks.non_negative_int("test_time_shift", shift)
        if shift != model.test_time_shift:
            changes["test_time_shift"] = shift
    if not changes:
        return model
    copy = model.__class__.from_config({**model.get_config(), **changes})
    copy.set_weights(model.get_weights())
    return copy


def _no_views(model: keras.Model, asked: str) -> ValueError:
    """The refusal of test-time views asked of a model without them."""
    return ValueError(
        "Test-time flips and shifts are a NiNImageClassifier's (NiN's) "
        f"settings; a {type(model).__name__} has none. Received: {asked}"
    )


def _calibration_images(model: keras.Model, images: Any) -> np.ndarray:
    """Calibration images as float32 in the model's input range."""
    images = np.asarray(images)
    expected = _example_shape(model)
    if images.ndim == len(expected) and images.shape[-1] != expected[-1]:
        images = images[..., None]
    fixed = list(model.input_shape[1:])
    fits = images.ndim == len(expected) + 1 and all(
        d is None or d == n for d, n in zip(fixed, images.shape[1:], strict=False)
    )
    if not fits or not len(images):
        raise ValueError(
            f"Calibration images must be a batch of images shaped like "
            f"{tuple(model.input_shape[1:])}. Received: shape {images.shape}"
        )
    input_range = classifier.input_range(model)
    if input_range is None:  # no converter: the images are the model's inputs
        return images.astype("float32")
    pixels.check_float_range(images, input_range)
    return np.asarray(pixels.to_input_range(images, input_range), "float32")


def _tflite(
    model: keras.Model, calibration: Any, input_type: str, output_type: str
) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if calibration is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: (
                [calibration[i : i + 1]] for i in range(len(calibration))
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.as_dtype(input_type)
            converter.inference_output_type = tf.as_dtype(output_type)
        return converter.convert()


def _with_tflite_metadata(flatbuffer: bytes, info: dict[str, Any]) -> bytes:
    """The flat buffer with `info` as its `METADATA_KEY` metadata entry."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(info).encode(), "uint8")
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers)
    model.buffers.append(buffer)
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _onnx(
    model: keras.Model, path: Path, calibration: Any, info: dict[str, Any]
) -> None:
    try:
        import onnx
        import tf2onnx  # noqa: F401 (Keras's ONNX export imports it)
    except ImportError as error:
        raise MissingDependencyError(
            f"ONNX export needs onnx and tf2onnx ({error.name} is missing): "
            "pip install 'ninlayers[onnx]'"
        ) from None
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        float_path = Path(tmp) / "float.onnx"
        model.export(str(float_path), format="onnx", verbose=False)
        if calibration is not None:
            quantized = Path(tmp) / "int8.onnx"
            _quantize_onnx(float_path, quantized, calibration)
            float_path = quantized
        proto = onnx.load(str(float_path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.save(proto, str(path))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences the converters' notes meant for their developers: Keras's
    tf2onnx shim warns about `np.object`, onnxruntime's quantizer logs a
    suggestion on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        root.setLevel(level)


def _quantize_onnx(source: Path, target: Path, calibration: np.ndarray) -> None:
    """Static QDQ quantization: int8 weights (per channel), uint8 activations."""
    try:
        from onnxruntime import quantization
    except ImportError:
        raise MissingDependencyError(
            "ONNX int8 export needs onnxruntime: pip install 'ninlayers[onnx]'"
        ) from None

    class Reader(quantization.CalibrationDataReader):
        def __init__(self, name: str, batches: Iterable[np.ndarray]) -> None:
            self.feeds = iter({name: batch} for batch in batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    import onnxruntime

    name = onnxruntime.InferenceSession(str(source)).get_inputs()[0].name
    # Sliced as the quantizer reads them (a progress bar follows the reads).
    batches = (calibration[i : i + 32] for i in range(0, len(calibration), 32))
    quantization.quantize_static(
        str(source),
        str(target),
        Reader(name, batches),
        quant_format=quantization.QuantFormat.QDQ,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
        per_channel=True,
    )


def export_saved_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Exports a model as a TensorFlow SavedModel for serving.

    The SavedModel has a `serve` endpoint (and the `serving_default`
    signature) taking float32 images and returning the model's outputs:
    through `model.export`, so a `NiN` computes in float32 (`NiN.export`)
    and other models in their own dtype policy. `export(model, path,
    "saved_model")` writes the float32 graph of any model, with ninlayers'
    metadata.

    Args:
        model: keras.Model.
        path: str or path. A directory to create.

    Returns:
        Path of the SavedModel directory.
    """
    path = Path(path)
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def to_tflite(model: keras.Model, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Converts a model to a TFLite flat buffer: `export(model, path,
    "tflite", **kwargs)` (float32 unless `int8=True`)."""
    return export(model, path, "tflite", **kwargs)
