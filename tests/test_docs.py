"""The README and the docs say what the code does: their Python blocks
compile, every `>>>` example prints what it claims, and the README's first
block runs as written."""

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    return _BLOCK.findall(path.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_block_compiles(page):
    for index, block in enumerate(python_blocks(page)):
        compile(block, f"{page.name} block {index}", "exec")


#: The pages with `>>>` examples, which claim what they print.
EXAMPLES = [p for p in PAGES if ">>> " in p.read_text()]


@pytest.mark.parametrize("page", EXAMPLES, ids=lambda p: p.name)
def test_every_example_that_claims_an_output_prints_it(page):
    # A fence line ends an example's expected output, as a blank line does.
    text = re.sub(r"^```.*$", "", page.read_text(), flags=re.M)
    test = doctest.DocTestParser().get_doctest(text, {}, page.name, str(page), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted > 0


def test_pages_with_examples_are_found():
    assert "guide.md" in [p.name for p in EXAMPLES]


@pytest.mark.slow
def test_the_readmes_first_block_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    names = {
        "x_train": rng.integers(0, 256, (16, 28, 28, 1)).astype("uint8"),
        "y_train": rng.integers(0, 10, 16),
    }
    exec(python_blocks(ROOT / "README.md")[0], names)
    assert (tmp_path / "mine.keras").is_file()
