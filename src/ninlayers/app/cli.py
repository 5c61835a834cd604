"""The `ninlayers` command: a thin shell over `ninlayers.app`.

    ninlayers train [--recipe default|quick|fast|tutorial] [--output DIR] ...
    ninlayers evaluate MODEL
    ninlayers predict MODEL IMAGE...
    ninlayers cam MODEL IMAGE... -o out.png
    ninlayers export MODEL OUT [--format saved_model|tflite|onnx] [--int8]
    ninlayers benchmark [--images N] [--repeats N] [--deployment | --kernels]

`ninlayers --backend {tensorflow,jax,torch} COMMAND ...` runs the command on
that Keras backend (in a new process when Keras already runs on another).
Errors print one line to stderr and exit with status 2 (1 for an unexpected
error); `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ninlayers import _checks
from ninlayers.app.recipes import RECIPES, RENAMED_RECIPES
from ninlayers.backbone import ARCHITECTURES, architecture_name
from ninlayers.export import FORMATS, IO_TYPES
from ninlayers.runtime import PRECISIONS, STRATEGIES

__all__ = ["BACKENDS", "build_parser", "main", "one_line", "safe_text"]

#: The Keras backends the command runs on.
BACKENDS = ("tensorflow", "jax", "torch")


def _argument(check: Callable[[str, Any], Any], parse: type) -> Callable[[str], Any]:
    """An argparse `type=`: parses the text, then applies a `_checks` check,
    so the command and the library accept and refuse the same values."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = text  # the check says what it expected
        try:
            return check("value", value)
        except ValueError as error:
            expected = str(error).split(" Received:")[0].replace("`value` ", "")
            raise argparse.ArgumentTypeError(f"{expected} Received: {text!r}") from None

    return convert


_positive_int = _argument(_checks.positive_int, int)
_non_negative_int = _argument(_checks.non_negative_int, int)
_positive_float = _argument(_checks.positive_number, float)


# ANSI escape sequences (colours, bold, cursor moves), as Keras's errors use.
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*(\x07|\x1b\\)|[@-Z\\-_])")


def safe_text(text: Any) -> str:
    """Text from files (class names, paths) as printable characters: escape
    sequences and other control characters are shown escaped, not obeyed."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def one_line(text: Any, limit: int = 600) -> str:
    """An error message as one plain line: terminal codes removed, lines and
    runs of spaces joined, control characters escaped, at most `limit`
    characters."""
    plain = " ".join(_ESCAPES.sub("", str(text)).split())
    plain = safe_text(plain)
    return plain if len(plain) <= limit else plain[: limit - 3] + "..."


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """`--debug` and `--backend`, before the command or after it."""
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=default,
        help="Keras backend to run on (default: $KERAS_BACKEND, else tensorflow)",
    )


class _Commands(argparse._SubParsersAction):
    """Sub-commands that also take the global options after their name."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser = super().add_parser(name, **kwargs)
        # SUPPRESS: given after the command they count, absent they leave the
        # values parsed before the command alone.
        _global_options(parser, argparse.SUPPRESS)
        return parser


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the `ninlayers` command."""
    from ninlayers import __version__

    parser = argparse.ArgumentParser(
        prog="ninlayers",
        description="Network in Network (NiN) on Fashion-MNIST and your images.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    _global_options(parser, None)
    parser.set_defaults(debug=False)
    parser.register("action", "parsers", _Commands)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do"
    )

    _add_train(commands)
    _add_inference(commands)
    return parser


_DATA_DIR_HELP = "directory of the Fashion-MNIST IDX files (default: found)"
_INVERT_HELP = "for dark objects on a light background"


def _add_train(commands: argparse._SubParsersAction) -> None:
    """The `train` command's arguments."""
    train = commands.add_parser(
        "train", help="train NiN and write model, metrics and pictures"
    )
    train.add_argument(
        "--recipe",
        default="default",
        choices=[*RECIPES, *RENAMED_RECIPES],
        help="training recipe (default: %(default)s; seed: tutorial's old name)",
    )
    train.add_argument(
        "--output",
        "-o",
        default="runs/fashion-mnist",
        help="output directory (default: %(default)s)",
    )
    train.add_argument("--epochs", type=_positive_int, help="default: the recipe's")
    train.add_argument("--batch-size", type=_positive_int, help="default: the recipe's")
    train.add_argument(
        "--learning-rate",
        type=_positive_float,
        help="peak learning rate (default: the recipe's)",
    )
    train.add_argument(
        "--architecture",
        help=f"one of {', '.join(ARCHITECTURES)} (default: the recipe's) or a "
        "JSON list of block specs, e.g. '[[96, 3], [192, 3]]'",
    )
    train.add_argument(
        "--input-size",
        type=_positive_int,
        help="resize images to this square size (default 28)",
    )
    train.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="default: the recipe's (auto: bfloat16 on CPUs with it)",
    )
    train.add_argument(
        "--seed", type=int, default=0, help="random seed (default: %(default)s)"
    )
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow op determinism: identical reruns",
    )
    train.add_argument("--data-dir", help=_DATA_DIR_HELP)
    train.add_argument(
        "--image-folder", help="train on these images (one sub-folder per class)"
    )
    train.add_argument(
        "--train-limit", type=_positive_int, help="use only the first N training images"
    )
    train.add_argument(
        "--test-limit",
        type=_positive_int,
        help="evaluate on only the first N test images",
    )
    _add_run_control(train)


