"""The benchmark's seed model is the seed network, and the run reports ratios."""

import json

import numpy as np
import pytest

from ninlayers import NiN, cli
from ninlayers.benchmark import seed_model


def test_seed_model_is_the_same_network_as_nin_default():
    seed = seed_model()
    nin = NiN(precision="float32")
    assert seed.count_params() == nin.count_params() == 1_588_198
    seed.set_weights(nin.get_weights())
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        seed.predict(x, verbose=0), nin.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
def test_benchmark_reports_rates_and_ratios(tmp_path, capsys):
    assert (
        cli.main(
            [
                "benchmark",
                "--images",
                "128",
                "--repeats",
                "1",
                "--no-torch",
                "--json",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "seed" in printed and "ninlayers" in printed
    result = json.loads((tmp_path / "b.json").read_text())
    for key in ("train", "predict"):
        rates = result[f"{key}_images_per_second"]
        assert set(rates) >= {"seed", "ninlayers"} and min(rates.values()) > 0
        ratio = result[f"{key}_ratio"]
        assert ratio["seed"] == 1.0
        assert ratio["ninlayers"] == pytest.approx(rates["ninlayers"] / rates["seed"])
