"""Draw the figures of the user guide into docs/_static (offline, a few seconds).

Run: python docs/figures.py

- ``maxvol_2d.png``: what the MaxVol certificates mean for points in the plane;
- ``architecture.png``: the packages and what each one imports;
- ``examples/coreset_digits.png``, ``examples/selected_pixels.png``: the plots
  of ``examples/coreset_logistic.py`` and ``examples/feature_selection.py``.
"""

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from maxvol_kit import fast_maxvol, rect_maxvol

DOCS = Path(__file__).resolve().parent
STATIC = DOCS / "_static"
EXAMPLES = DOCS.parent / "examples"


def _points(n=300, seed=0):
    """Correlated Gaussian points: the rows of an n x 2 matrix A."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2)) @ np.array([[1.6, 0.5], [0.0, 0.7]])


def _square_panel(ax, A):
    """Two rows of maximal |det|: every row is c1 a_i + c2 a_j with |c| <= 1."""
    res = fast_maxvol(A, tol=1.0)
    a, b = A[res.indices]
    corners = np.array([a + b, a - b, -a - b, -a + b, a + b])
    ax.fill(corners[:, 0], corners[:, 1], color="tab:blue", alpha=0.12)
    ax.plot(corners[:, 0], corners[:, 1], color="tab:blue", lw=1)
    ax.scatter(A[:, 0], A[:, 1], s=6, color="0.45")
    for v, name in ((a, "$a_i$"), (b, "$a_j$")):
        ax.annotate("", v, (0, 0), arrowprops={"arrowstyle": "->", "color": "tab:red"})
        ax.scatter(*v, s=40, color="tab:red", zorder=3)
        ax.annotate(name, v, textcoords="offset points", xytext=(5, 5))
    C = res.coefficients
    ax.set_title(
        f"fast_maxvol: 2 rows, max |C| = {np.abs(C).max():.2f}\n"
        r"every row inside $\{c_1 a_i + c_2 a_j : |c| \leq 1\}$",
        fontsize=9,
    )


def _rect_panel(ax, A, k=5):
    """K rows of large 2-volume: every other row has ||c|| <= 1 (an ellipse)."""
    res = rect_maxvol(A, n_rows=k)
    S = A[res.indices]
    G_inv = np.linalg.inv(S.T @ S)
    # x with x G^-1 x^T = 1 is the boundary ||c|| = 1, c = x A[I]^+.
    t = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    ellipse = circle @ np.linalg.cholesky(np.linalg.inv(G_inv)).T
    ax.fill(ellipse[:, 0], ellipse[:, 1], color="tab:green", alpha=0.12)
    ax.plot(ellipse[:, 0], ellipse[:, 1], color="tab:green", lw=1)
    ax.scatter(A[:, 0], A[:, 1], s=6, color="0.45")
    ax.scatter(S[:, 0], S[:, 1], s=40, color="tab:red", zorder=3)
    norms = np.sqrt(np.einsum("ij,jk,ik->i", A, G_inv, A))
    ax.set_title(
        f"rect_maxvol: {k} rows, max ||c|| = {norms.max():.2f}\n"
        r"every row inside $\{x : \|x A_I^+\| \leq 1\}$",
        fontsize=9,
    )


def maxvol_figure(path):
    A = _points()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), sharex=True, sharey=True)
    _square_panel(axes[0], A)
    _rect_panel(axes[1], A)
    for ax in axes:
        ax.axhline(0, color="0.8", lw=0.5, zorder=0)
        ax.axvline(0, color="0.8", lw=0.5, zorder=0)
        ax.set_aspect("equal")
    fig.suptitle("300 rows of a 300 x 2 matrix, as points in the plane", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# (name, x, y, width, the modules inside, colour) of the architecture figure
_PACKAGES = {
    "maxvol_kit": (
        0.5,
        0.4,
        9.0,
        "MaxVol functions · batched · rect · cross\n"
        "backends · estimators · sketches · utils (the names graft uses)",
        "#dbe8f5",
    ),
    "graft core": (
        0.5,
        2.3,
        9.0,
        "_checks · _format (batches) · _features (embeddings,\n"
        "per-sample gradients, eval mode)",
        "#eeeeee",
    ),
    "graft.selection": (
        0.5,
        4.2,
        2.9,
        "Selector protocol · selectors\nrounds · record · dynamic rank",
        "#dff0d8",
    ),
    "graft.loop": (0.5, 6.1, 2.9, "Graft · batches · processes\nchecks", "#dff0d8"),
    "graft.grass": (
        3.55,
        4.2,
        2.9,
        "projections · compressors\nattribution",
        "#fcf3cf",
    ),
    "graft.prune": (6.6, 4.2, 2.9, "channel pruning\n(activations, fold)", "#f6ddcc"),
    "graft.lightning": (0.5, 8.0, 2.9, "GraftCallback", "#dff0d8"),
    "graft.harness": (
        4.3,
        8.0,
        5.2,
        "graft run: data · models · report · cli\n"
        "(imports the library; the library never imports it)",
        "#e8daef",
    ),
}
# importer -> imported (a subpackage reaches another only through its __init__)
_IMPORTS = [
    ("graft.selection", "graft core"),
    ("graft.selection", "maxvol_kit"),
    ("graft.loop", "graft.selection"),
    ("graft.grass", "graft core"),
    ("graft.grass", "maxvol_kit"),
    ("graft.prune", "maxvol_kit"),
    ("graft.prune", "graft.loop"),
    ("graft.lightning", "graft.loop"),
    ("graft.harness", "graft.loop"),
    ("graft.harness", "graft.grass"),
    ("graft.harness", "graft.prune"),
    ("graft core", "maxvol_kit"),
]


def architecture_figure(path):
    """The packages as boxes, an arrow from each importer to what it imports."""
    fig, ax = plt.subplots(figsize=(9, 7.2))
    height = 1.25
    centre = {}
    for name, (x, y, w, inside, colour) in _PACKAGES.items():
        ax.add_patch(
            matplotlib.patches.FancyBboxPatch(
                (x, y),
                w,
                height,
                boxstyle="round,pad=0.04",
                fc=colour,
                ec="0.3",
                zorder=2,
            )
        )
        ax.text(
            x + w / 2,
            y + height - 0.3,
            name,
            ha="center",
            weight="bold",
            fontsize=10,
            zorder=3,
        )
        ax.text(
            x + w / 2,
            y + 0.45,
            inside,
            ha="center",
            va="center",
            fontsize=7.5,
            zorder=3,
        )
        centre[name] = (x + w / 2, y, y + height)
    for source, target in _IMPORTS:
        (xs, ys, _), (xt, _, yt) = centre[source], centre[target]
        if source == "graft.prune" and target == "graft.loop":
            xs, ys, xt, yt = 6.6, 4.8, 3.4, 6.7  # sideways, to the loop's box
        ax.annotate(
            "",
            xy=(xt, yt),
            xytext=(xs, ys),
            arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 1},
            zorder=1,
        )
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 9.6)
    ax.axis("off")
    ax.set_title(
        "Packages and their imports (arrow: imports; arrows that pass "
        "under a box go to the one below it)",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    maxvol_figure(STATIC / "maxvol_2d.png")
    architecture_figure(STATIC / "architecture.png")
    out = STATIC / "examples"
    out.mkdir(parents=True, exist_ok=True)
    _example("coreset_logistic").main(out)
    _example("feature_selection").main(out)
    plt.close("all")


if __name__ == "__main__":
    main()
