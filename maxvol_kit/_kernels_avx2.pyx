# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""``maxvol_kit._kernels`` built with AVX2 and FMA (x86-64; see setup.py).

The same source; the compiler's vector code for the pivoted QR's sweeps,
the back substitution and the swaps' updates is twice as wide and fuses
each multiply-add (one thread: 0.64-0.87x the baseline build's time on
stacks of 128 x 32 .. 512 x 64). ``maxvol_kit._small`` imports it where
the CPU has both (:func:`avx2_fma` of the baseline build says).
"""

include "_kernels.pyx"
