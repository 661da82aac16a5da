"""Sphinx configuration: the user guide (Markdown) and the API reference.

Build: make docs (sphinx -W, into docs/_build/html). Nothing is downloaded:
no intersphinx inventories, no notebooks executed. The API pages are stubs
written into docs/generated/ at build time, one per name in the ``__all__``
of ``maxvol_kit``, ``graft`` and ``graft.lightning``, so the reference always
lists every public name.
"""

import fnmatch
import importlib
import inspect
import re
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.ext.autodoc.mock import mock
from sphinx.util.docutils import SphinxDirective

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

project = "maxvol-kit"
author = "maxvol-kit contributors"
copyright = "maxvol-kit contributors"
release = importlib.import_module("maxvol_kit").__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "benchmarks/*.md"]
templates_path = []

# Markdown guides as they are: GitHub-style heading anchors for their links.
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# Stubs come from `write_api_stubs` below, not from autosummary's scan.
autosummary_generate = False
autodoc_typehints = "none"  # the numpydoc sections carry the types
autodoc_member_order = "bysource"
# graft.lightning imports lightning; document it from a mock where it is absent.
autodoc_mock_imports = [] if find_spec("lightning") else ["lightning"]

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = "maxvol-kit"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "header_links_before_dropdown": 4,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_show_sourcelink = False

# -- API reference: one stub per public name ---------------------------------

PUBLIC_MODULES = (
    "maxvol_kit",
    "maxvol_kit.utils",
    "graft",
    "graft.selection",
    "graft.lightning",
    "graft.hf",
    "graft.harness",
)
# scikit-learn adds set_*_request methods to every estimator class.
_SKLEARN_ROUTING = re.compile(r"^set_\w+_request$")


def _public_names(module_name):
    with mock(autodoc_mock_imports):
        module = importlib.import_module(module_name)
    return module, sorted(module.__all__, key=str.lower)


def _kind(obj):
    return "class" if inspect.isclass(obj) else "function"


def _stub(module_name, name, kind):
    title = f"{module_name}.{name}"
    body = [title, "=" * len(title), "", f".. currentmodule:: {module_name}", ""]
    if kind == "class":
        body += [f".. autoclass:: {name}", "   :members:"]
    else:
        body += [f".. autofunction:: {name}"]
    return "\n".join(body) + "\n"


def write_api_stubs(app):
    """Write docs/generated/<module>.<name>.rst for every public name."""
    out = Path(app.srcdir) / "generated"
    out.mkdir(exist_ok=True)
    wanted, done = set(), set()
    for module_name in PUBLIC_MODULES:
        module, names = _public_names(module_name)
        for name in names:
            if id(getattr(module, name)) in done:
                continue  # one page per object: graft.X, not graft.selection.X too
            done.add(id(getattr(module, name)))
            path = out / f"{module_name}.{name}.rst"
            text = _stub(module_name, name, _kind(getattr(module, name)))
            wanted.add(path)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)  # unchanged stubs keep their timestamps
    for stale in set(out.glob("*.rst")) - wanted:
        stale.unlink()


class PublicNames(SphinxDirective):
    """An autosummary table of a module's ``__all__`` (functions or classes)."""

    required_arguments = 1
    option_spec: ClassVar = {
        "kind": lambda arg: directives.choice(arg, ("function", "class")),
        # a module whose names are listed elsewhere already (graft's selectors)
        "except-in": directives.unchanged,
    }

    def run(self):
        module_name = self.arguments[0]
        module, names = _public_names(module_name)
        kind = self.options.get("kind")
        names = [n for n in names if kind in (None, _kind(getattr(module, n)))]
        if "except-in" in self.options:
            names = [
                n for n in names if n not in _public_names(self.options["except-in"])[1]
            ]
        if not names:
            return []
        lines = [
            f".. currentmodule:: {module_name}",
            "",
            ".. autosummary::",
            "   :toctree: generated",
            "   :nosignatures:",
            "",
        ] + [f"   {name}" for name in names]
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, self.get_source_info()[0]), 0, node)
        return node.children


def skip_sklearn_routing(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated metadata-routing setters."""
    return True if _SKLEARN_ROUTING.match(name) else None


# -- numpydoc types as plain text ------------------------------------------------

_TYPED_SECTIONS = {
    "Parameters",
    "Other Parameters",
    "Returns",
    "Yields",
    "Receives",
    "Attributes",
}
# A word ending in "_" is a reference in reST, "*" starts emphasis; in a type
# such as "ndarray of shape (n_features_in_,)" both are plain text.
_REST_MARKUP = re.compile(r"(?<=\w)_(?=\W|$)|\*")


def _escape(text):
    return _REST_MARKUP.sub(lambda m: "\\" + m.group(0), text)


def escape_numpydoc_types(app, what, name, obj, options, lines):
    """Escape reST markup in the type of each ``name : type`` line.

    Runs before numpydoc, which copies the types into reST unchanged.
    """
    section = None
    for k, line in enumerate(lines):
        underline = lines[k + 1].strip() if k + 1 < len(lines) else ""
        if underline and set(underline) == {"-"}:
            section = line.strip()
            continue
        if section not in _TYPED_SECTIONS or not line or line[0].isspace():
            continue
        if " : " in line:
            head, type_ = line.split(" : ", 1)
            lines[k] = f"{head} : {_escape(type_)}"
        elif section in ("Returns", "Yields", "Receives"):
            lines[k] = _escape(line)  # a type without a name


# -- optional guides ------------------------------------------------------------

_GLOB = re.compile(r"[*?\[]")


def drop_unmatched_globs(app, docname, source):
    """Let toctree glob entries of index.md that match no page yet mean nothing.

    Sphinx warns about a glob that matches no document; the guides listed
    with a glob in index.md are optional (added as they are written).
    """
    if docname != root_doc:
        return
    pages = [p.stem for p in DOCS.iterdir() if p.suffix in (".md", ".rst")]
    kept, in_toctree = [], False
    for line in source[0].splitlines(keepends=True):
        entry = line.strip()
        if entry.startswith("```"):
            in_toctree = entry == "```{toctree}"
        elif in_toctree and _GLOB.search(entry) and not entry.startswith(":"):
            if not any(fnmatch.fnmatchcase(page, entry) for page in pages):
                continue
        kept.append(line)
    source[0] = "".join(kept)


def setup(app):
    app.connect("builder-inited", write_api_stubs)
    app.connect("source-read", drop_unmatched_globs)
    app.connect("autodoc-skip-member", skip_sklearn_routing)
    app.connect("autodoc-process-docstring", escape_numpydoc_types, priority=100)
    app.add_directive("public-names", PublicNames)
