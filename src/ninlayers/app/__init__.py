"""The ninlayers application: the `ninlayers` command and its functions.

Built on the library (`import ninlayers`), never the other way round:

- `train` trains a recipe (`ninlayers.app.recipes`) on Fashion-MNIST or an
  image folder (`ninlayers.app.data`) and writes the model, metrics and
  pictures (`ninlayers.app.plots`) of the run;
- `evaluate`, `predict` and `explain_images` use a trained model
  (`ninlayers.app.inference`);
- `ninlayers.app.benchmark` times ninlayers against a plain Keras NiN;
- `ninlayers.app.cli` is the command line.

It needs matplotlib and Pillow besides the library's dependencies.
"""

from ninlayers.app.artifacts import load_model
from ninlayers.app.inference import evaluate, explain_images, load_images, predict
from ninlayers.app.trainer import train

__all__ = [
    "evaluate",
    "explain_images",
    "load_images",
    "load_model",
    "predict",
    "train",
]
