"""Build maxvolpy 0.3.8 (Cython MaxVol) as a peer for ``maxvol_bench.py``.

maxvolpy's last release builds with ``numpy.distutils``, which NumPy 2 no
longer has, and declares its BLAS/LAPACK routines as Fortran externs that
need a system BLAS at link time. This script downloads the sdist from PyPI
(checking its SHA-256), makes the three mechanical changes that let it
build today, and installs it into the running interpreter's environment:

- ``setup.py``: setuptools + ``Cython.Build.cythonize`` instead of
  ``numpy.distutils``;
- ``_maxvol.pyx.src``: BLAS/LAPACK through ``scipy.linalg.cython_blas`` /
  ``cython_lapack`` (SciPy's own OpenBLAS, as the benchmark's other peers)
  instead of the ``cdef extern`` Fortran symbols;
- Python 2 ``raise E, "msg"`` statements written as ``raise E("msg")``.

The algorithms are untouched. Needs a C compiler; installs Cython 3 if it
is missing. Then ``python benchmarks/maxvol_bench.py`` has the maxvolpy rows.

    python benchmarks/build_maxvolpy.py
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "0.3.8"
INDEX = "https://pypi.org/simple/maxvolpy/"  # the JSON simple API (PEP 691)

CIMPORTS = """
from scipy.linalg.cython_blas cimport (
    strsm, dtrsm, ctrsm, ztrsm, scopy, dcopy, ccopy, zcopy,
    sgemv, dgemv, cgemv, zgemv, sger, dger, cgerc, cgeru, zgerc, zgeru,
    isamax, idamax,
)
from scipy.linalg.cython_lapack cimport sgetrf, dgetrf, cgetrf, zgetrf
"""

SETUP = """
import os
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# _maxvol.pyx is generated from the template _maxvol.pyx.src (run in place).
os.chdir("maxvolpy")
exec(open("_maxvol.pyx.src").read(), {})
os.chdir("..")
setup(
    name="maxvolpy",
    version="VERSION",
    license="MIT",
    packages=["maxvolpy"],
    ext_modules=cythonize(
        [Extension("maxvolpy._maxvol", ["maxvolpy/_maxvol.pyx"],
                   include_dirs=[numpy.get_include()])],
        language_level=3,
    ),
)
""".replace("VERSION", VERSION)


def patched_template(text):
    """``_maxvol.pyx.src`` with SciPy's Cython BLAS and Python 3 raises."""
    start = text.index("cdef extern:")
    end = text.index("\n\n\n", start)
    text = text[:start] + text[end:]
    first_import = re.search(r"^(cimport|import) ", text, flags=re.M).start()
    text = text[:first_import] + CIMPORTS.lstrip() + "\n" + text[first_import:]
    # scipy's routines have no trailing underscore: ${D}copy_( -> ${D}copy(
    text = re.sub(r"(\$\{D\}\w+|i\$\{D2\}amax|\$ger[cu])_\(", r"\1(", text)
    text = re.sub(r"ger([cu])_='(\w+)_'", r"ger\1='\2'", text)
    return re.sub(r'raise (\w+), ("[^"]*")', r"raise \1(\2)", text)


def download(directory):
    """The sdist from PyPI, its digest checked; returns the unpacked folder."""
    request = urllib.request.Request(
        INDEX, headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        files = json.load(reply)["files"]
    (sdist,) = [f for f in files if f["filename"] == f"maxvolpy-{VERSION}.tar.gz"]
    with urllib.request.urlopen(sdist["url"], timeout=120) as reply:
        data = reply.read()
    if hashlib.sha256(data).hexdigest() != sdist["hashes"]["sha256"]:
        raise SystemExit("the maxvolpy sdist does not match PyPI's SHA-256")
    archive = directory / sdist["filename"]
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    return directory / f"maxvolpy-{VERSION}"


def main():
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "cython>=3"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = download(Path(tmp))
        template = source / "maxvolpy" / "_maxvol.pyx.src"
        template.write_text(patched_template(template.read_text()))
        (source / "maxvolpy" / "setup.py").unlink()  # numpy.distutils
        (source / "setup.py").write_text(SETUP)
        build = [*pip, "--no-build-isolation", "--no-deps", str(source)]
        subprocess.run(build, check=True)
    check = "import maxvolpy._maxvol; print('maxvolpy', maxvolpy.__version__)"
    subprocess.run([sys.executable, "-c", check], check=True)


if __name__ == "__main__":
    main()
