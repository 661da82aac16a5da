"""Input checks shared by the public functions, with messages that say the fix."""

from __future__ import annotations

import math
import numbers
import os
import sys

import array_api_compat
import numpy as np

from maxvol_kit._backend import get_backend

__all__ = [
    "ConvergenceWarning",
    "check_flag",
    "check_indices",
    "check_int",
    "check_matrix",
    "check_stack",
    "check_tol",
    "rank_deficient_error",
    "rescaled",
    "times_power_of_two",
    "unmasked",
]

_SUPPORTED = ("float32", "float64")
# max|A| in [2^-L, 2^L] needs no rescaling: an eighth of the exponent range.
_SAFE_EXPONENT = {name: int(np.finfo(name).maxexp) // 8 for name in _SUPPORTED}
# NumPy dtypes by name without ``dtype.name`` (Python code, ~5 us a call).
_NUMPY_NAMES = {np.dtype(name): name for name in _SUPPORTED}


class ConvergenceWarning(UserWarning):
    """An iteration stopped at its cap before meeting its tolerance.

    Silence it with ``warnings.filterwarnings("ignore",
    category=maxvol_kit.ConvergenceWarning)``.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from maxvol_kit import ConvergenceWarning, maxvol
    >>> A = np.random.default_rng(1).standard_normal((200, 8))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = maxvol(A, max_iter=0)
    >>> res.converged == (not any(w.category is ConvergenceWarning for w in caught))
    True
    """


def _as_array(A, name):
    if type(A) is np.ndarray and A.dtype.isnative:  # most calls: nothing to unwrap
        return A
    if A is None:
        raise TypeError(f"{name} must be a 2-D array of floats, got None.")
    A = _unwrap_container(A, name)
    try:
        array_api_compat.array_namespace(A)
    except TypeError:
        # Array-likes (lists, tuples) become NumPy arrays, as in scikit-learn.
        try:
            return np.asarray(A)
        except (ValueError, TypeError) as exc:
            raise TypeError(
                f"{name} must be a 2-D array of floats, got {type(A).__name__} "
                f"that cannot be converted: {exc}"
            ) from None
    return A


def is_sparse(A):
    """A scipy.sparse matrix or array (checked without importing scipy.sparse)."""
    return hasattr(A, "tocsr") and hasattr(A, "toarray")


def _unwrap_container(A, name):
    """The plain dense array behind the containers users pass, or a clear error."""
    if isinstance(A, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{name} is a path ({os.fsdecode(A)!r}), not an array; load it first, "
            f"e.g. {name}=np.load(path) (tournament_maxvol reads .npy paths itself)."
        )
    if is_sparse(A):
        raise TypeError(
            f"{name} is a scipy.sparse {type(A).__name__} of shape {A.shape}; MaxVol "
            f"works on dense matrices: pass {name}.toarray() (or reduce it first, "
            "e.g. with TruncatedSVD)."
        )
    if isinstance(A, np.ma.MaskedArray):
        return unmasked(A, name)
    if isinstance(A, np.matrix):
        return np.asarray(A)
    if isinstance(A, np.ndarray) and not A.dtype.isnative:  # big-endian data
        return A.astype(A.dtype.newbyteorder("="))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(A, torch.Tensor):
        if A.layout != torch.strided:
            raise TypeError(
                f"{name} is a torch tensor with layout {A.layout}; MaxVol works on "
                f"dense tensors: pass {name}.to_dense()."
            )
        if A.device.type == "meta":
            raise TypeError(
                f"{name} is a tensor on the meta device (a shape without data); "
                "pass a tensor that holds values."
            )
    return A


def unmasked(A, name):
    """The data of masked array ``A``; a ValueError if any entry is masked."""
    if np.ma.getmaskarray(A).any():
        raise ValueError(
            f"{name} is a masked array with {int(np.ma.count_masked(A))} masked "
            f"entries; fill them ({name}.filled(value)) or drop those rows first."
        )
    return np.asarray(A.data)


def rescaled(A, backend):
    """``A`` times a power of two that puts ``max|A|`` in a safe range.

    MaxVol is invariant to the scale of ``A`` (the rows and the coefficients
    ``C`` do not change), but squared norms and inverses over- or underflow
    far from 1. Inside ``[2^-L, 2^L]`` (``L`` an eighth of the dtype's
    exponent range: 2^128 for float64, 2^16 for float32) ``A`` is returned
    as it is; outside, it is multiplied by ``2^-e`` with ``2^(e-1) <=
    max|A| < 2^e``, which is exact. For a 3-D stack every problem gets its
    own factor. Returns ``(A, e)``, ``e`` an int (an int64 array of shape
    (b,) for a stack): the log-volume in the caller's units is the scaled
    one plus ``k * e * log 2`` for ``k`` singular values.
    """
    return _rescale(A, backend, _peaks(A, backend))


def _rescale(A, backend, peak):
    """:func:`rescaled` once ``peak = max|A|`` (finite) is known."""
    limit = _SAFE_EXPONENT[_dtype_name(A)]
    if np.ndim(peak) == 0 and (peak == 0 or 2.0**-limit <= peak <= 2.0**limit):
        return A, 0  # nothing to do (most calls)
    _, e = np.frexp(peak)
    e = np.where((peak == 0) | (np.abs(e) <= limit), 0, e).astype(np.int64)
    if not e.any():
        return A, (e if A.ndim == 3 else 0)
    return times_power_of_two(A, -e, backend), (e if A.ndim == 3 else int(e))


def times_power_of_two(A, e, backend):
    """``A * 2^e``, exactly, in steps whose factors ``A``'s dtype can hold.

    ``e`` is an int, or an int array of shape (b,) for a stack (one exponent
    per problem). Undoes :func:`rescaled` with ``e`` its exponent.
    """
    xp = backend.xp
    step_limit = np.finfo(_numpy_dtype(A)).maxexp - 3  # 2**step is representable
    left = np.asarray(e, dtype=np.int64)
    while left.any():
        step = np.clip(left, -step_limit, step_limit)
        if A.ndim == 3:
            factor = backend.asarray(np.exp2(step.astype(np.float64)), dtype=A.dtype)
            A = A * xp.reshape(factor, (-1, 1, 1))
        else:
            A = A * float(2.0 ** int(step))
        left = left - step
    return A


def _dtype_name(A):
    """``"float64"`` for NumPy's, torch's and CuPy's float64 alike."""
    name = _NUMPY_NAMES.get(A.dtype)  # NumPy and CuPy, the supported ones
    return name if name is not None else str(A.dtype).rsplit(".", 1)[-1]


def _numpy_dtype(A):
    return np.dtype(_dtype_name(A))


def _check_dtype(A, name):
    kind = _dtype_name(A)
    if kind in _SUPPORTED:
        return
    if "bool" in kind:
        hint = f"pass {name}.astype(float64) if the booleans are meant as 0/1"
    elif "int" in kind:
        hint = f"pass {name}.astype(float64)"
    elif "complex" in kind:
        hint = "complex input is not supported; split it into real and imaginary parts"
    else:
        hint = f"pass {name}.astype(float64)"
    raise TypeError(
        f"{name} has dtype {kind}; only float32 and float64 are supported: {hint}."
    )


def check_matrix(A, *, name="A", tall=True, rescale=False):
    """Validate a 2-D float matrix; return ``(A, backend)``.

    With ``rescale``, return ``(A, backend, e)`` with ``A`` brought into a
    safe range by :func:`rescaled` (the same pass finds NaN and inf).

    Parameters
    ----------
    A : array-like of shape (n, r)
        The matrix. Lists are converted to NumPy arrays.
    name : str
        The parameter name used in error messages.
    tall : bool
        Require ``n >= r`` (every MaxVol problem selects ``r`` of ``n`` rows).
    rescale : bool
        Scale ``A`` by a power of two as :func:`rescaled` does.
    """
    A = _as_array(A, name)
    if A.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D, got {A.ndim}-D with shape {tuple(A.shape)}; "
            f"reshape it to (n_rows, n_columns), e.g. {name}.reshape(-1, 1) for one "
            "column."
        )
    return _check_values(A, name, tall, rescale)