def _add_run_control(train: argparse.ArgumentParser) -> None:
    """`train`'s arguments on how the run goes: replicas, backups, logs."""
    train.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGIES,
        help="how to spread training (default: %(default)s: mirrored with "
        "several GPUs); mirrored and multiworker (TF_CONFIG) are "
        "tf.distribute's, data-parallel is JAX's (KERAS_DISTRIBUTION_* for "
        "several processes)",
    )
    train.add_argument(
        "--restart",
        action="store_true",
        help="delete OUTPUT/backup (an interrupted run's state) and start over",
    )
    train.add_argument(
        "--backup-every",
        type=_positive_int,
        metavar="STEPS",
        help="also back up every STEPS training steps, so a run stopped within "
        "a long epoch loses at most STEPS steps (default: at each epoch's end)",
    )
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="write TensorBoard logs to OUTPUT/logs",
    )
    train.add_argument(
        "--verbose",
        type=int,
        choices=[0, 1, 2],
        help="Keras's progress display (default: a bar on a terminal)",
    )


def _add_inference(commands: argparse._SubParsersAction) -> None:
    """The arguments of `evaluate`, `predict` and `cam` (and the others')."""
    model_help = (
        "a .keras file, a `ninlayers train` output directory, a preset "
        "name such as fashion_mnist (pretrained, in the package), or an "
        "exported .tflite/.onnx file or SavedModel directory"
    )
    evaluate = commands.add_parser("evaluate", help="test accuracy of a model")
    evaluate.add_argument("model", help=model_help)
    evaluate.add_argument("--data-dir", help=_DATA_DIR_HELP)
    evaluate.add_argument(
        "--image-folder",
        help="score on these images (one sub-folder per class) instead",
    )
    evaluate.add_argument(
        "--limit", type=_positive_int, help="score only the first N test images"
    )

    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument("model", help=model_help)
    predict.add_argument("images", nargs="+", help="PNG, JPEG or any Pillow image")
    predict.add_argument(
        "--top",
        type=_positive_int,
        default=3,
        help="classes to list per image (default: %(default)s)",
    )
    predict.add_argument("--invert", action="store_true", help=_INVERT_HELP)
    predict.add_argument(
        "--json", action="store_true", help="one JSON object per image, a line each"
    )

    cam = commands.add_parser("cam", help="draw class activation maps")
    cam.add_argument("model", help=model_help)
    cam.add_argument("images", nargs="+", help="PNG, JPEG or any Pillow image")
    cam.add_argument(
        "--output",
        "-o",
        default="cam.png",
        help="picture to write, or a folder for cam.png (default: %(default)s)",
    )
    cam.add_argument("--invert", action="store_true", help=_INVERT_HELP)

    _add_export(commands)
    _add_benchmark(commands)


