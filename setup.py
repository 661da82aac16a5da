"""The optional compiled loops of the small MaxVol path (maxvol_kit._kernels).

Everything else is in pyproject.toml. Without a C compiler the build goes on
without the extension and the package runs the same loops in Python. On
x86-64 with GCC or Clang a second build of the same source for AVX2 and FMA
(maxvol_kit._kernels_avx2) is made too; the package imports it only where the
CPU has both.
"""

import platform
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("maxvol_kit._kernels", ["maxvol_kit/_kernels.pyx"], optional=True)
]
if platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32":
    extensions.append(
        Extension(
            "maxvol_kit._kernels_avx2",
            ["maxvol_kit/_kernels_avx2.pyx"],
            extra_compile_args=["-mavx2", "-mfma"],
            optional=True,
        )
    )

setup(ext_modules=cythonize(extensions, language_level=3))
