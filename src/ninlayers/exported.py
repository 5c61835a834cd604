"""Running exported files: `.tflite` with LiteRT, `.onnx` with onnxruntime,
SavedModels with TensorFlow, behind one `predict`.

`ExportedModel` reads the metadata `ninlayers.export.export` wrote (class
names, input range, logits or probabilities) and converts images the way
the Keras model does: integer pixels are mapped onto the input range, and
an int8 file's inputs and outputs are quantized and dequantized with the
file's own scales, so every format takes the same images and returns float
scores.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ninlayers import export, pixels
from ninlayers.errors import MissingDependencyError, ModelFileError

__all__ = ["EXTENSIONS", "ExportedModel", "is_exported"]

#: File suffixes of exported files (a SavedModel is a directory).
EXTENSIONS = (".tflite", ".onnx")


def is_exported(path: Any) -> bool:
    """Whether `path` names an exported file or a SavedModel directory."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = Path(path)
    return path.suffix.lower() in EXTENSIONS or (path / "saved_model.pb").is_file()


class ExportedModel:
    """An exported NiN (or any exported classifier), run by its runtime.

    Args:
        path: str or path. A `.tflite` or `.onnx` file, or a SavedModel
            directory.
        num_threads: int or `None`. CPU threads of the runtime; `None` uses
            every core. Defaults to `None`.

    Attributes:
        format: `"tflite"`, `"onnx"` or `"saved_model"`.
        metadata: dict. What `ninlayers.export.metadata` wrote (empty for
            files exported by other tools).
        class_names: list of str or `None`.
        input_range: pair of floats, onto which integer pixels are mapped
            (a NiN's), or `None`: images are passed as they are.
        input_shape: tuple `(None, height, width, channels)`.
        output_shape: tuple `(None, classes)`.
        int8: bool. Whether the file is quantized.

    Raises:
        ModelFileError: if the file is missing or the runtime cannot load it.
        MissingDependencyError: if the runtime is not installed.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> from ninlayers import NiN, export
    >>> path = export.export(NiN(), f"{tempfile.mkdtemp()}/nin.onnx")
    >>> ExportedModel(path).predict(np.zeros((2, 28, 28, 1), "uint8")).shape
    (2, 10)
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        self.path = Path(path)
        self.format = export.format_of(self.path)
        if not self.path.exists():
            raise ModelFileError(f"{self.path} does not exist.")
        runner = {"tflite": _LiteRT, "onnx": _Onnx, "saved_model": _SavedModel}
        try:
            self._runner = runner[self.format](self.path, num_threads)
        except (MissingDependencyError, ModelFileError):
            raise
        except Exception as error:  # each runtime raises its own types
            raise ModelFileError(
                f"{self.path} is not a {self.format} file that its runtime can load: "
                f"{type(error).__name__}: {error}"
            ) from None
        self.metadata: dict[str, Any] = self._runner.metadata
        if not isinstance(self.metadata, dict):
            raise ModelFileError(
                f"{self.path}'s ninlayers metadata is not a JSON object. "
                f"Received: {str(self.metadata)[:200]}"
            )
        self.input_shape = (None, *self._runner.input_shape[1:])
        self.output_shape = (None, self._runner.num_classes)
        self.class_names = _metadata_class_names(self)
        self.input_range = _metadata_input_range(self)
        self.logits = bool(self.metadata.get("logits", False))
        int8 = self.metadata.get("int8")
        self.int8 = bool(self._runner.quantized if int8 is None else int8)
        self.name = self.path.name

    def predict(
        self, x: np.ndarray, batch_size: int = 64, verbose: Any = None
    ) -> np.ndarray:
        """Scores a batch of images, `batch_size` at a time.

        Args:
            x: array `(n, height, width, channels)`: integer pixels, or
                floats in the model's input range (for a NiN; other models'
                inputs are passed as they are).
            batch_size: int. Images per runtime call. Defaults to `64`.
            verbose: ignored (for `keras.Model.predict` compatibility).

        Returns:
            float32 array `(n, classes)`: probabilities, or logits for a
            model exported with `output_activation=None`.

        Raises:
            ValueError: for images of another rank, size or number of
                channels than the file takes, of a dtype that is not numbers,
                or holding values that cannot be pixels; the model stays
                usable for the next batch.
        """
        del verbose
        x = np.asarray(x)
        self._check_batch(x)
        pixels.check_pixels(x)
        if self.input_range is not None:
            pixels.check_float_range(x, self.input_range)
            x = pixels.to_input_range(x, self.input_range)
        elif x.dtype.kind in "iu":
            raise ValueError(
                f"{self.path} does not say which input range its pixels map "
                "onto (it has no ninlayers metadata): pass float images as its "
                f"model takes them. Received: images of dtype {x.dtype}"
            )
        x = np.asarray(x, "float32")
        if not len(x):
            return np.zeros((0, self.output_shape[1]), "float32")
        batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
        return np.concatenate([self._runner(batch) for batch in batches])

    def _check_batch(self, x: np.ndarray) -> None:
        """Refuses what the Keras model would: other dtypes, ranks, sizes."""
        if x.dtype.kind not in "iuf":
            raise ValueError(
                f"{self.path.name} takes images of integers or floats. "
                f"Received: images of dtype {x.dtype}"
            )
        expected = self.input_shape
        fits = x.ndim == len(expected) and all(
            want is None or want == got
            for want, got in zip(expected[1:], x.shape[1:], strict=True)
        )
        if not fits:
            shape = "(n, " + ", ".join(str(d) for d in expected[1:]) + ")"
            hint = " (one image needs a batch axis: x[None])" if x.ndim == 3 else ""
            raise ValueError(
                f"{self.path.name} takes a batch of images of shape {shape}{hint}. "
                f"Received: shape {x.shape}"
            )

    def __call__(self, x: Any, training: bool | None = None) -> np.ndarray:
        """`predict` of one batch (`training` must be falsy)."""
        if training:
            raise ValueError("An exported model only predicts. Received: training=True")
        return self.predict(x, batch_size=max(len(x), 1))


def _metadata_class_names(model: ExportedModel) -> list[str] | None:
    """The metadata's class names, one string per output, or `None`."""
    names = model.metadata.get("class_names")
    if names is None:
        return None
    classes = model.output_shape[1]
    if (
        not isinstance(names, list)
        or not all(isinstance(name, str) for name in names)
        or len(names) != classes
    ):
        raise ModelFileError(
            f"{model.path}'s metadata does not fit the file: expected "
            f"class_names, a list of {classes} strings (one per output). "
            f"Received: {str(names)[:200]}"
        )
    return names