def _add_benchmark(commands: argparse._SubParsersAction) -> None:
    """The `benchmark` command's arguments."""
    bench = commands.add_parser(
        "benchmark", help="time the seed's Keras NiN against ninlayers' defaults"
    )
    bench.add_argument(
        "--images",
        type=_positive_int,
        default=2048,
        help="training images per repeat (default: %(default)s)",
    )
    bench.add_argument(
        "--repeats",
        type=_positive_int,
        default=3,
        help="timed repeats of each path, all kept (default: %(default)s)",
    )
    bench.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="training batch size (default: %(default)s)",
    )
    bench.add_argument(
        "--no-plain",
        "--no-torch",
        dest="no_plain",
        action="store_true",
        help="leave out the same network in plain PyTorch and plain JAX "
        "(--no-torch: the earlier name)",
    )
    bench.add_argument(
        "--no-backends",
        action="store_true",
        help="leave out ninlayers on the other installed Keras backends",
    )
    bench.add_argument(
        "--deployment",
        action="store_true",
        help="time the exported formats (LiteRT, ONNX, SavedModel; float32 "
        "and int8) against the seed's Keras predict instead",
    )
    bench.add_argument(
        "--kernels",
        action="store_true",
        help="profile one training step of NiN() kernel by kernel against the "
        "bfloat16 ceiling instead (TensorFlow; --repeats times each "
        "convolution alone)",
    )
    bench.add_argument(
        "--architecture",
        help=f"with --kernels: the trunk to profile, one of {', '.join(ARCHITECTURES)} "
        "or a JSON list of block specs (default: NiN()'s)",
    )
    bench.add_argument(
        "--steps",
        type=_positive_int,
        default=20,
        help="with --kernels: training steps under the profiler (default: %(default)s)",
    )
    bench.add_argument(
        "--deployment-images",
        type=_positive_int,
        help="with --deployment: the first N test images (default: all)",
    )
    bench.add_argument(
        "--model",
        default="fashion_mnist",
        help="with --deployment: the model to export (default: %(default)s)",
    )
    bench.add_argument("--json", help="also write the figures to this file")


def _add_export(commands: argparse._SubParsersAction) -> None:
    """The `export` command's arguments."""
    export = commands.add_parser(
        "export", help="write a model as SavedModel, TFLite or ONNX (float or int8)"
    )
    export.add_argument(
        "model", help="a .keras file, a `ninlayers train` output directory or a preset"
    )
    export.add_argument(
        "output", help="the file to write (.tflite, .onnx; else a SavedModel folder)"
    )
    export.add_argument(
        "--format", choices=FORMATS, help="default: from the output's suffix"
    )
    export.add_argument(
        "--int8",
        action="store_true",
        help="full-integer quantization, calibrated on training images",
    )
    export.add_argument(
        "--input-type",
        choices=IO_TYPES,
        default="float32",
        help="an int8 .tflite file's input type; uint8 takes pixels 0-255 "
        "(default: %(default)s)",
    )
    export.add_argument(
        "--output-type",
        choices=IO_TYPES,
        default="float32",
        help="an int8 .tflite file's output type (default: %(default)s)",
    )
    export.add_argument(
        "--calibration-images",
        type=_positive_int,
        default=500,
        help="training images for --int8 (default: %(default)s)",
    )
    export.add_argument("--data-dir", help=_DATA_DIR_HELP)
    export.add_argument(
        "--image-folder", help="calibrate on these images instead of Fashion-MNIST"
    )
    flip = export.add_mutually_exclusive_group()
    flip.add_argument(
        "--test-time-flip",
        dest="test_time_flip",
        action="store_const",
        const=True,
        help="average each image with its mirror image: twice the work per "
        "image (default: the model's own setting)",
    )
    flip.add_argument(
        "--no-test-time-flip",
        dest="test_time_flip",
        action="store_const",
        const=False,
        help="one pass per image: half the work of a flipping model",
    )
    export.add_argument(
        "--test-time-shift",
        type=_non_negative_int,
        metavar="PIXELS",
        help="also average each image moved this many pixels right, left, down "
        "and up: five times the work; 0 for none (default: the model's own "
        "setting)",
    )


def _architecture(text: str | None):
    if text is not None and text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                "--architecture must be an architecture name or a JSON list of block "
                f"specs. Received: {text!r} ({error})"
            ) from None
    return None if text is None else architecture_name(text.strip())