def check_stack(A, *, name="A"):
    """Validate a stack of tall float matrices (b, n, r), each problem rescaled.

    Returns ``(A, backend, e)`` as :func:`check_matrix` with ``rescale``.
    """
    A = _as_array(A, name)
    if A.ndim != 3:
        raise ValueError(
            f"{name} must be 3-D (a stack of b matrices of shape (n, r)), got "
            f"{A.ndim}-D with shape {tuple(A.shape)}; for one matrix call "
            "fast_maxvol instead."
        )
    return _check_values(A, name, True, True)


def _check_values(A, name, tall, rescale):
    """Dtype, emptiness, shape and finiteness checks shared by 2-D and 3-D input."""
    _check_dtype(A, name)
    n, r = A.shape[-2:]
    if 0 in tuple(A.shape):
        raise ValueError(
            f"{name} is empty (shape {tuple(A.shape)}); pass a non-empty matrix."
        )
    if tall and n < r:
        raise ValueError(
            f"{name} has fewer rows than columns (shape {tuple(A.shape)}); MaxVol "
            f"selects r rows out of n >= r. Pass {name}.T to select columns, or "
            "reduce the columns to a rank-r basis first."
        )
    backend = get_backend(A)
    A = backend.ops.prepare(A)
    if rescale:
        peak = _peaks(A, backend)
        finite = (
            math.isfinite(peak) if peak.ndim == 0 else bool(np.isfinite(peak).all())
        )
    else:
        finite = backend.ops.all_finite(A)
    if not finite:
        raise ValueError(
            f"{name} contains NaN or infinite values; remove or impute them first."
        )
    if rescale:
        A, e = _rescale(A, backend, peak)
        return A, backend, e
    return A, backend


