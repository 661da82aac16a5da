"""The optional compiled loops of the small MaxVol path (maxvol_kit._kernels).

Everything else is in pyproject.toml. Without a C compiler the build goes on
without the extension and the package runs the same loops in Python.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("maxvol_kit._kernels", ["maxvol_kit/_kernels.pyx"], optional=True)],
        language_level=3,
    )
)