def _train(args: argparse.Namespace) -> None:
    from ninlayers import app

    metrics = app.train(
        recipe=args.recipe,
        output_dir=args.output,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        architecture=_architecture(args.architecture),
        input_size=args.input_size,
        precision=args.precision,
        seed=args.seed,
        deterministic=args.deterministic,
        strategy=args.strategy,
        data_dir=args.data_dir,
        image_folder=args.image_folder,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        tensorboard=args.tensorboard,
        verbose=_progress(args.verbose),
        restart=args.restart,
        backup_every=args.backup_every,
    )
    if not metrics["chief"]:
        print(f"worker finished; weights sha256 {metrics['weights_sha256']}")
        return
    test = metrics["test"]
    print(
        f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f} "
        f"on {test['examples']} images; fit {metrics['fit_seconds']:.0f} s; "
        f"artifacts in {args.output}; weights sha256 {metrics['weights_sha256']}"
    )


def _evaluate(args: argparse.Namespace) -> None:
    from ninlayers import app

    scores = app.evaluate(
        args.model,
        data_dir=args.data_dir,
        image_folder=args.image_folder,
        limit=args.limit,
        # A bar on a terminal; nothing before the JSON line in a pipe.
        verbose=1 if sys.stdout.isatty() else 0,
    )
    print(json.dumps(scores))


def _predict(args: argparse.Namespace) -> None:
    from ninlayers import app

    for result in app.predict(
        args.model, args.images, top=args.top, invert=args.invert
    ):
        if args.json:
            print(json.dumps(_json_result(result)), flush=True)
            continue
        ranked = ", ".join(f"{safe_text(c)} {p:.3f}" for c, p in result["top"])
        name, label = safe_text(result["image"]), safe_text(result["class"])
        print(f"{name}: {label} ({ranked})")


def _json_result(result: dict[str, Any]) -> dict[str, Any]:
    """One image's prediction as plain JSON types."""
    return {
        "image": str(result["image"]),
        "class": str(result["class"]),
        "top": [{"class": str(c), "probability": float(p)} for c, p in result["top"]],
    }


def _cam(args: argparse.Namespace) -> None:
    from ninlayers import app

    path = app.explain_images(args.model, args.images, args.output, invert=args.invert)
    print(f"wrote {safe_text(path)}")


def _export(args: argparse.Namespace) -> None:
    from ninlayers.app.deploy import export_model

    written = export_model(
        args.model,
        args.output,
        format=args.format,
        int8=args.int8,
        input_type=args.input_type,
        output_type=args.output_type,
        calibration_images=args.calibration_images,
        data_dir=args.data_dir,
        image_folder=args.image_folder,
        test_time_flip=args.test_time_flip,
        verbose=sys.stdout.isatty(),
        test_time_shift=args.test_time_shift,
    )
    kind = "int8" if written["int8"] else "float32"
    print(
        f"wrote {safe_text(written['path'])} ({written['format']}, {kind}, "
        f"{written['bytes'] / 1e6:.1f} MB); it {_views_text(written)}; check it "
        f"with: ninlayers evaluate {safe_text(written['path'])}"
    )


def _views_text(written: dict[str, Any]) -> str:
    """What an exported file averages per image, and the option changing it."""
    shift = written["test_time_shift"]
    if not (written["test_time_flip"] or shift):
        return (
            "does one pass per image (--test-time-flip averages with the "
            "mirror image at twice the work)"
        )
    views, undo = [], []
    if written["test_time_flip"]:
        views.append("its mirror image")
        undo.append("--no-test-time-flip")
    if shift:
        views.append(f"itself moved {shift} pixels each way")
        undo.append("--test-time-shift 0")
    passes = (2 if written["test_time_flip"] else 1) * (5 if shift else 1)
    return (
        f"averages each image with {' and '.join(views)} ({passes} passes per "
        f"image; {' and '.join(undo)} for one)"
    )