def _metadata_input_range(model: ExportedModel) -> tuple[float, float] | None:
    """The metadata's input range, a pair of finite floats low < high."""
    value = model.metadata.get("input_range")
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError
    except (TypeError, ValueError):
        raise ModelFileError(
            f"{model.path}'s metadata does not fit the file: expected "
            "input_range, a pair of finite numbers (low < high). "
            f"Received: {str(value)[:200]}"
        ) from None
    return (low, high)


def _require(module: str, extra: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"Running {what} needs {module.split('.')[0]}, which is not "
            f"installed: pip install 'ninlayers[{extra}]'"
        ) from None


def _quantize(x: np.ndarray, dtype: Any, scale: float, zero_point: int) -> np.ndarray:
    if np.dtype(dtype).kind == "f" or not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if y.dtype.kind == "f" or not scale:
        return y.astype("float32")
    return ((y.astype("float32") - zero_point) * scale).astype("float32")


class _LiteRT:
    """A `.tflite` file in LiteRT's interpreter (XNNPACK on CPUs)."""

    def __init__(self, path: Path, num_threads: int | None) -> None:
        module = _require("ai_edge_litert.interpreter", "litert", ".tflite files")
        content = path.read_bytes()
        self.metadata = _tflite_metadata(content)
        self.interpreter = module.Interpreter(
            model_content=content, num_threads=num_threads or os.cpu_count()
        )
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.input["shape_signature"])
        self.num_classes = int(self.output["shape_signature"][-1])
        self.quantized = np.dtype(self.input["dtype"]).kind != "f" or bool(
            self.output["quantization"][0]
        )
        self.batch = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.batch != x.shape:
            self.interpreter.resize_tensor_input(self.input["index"], x.shape)
            self.interpreter.allocate_tensors()
            self.batch = x.shape
        scale, zero_point = self.input["quantization"]
        x = _quantize(x, self.input["dtype"], scale, zero_point)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        return _dequantize(y, *self.output["quantization"])


def _tflite_metadata(content: bytes) -> dict[str, Any]:
    schema = _require("ai_edge_litert.schema_py_generated", "litert", ".tflite files")
    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == export.METADATA_KEY.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode())
    return {}


class _Onnx:
    """An `.onnx` file in onnxruntime (MLAS kernels; VNNI for int8)."""

    def __init__(self, path: Path, num_threads: int | None) -> None:
        ort = _require("onnxruntime", "onnx", ".onnx files")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or 0
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = json.loads(props.get(export.METADATA_KEY, "{}"))
        self.input = self.session.get_inputs()[0]
        shape = self.input.shape
        self.input_shape = tuple(d if isinstance(d, int) else None for d in shape)
        self.num_classes = int(self.session.get_outputs()[0].shape[-1])
        self._path = path

    @functools.cached_property
    def quantized(self) -> bool:
        # Read from the graph only for files without ninlayers' metadata
        # (which says "int8"), so other files are loaded once, by the
        # session.
        return any(node.op_type == "QuantizeLinear" for node in _onnx_nodes(self._path))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        (y,) = self.session.run(None, {self.input.name: x})[:1]
        return y.astype("float32")


def _onnx_nodes(path: Path) -> list[Any]:
    try:
        import onnx
    except ImportError:
        return []
    return list(onnx.load(str(path), load_external_data=False).graph.node)


class _SavedModel:
    """A SavedModel directory, its `serve` endpoint run by TensorFlow."""

    def __init__(self, path: Path, num_threads: int | None) -> None:
        del num_threads  # TensorFlow's threads are set once per process
        tf = _require("tensorflow", "tensorflow", "SavedModels")
        self.loaded = tf.saved_model.load(str(path))
        self.serve = (
            getattr(self.loaded, "serve", None)
            or self.loaded.signatures["serving_default"]
        )
        extra = path / "assets.extra" / "ninlayers.json"
        self.metadata = json.loads(extra.read_text()) if extra.is_file() else {}
        spec = self._input_spec()
        self.input_shape = tuple(spec.shape)
        self.num_classes = int(self._output_width())
        self.quantized = False
        self._tf = tf

    def _input_spec(self) -> Any:
        function = self.serve
        concrete = (
            function
            if hasattr(function, "structured_input_signature")
            else function.get_concrete_function()
        )
        args, kwargs = concrete.structured_input_signature
        return (list(args) + list(kwargs.values()))[0]

    def _output_width(self) -> int:
        shape = self.metadata.get("input_shape") or [
            d or 32 for d in self.input_shape[1:]
        ]
        return int(self._run(np.zeros((1, *shape), "float32")).shape[-1])

    def _run(self, x: np.ndarray) -> np.ndarray:
        y = self.serve(x)
        if isinstance(y, dict):
            (y,) = y.values()
        return np.asarray(y, "float32")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run(x)