def _peaks(A, backend):
    """``max|A|`` (per problem for a stack) on the host; NaN if A holds one."""
    if isinstance(A, np.ndarray) and A.ndim == 2:  # the small problems' fast path
        return np.float64(max(A.max(), -A.min()))
    xp = backend.xp
    axes = tuple(range(1, A.ndim)) if A.ndim == 3 else None
    peak = xp.maximum(xp.max(A, axis=axes), -xp.min(A, axis=axes))
    return backend.ops.to_host(peak).astype(np.float64)


def check_tol(tol, *, name="tol", minimum=1.0, usual=1.05):
    """Validate a real tolerance ``>= minimum``; return it as a float."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(tol).__name__}.")
    tol = float(tol)
    if not (math.isfinite(tol) and tol >= minimum):
        raise ValueError(
            f"{name} ({tol!r}) must be a finite number >= {minimum}; "
            f"the usual choice is {name}={usual}."
        )
    return tol


def check_flag(value, *, name):
    """Validate a bool (NumPy bools too); strings and None are refused.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit.utils import check_flag
    >>> check_flag(np.True_, name="refine")
    True
    >>> check_flag("yes", name="refine")
    Traceback (most recent call last):
    ...
    TypeError: refine must be True or False, got str 'yes'.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be True or False, got {type(value).__name__} {value!r}."
        )
    return bool(value)


def check_int(value, *, name, low, high, fix):
    """Validate an integer in ``[low, high]``; ``fix`` says what to pass instead."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name} ({value}) must be in [{low}, {high}]; {fix}.")
    return value


def check_indices(idx, *, name, n, size):
    """Validate ``size`` distinct row indices in ``[0, n)``; return a NumPy array."""
    arr = np.asarray(idx)
    if arr.ndim != 1 or arr.shape[0] != size:
        raise ValueError(f"{name} must hold {size} row indices, got shape {arr.shape}.")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}.")
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(
            f"{name} has indices outside [0, {n}); pass valid row numbers."
        )
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name} repeats a row index; pass {size} distinct rows.")
    return arr.astype(np.int64)


def rank_deficient_error(name, shape, found, wanted, hint):
    """The error raised when a matrix has numerical rank below what is asked."""
    return ValueError(
        f"{name} (shape {tuple(shape)}) has numerical rank {found} < {wanted}: no "
        f"{wanted} rows of it are linearly independent to working precision; {hint}."
    )