def _benchmark(args: argparse.Namespace) -> None:
    from ninlayers.app.artifacts import write_json

    if args.architecture is not None and not args.kernels:
        raise ValueError(
            "--architecture chooses the trunk that --kernels profiles; the "
            "other benchmarks time NiN()'s. Add --kernels or leave it out."
        )
    if args.kernels:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "--kernels profiles TensorFlow's kernels: run it with "
                "--backend tensorflow"
            )
        from ninlayers.app.kernels import run_kernel_profile

        result = run_kernel_profile(
            steps=args.steps,
            repeats=args.repeats,
            architecture=_architecture(args.architecture) or "nin_28",
            batch_size=args.batch_size,
        )
    elif args.deployment:
        import logging

        from ninlayers.app.deploy_benchmark import run_deployment_benchmark

        # Keras's predict retraces for each batch size; the notes are noise here.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)

        result = run_deployment_benchmark(
            model=args.model,
            repeats=args.repeats,
            images=args.deployment_images,
            verbose=sys.stdout.isatty(),
        )
    else:
        from ninlayers.app.benchmark import run_benchmark

        result = run_benchmark(
            images=args.images,
            repeats=args.repeats,
            batch_size=args.batch_size,
            with_plain=not args.no_plain,
            with_backends=not args.no_backends,
            verbose=sys.stdout.isatty(),
        )
    if args.json:
        write_json(args.json, result)


_COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "cam": _cam,
    "export": _export,
    "benchmark": _benchmark,
}


def _run(args: argparse.Namespace) -> int:
    _COMMANDS[args.command](args)
    return 0


def _progress(verbose: int | None) -> int:
    """Keras's progress display: a bar on a terminal, else a line per epoch
    (a bar redrawn into a log file or a pipe is a line per step)."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def _active_backend() -> str:
    import keras

    return keras.backend.backend()


def _rerun_on(backend: str, argv: Sequence[str]) -> int:
    """Runs the same command in a new process on `backend`: Keras chooses
    its backend once, when it is imported, and this process already has."""
    import signal
    import threading

    command = [sys.executable, "-m", "ninlayers_cli", *argv]
    child = subprocess.Popen(command, env={**os.environ, "KERAS_BACKEND": backend})
    if threading.current_thread() is threading.main_thread():
        # A scheduler's SIGTERM reaches this process: pass it on, so the run
        # stops as it would without --backend, instead of being orphaned.
        signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum))
    try:
        return child.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the child too
        return child.wait()


def _use_jax_compilation_cache() -> None:
    """On JAX, keeps every compiled XLA program in JAX's persistent
    compilation cache, shared by the `ninlayers` commands: a later command
    with the same shapes loads them instead of compiling (a small training
    run took 35 s, then 18 s). `JAX_COMPILATION_CACHE_DIR` chooses the
    directory (default `$XDG_CACHE_HOME/ninlayers/jax`, else
    `~/.cache/ninlayers/jax`); `NINLAYERS_JAX_CACHE=0` turns it off."""
    if _active_backend() != "jax" or os.environ.get("NINLAYERS_JAX_CACHE") == "0":
        return
    import jax

    if not jax.config.jax_compilation_cache_dir:  # else: the user's own
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        jax.config.update(
            "jax_compilation_cache_dir", os.path.join(base, "ninlayers", "jax")
        )
    # JAX keeps only programs slower than 1 s to compile; here even the
    # weight initialisers' are worth it.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _on_sigterm(signum: int, frame: Any) -> None:
    from ninlayers.app import callbacks

    # The flag stops training at the end of its step even where the raise
    # below is swallowed (C code calling back into Python).
    callbacks.request_stop()
    raise callbacks.Terminated()


def _stop_on_sigterm() -> None:
    """Makes SIGTERM end the command as Ctrl-C does: at the next Python
    instruction, through the same clean-up (every file is written
    atomically, so a run keeps its last backup)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `ninlayers` command; returns its exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    if args.backend is not None and args.backend != _active_backend():
        return _rerun_on(args.backend, sys.argv[1:] if argv is None else argv)
    _use_jax_compilation_cache()
    _stop_on_sigterm()
    from ninlayers.app.callbacks import Terminated

    try:
        return _run(args)
    except Terminated:
        print(
            "ninlayers: terminated (SIGTERM); a training run keeps its last "
            "backup: the same command resumes it",
            file=sys.stderr,
        )
        return 143
    except KeyboardInterrupt:
        print("ninlayers: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"ninlayers: error: {one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        if args.debug:
            raise
        print(
            f"ninlayers: unexpected {type(error).__name__}: {one_line(error)} "
            "(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
