"""Draws docs/img/imports.png: which ninlayers module imports which.

Run `python docs/make_imports.py`. The arrows come from the source itself
(every `import` and `from ... import` between ninlayers modules, lazy ones
too); the deprecated shims of the old module paths are left out.
"""

import ast
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ninlayers"
SHIMS = {"benchmark", "cli", "datasets", "experiment", "plots", "training"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        if name.split(".")[-1] not in SHIMS or ".app." in name:
            found[name] = path
    return found


def edges(found: dict[str, Path]) -> set[tuple[str, str]]:
    packages = {"ninlayers", "ninlayers.app"}
    pairs = set()
    for name, path in found.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                submodules = [f"{node.module}.{a.name}" for a in node.names]
                submodules = [m for m in submodules if m in found]
                targets = submodules or [node.module]
            for target in targets:
                if target in found and target != name:
                    if target in packages and name.startswith(target):
                        continue  # a module importing its own package's version
                    pairs.add((name, target))
    return pairs


def levels(found: dict[str, Path], pairs: set[tuple[str, str]]) -> dict[str, int]:
    """Each module's row: 0 for those importing no other module of their
    part, else 1 + the highest of those it imports; the application's rows
    start above the library's."""

    def heights(part: list[str]) -> dict[str, int]:
        height: dict[str, int] = {}

        def visit(module: str) -> int:
            if module not in height:
                height[module] = 0  # guards cycles (package re-exports)
                below = [visit(t) for s, t in pairs if s == module and t in part]
                height[module] = 1 + max(below) if below else 0
            return height[module]

        for module in part:
            visit(module)
        return height

    library = [m for m in found if not m.startswith("ninlayers.app")]
    app = [m for m in found if m.startswith("ninlayers.app")]
    height = heights(library)
    top = max(height.values()) + 1
    height.update({m: top + h for m, h in heights(app).items()})
    return height


def main(path: Path) -> None:
    found = modules()
    pairs = edges(found)
    height = levels(found, pairs)
    rows: dict[int, list[str]] = {}
    for module in sorted(found):
        rows.setdefault(height[module], []).append(module)
    where = {}
    for y, row in rows.items():
        for i, module in enumerate(row):
            where[module] = ((i + 0.5) / len(row), y)
    fig = Figure(figsize=(12, 9))
    ax = fig.subplots()
    for source, target in sorted(pairs):
        (x0, y0), (x1, y1) = where[source], where[target]
        ax.annotate(
            "",
            xy=(x1, y1 + 0.15),
            xytext=(x0, y0 - 0.15),
            arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.6},
        )
    for module, (x, y) in where.items():
        color = "#fde3c8" if module.startswith("ninlayers.app") else "#dbe9f6"
        ax.text(
            x,
            y,
            module.replace("ninlayers.", "") if module != "ninlayers" else module,
            ha="center",
            va="center",
            fontsize=9,
            bbox={"boxstyle": "round", "fc": color, "ec": "0.4"},
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, max(rows) + 0.5)
    ax.axis("off")
    ax.set_title(
        "What imports what. Blue: the library (`import ninlayers`); orange: the "
        "application (ninlayers.app).\nArrows point from the importing module "
        "down to the imported one; none goes from blue to orange.",
        fontsize=10,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main(ROOT / "docs" / "img" / "imports.png")
