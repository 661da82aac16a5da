# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled loops of the small MaxVol path: the swaps, the LU start, a stack.

The swaps and the LU start make the LAPACK and BLAS calls that
``maxvol_kit._small`` makes through SciPy's wrappers (getrf, gecon, trtrs,
i?amax, ger), with the same arithmetic around them, so their results are
bit for bit the Python path's; what goes is the interpreter's time between
the calls (about 10 us a swap). The greedy of a stack (and of a single small
``fast_maxvol``) is classical Gram-Schmidt twice in plain loops along the
rows of ``A.T``: the same picks as LAPACK geqp3, the Python path's greedy,
up to roundoff, in 0.45-0.6x its time at 512-1024 x 32. A stack calls no
BLAS at all (its swaps run plain loops too) and releases the GIL, so it can
be split over threads: concurrent calls into SciPy's OpenBLAS serialise
(256 x 128 x 32 with geqp3 on two threads took 72 ms against 31 ms on one).
"""

from libc.float cimport DBL_EPSILON, FLT_EPSILON
from libc.math cimport INFINITY, fabs, log, sqrt
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport dger, idamax, isamax, sger
from scipy.linalg.cython_lapack cimport (
    dgecon, dgetrf, dtrtrs, sgecon, sgetrf, strtrs,
)

ctypedef fused real:
    float
    double


def swaps(real[:, ::1] C, int64_t[::1] idx, double tol, int64_t max_iter):
    """Classical MaxVol swaps on ``C`` in place: ``(n_swaps, log_gain, max|C|)``.

    The loop of ``maxvol_kit._small.swaps``: the largest ``|C_ij|`` (the
    first largest entry, or the first smallest when its magnitude is
    larger), one rank-1 update by BLAS ger, ``idx`` updated in place.
    """
    cdef int64_t n_iter = 0
    cdef double gain = 0.0, largest = 0.0
    cdef int ok
    with nogil:
        ok = _swaps(&C[0, 0], C.shape[0], C.shape[1], &idx[0], tol, max_iter,
                    &n_iter, &gain, &largest, True)
    if not ok:
        raise MemoryError()
    return n_iter, gain, largest


def lu_start(const real[:, :] A, real[::1, :] lu, real[:, ::1] C,
             int64_t[::1] rows, real[::1] diagonal):
    """The LU start of ``maxvol_kit._small.lu_coefficients``; returns ``rcond``.

    ``lu`` holds a Fortran-ordered copy of ``A`` (n, r), factored in place
    (getrf); fills ``rows`` (the pivot rows), ``diagonal`` (``|diag U|``)
    and ``C`` (``A A[rows]^-1``, from ``L21 L11^-1`` by trtrs), and returns
    gecon's estimate of ``1 / cond_1(A[rows])``.
    """
    cdef double rcond = 0.0
    cdef int status
    with nogil:
        status = _lu_start(A, lu, C, rows, diagonal, &rcond)
    if status != 0:
        raise MemoryError()
    return rcond


cdef int _lu_start(const real[:, :] A, real[::1, :] lu, real[:, ::1] C,
                   int64_t[::1] rows, real[::1] diagonal,
                   double *rcond) noexcept nogil:
    cdef Py_ssize_t n = lu.shape[0], r = lu.shape[1], i, j, t
    cdef int m = <int>n, k = <int>r, nrhs = <int>(n - r), info = 0
    cdef char one_norm = b'1', lower = b'L', trans = b'T', unit = b'U'
    cdef real anorm = 0, column, estimate = 0
    cdef int *ipiv = <int *>malloc(r * sizeof(int))
    cdef int *iwork = <int *>malloc(r * sizeof(int))
    cdef int64_t *perm = <int64_t *>malloc(n * sizeof(int64_t))
    cdef real *work = <real *>malloc(4 * r * sizeof(real))
    cdef real *B = <real *>malloc((r * (n - r) + 1) * sizeof(real))
    if ipiv == NULL or iwork == NULL or perm == NULL or work == NULL or B == NULL:
        free(ipiv)
        free(iwork)
        free(perm)
        free(work)
        free(B)
        return -2
    if real is float:
        sgetrf(&m, &k, &lu[0, 0], &m, ipiv, &info)
    else:
        dgetrf(&m, &k, &lu[0, 0], &m, ipiv, &info)
    for i in range(n):
        perm[i] = i
    for i in range(r):  # ipiv: row interchanges, 1-based
        t = perm[i]
        perm[i] = perm[ipiv[i] - 1]
        perm[ipiv[i] - 1] = t
    for j in range(r):
        rows[j] = perm[j]
        diagonal[j] = fabs(lu[j, j])
    for j in range(r):  # the 1-norm of A[rows], summed as NumPy's axis-0 sum
        column = 0
        for i in range(r):
            column = column + fabs(A[rows[i], j])
        if column > anorm:
            anorm = column
    if real is float:
        sgecon(&one_norm, &k, &lu[0, 0], &m, &anorm, &estimate, work, iwork, &info)
    else:
        dgecon(&one_norm, &k, &lu[0, 0], &m, &anorm, &estimate, work, iwork, &info)
    rcond[0] = estimate
    for i in range(n - r):  # B = L21^T, solved in place: L11^T X = L21^T
        for j in range(r):
            B[j + i * r] = lu[r + i, j]
    if nrhs > 0:
        if real is float:
            strtrs(&lower, &trans, &unit, &k, &nrhs, &lu[0, 0], &m, B, &k, &info)
        else:
            dtrtrs(&lower, &trans, &unit, &k, &nrhs, &lu[0, 0], &m, B, &k, &info)
    for i in range(n - r):
        for j in range(r):
            C[perm[r + i], j] = B[j + i * r]
    for i in range(r):
        for j in range(r):
            C[rows[i], j] = 1 if i == j else 0
    free(ipiv)
    free(iwork)
    free(perm)
    free(work)
    free(B)
    return 0


def stack(const real[:, :, ::1] A, real[:, :, ::1] C, int64_t[:, ::1] rows,
          real[:, ::1] diagonal, double[::1] gain, double[::1] peak,
          int64_t[::1] n_iter, double floor, double tol, int64_t max_iter,
          bint refine):
    """Greedy-volume rows, ``C`` and swaps of every problem of a stack ``A`` (b, n, r).

    Fills ``rows`` (the greedy picks in order), ``diagonal`` (the residual
    norms, whose product is ``|det A[k][rows]|``), ``C`` (``A[k]
    A[k][rows]^-1``, swapped to ``max|C| <= tol`` if ``refine``), ``gain``
    (the swaps' ``sum log|C_ij|``), ``peak`` (``max|C|``) and ``n_iter``.
    Returns the first problem whose residual falls to ``floor`` times the
    largest row norm (its ``C`` and the later problems untouched), or -1.
    """
    cdef Py_ssize_t b = A.shape[0], n = A.shape[1], r = A.shape[2], k = 0
    cdef int status = 0
    cdef real *buf = <real *>malloc((2 * r * n + 2 * n + 3 * r * r + 2 * r) * sizeof(real))
    if buf == NULL:
        raise MemoryError()
    with nogil:
        for k in range(b):
            status = _gs_problem(&A[k, 0, 0], &C[k, 0, 0], &rows[k, 0],
                                 &diagonal[k, 0], n, r, floor, buf)
            if status != 0:
                break
            peak[k] = _absmax(&C[k, 0, 0], n * r)
            gain[k] = 0.0
            n_iter[k] = 0
            if refine and peak[k] > tol:
                if not _swaps(&C[k, 0, 0], n, r, &rows[k, 0], tol, max_iter,
                              &n_iter[k], &gain[k], &peak[k], False):
                    status = -2
                    break
    free(buf)
    if status == -2:
        raise MemoryError()
    return k if status == 1 else -1


cdef int _gs_problem(const real *A, real *C, int64_t *rows, real *diagonal,
                     Py_ssize_t n, Py_ssize_t r, double floor,
                     real *buf) noexcept nogil:
    """Greedy-volume rows and ``C`` of row-major ``A`` (n, r): 0, or 1 if rank < r.

    Classical Gram-Schmidt twice gives ``A[rows] = L V^T`` (``V``
    orthonormal, ``L`` lower triangular with the residual norms on its
    diagonal); the products ``W = A V`` that update the scores give
    ``C = W L^-1``. Everything runs along rows of ``A.T`` (contiguous, so
    the loops vectorise).
    """
    cdef real *At = buf
    cdef real *Wt = At + r * n
    cdef real *scores = Wt + r * n
    cdef real *V = scores + n
    cdef real *L = V + r * r
    cdef real *y = L + r * r
    cdef real *c = y + r
    cdef real *exact = c + r
    cdef real *VT = exact + n
    cdef Py_ssize_t i, j, t, k, p, pass_
    cdef real s, norm, top, limit, x
    # LAPACK's test (xLAQP2): a downdated score below this fraction of its
    # last exact value has lost half its digits and is recomputed
    cdef real lost = sqrt(FLT_EPSILON if real is float else DBL_EPSILON)
    for i in range(n):
        for j in range(r):
            At[j * n + i] = A[i * r + j]
    for i in range(n):
        scores[i] = 0
    for j in range(r):
        for i in range(n):
            scores[i] += At[j * n + i] * At[j * n + i]
    top = scores[0]
    for i in range(n):
        exact[i] = scores[i]
        if scores[i] > top:
            top = scores[i]
    limit = <real>(floor * floor) * top
    for t in range(r * r):
        L[t] = 0
    for k in range(r):
        p = 0
        top = scores[0]
        for i in range(1, n):
            if scores[i] > top:
                top = scores[i]
                p = i
        rows[k] = p
        for j in range(r):
            y[j] = A[p * r + j]
        for pass_ in range(2):  # c = V y and y -= V^T c, as axpys (they vectorise)
            for t in range(k):
                c[t] = 0
            for j in range(r):
                x = y[j]
                for t in range(k):
                    c[t] += x * VT[j * r + t]
            for t in range(k):
                L[k * r + t] += c[t]
                x = c[t]
                for j in range(r):
                    y[j] -= x * V[t * r + j]
        s = 0
        for j in range(r):
            s += y[j] * y[j]
        if not s > limit:
            return 1
        norm = sqrt(s)
        L[k * r + k] = norm
        diagonal[k] = norm
        for j in range(r):
            V[k * r + j] = y[j] / norm
            VT[j * r + k] = V[k * r + j]
        for i in range(n):
            Wt[k * n + i] = 0
        for j in range(r):
            x = V[k * r + j]
            for i in range(n):
                Wt[k * n + i] += x * At[j * n + i]
        for i in range(n):
            scores[i] -= Wt[k * n + i] * Wt[k * n + i]
        scores[p] = -INFINITY
        if k + 1 < r:
            for i in range(n):
                if scores[i] != -INFINITY and scores[i] <= lost * exact[i]:
                    scores[i] = _residual(A + i * r, Wt + i, n, V, k + 1, r, y)
                    exact[i] = scores[i]
    # C L = W, row by row, backwards over the columns (in place of Wt)
    for t in range(r - 1, -1, -1):
        for j in range(t + 1, r):
            x = L[j * r + t]
            for i in range(n):
                Wt[t * n + i] -= x * Wt[j * n + i]
        x = L[t * r + t]
        for i in range(n):
            Wt[t * n + i] /= x
    for i in range(n):
        for t in range(r):
            C[i * r + t] = Wt[t * n + i]
    for k in range(r):
        for t in range(r):
            C[rows[k] * r + t] = 1 if k == t else 0
    return 0


cdef real _residual(const real *a, real *w, Py_ssize_t stride, real *V,
                    Py_ssize_t k, Py_ssize_t r, real *y) noexcept nogil:
    """``||a - sum_t w[t * stride] V[t]||^2`` over the first ``k`` rows of ``V``."""
    cdef Py_ssize_t t, j
    cdef real s = 0
    for j in range(r):
        y[j] = a[j]
    for t in range(k):
        for j in range(r):
            y[j] -= w[t * stride] * V[t * r + j]
    for j in range(r):
        s += y[j] * y[j]
    return s


cdef double _absmax(real *x, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t t
    cdef double best = 0.0
    for t in range(size):
        if fabs(x[t]) > best:
            best = fabs(x[t])
    return best


cdef int _swaps(real *C, Py_ssize_t n, Py_ssize_t r, int64_t *idx, double tol,
                int64_t max_iter, int64_t *n_iter, double *gain,
                double *largest, bint blas) noexcept nogil:
    """The swap loop on row-major ``C`` (n, r); 0 if out of memory.

    ``blas``: BLAS i?amax and ger, as the Python loop (bit for bit); else
    plain loops, which threads can run side by side.
    """
    cdef Py_ssize_t t, i, j, k, p, size = n * r
    cdef real pivot, x, one = 1, minus_one = -1
    cdef int m = <int>r, cols = <int>n, inc = 1
    cdef real *u = <real *>malloc(n * sizeof(real))
    cdef real *w = <real *>malloc(r * sizeof(real))
    if u == NULL or w == NULL:
        free(u)
        free(w)
        return 0
    for j in range(r):
        for t in range(r):
            C[idx[j] * r + t] = 0
        C[idx[j] * r + j] = 1
    while True:
        p = _largest(C, size) if blas else _largest_plain(C, size)
        i = p // r
        j = p % r
        largest[0] = fabs(C[p])
        if n_iter[0] >= max_iter or not largest[0] > tol:
            break
        pivot = C[p]
        for t in range(n):
            u[t] = C[t * r + j]
        for t in range(r):
            w[t] = C[i * r + t] / pivot
        w[j] -= one / pivot
        # C is row-major, so it is C.T (r x n) in Fortran order: C.T -= w u^T
        if not blas:
            for t in range(n):
                x = -u[t]
                for k in range(r):
                    C[t * r + k] += w[k] * x
        elif real is float:
            sger(&m, &cols, &minus_one, w, &inc, u, &inc, C, &m)
        else:
            dger(&m, &cols, &minus_one, w, &inc, u, &inc, C, &m)
        for t in range(r):
            C[i * r + t] = 0
        C[i * r + j] = 1
        idx[j] = i
        gain[0] += log(largest[0])
        n_iter[0] += 1
    free(u)
    free(w)
    return 1


cdef Py_ssize_t _largest(real *x, Py_ssize_t size) noexcept nogil:
    """The entry NumPy's rule picks: the first largest, or the first smallest
    when its magnitude is larger (``argmax``/``argmin``, ties to the largest).

    BLAS i?amax finds the first entry of largest magnitude ``M``; if it is
    ``-M``, the first ``+M`` after it (there is none before) wins the tie.
    """
    cdef int count = <int>size, inc = 1
    cdef Py_ssize_t p, t
    if real is float:
        p = isamax(&count, x, &inc) - 1
    else:
        p = idamax(&count, x, &inc) - 1
    if x[p] < 0:
        for t in range(p + 1, size):
            if x[t] == -x[p]:
                return t
    return p


cdef Py_ssize_t _largest_plain(real *x, Py_ssize_t size) noexcept nogil:
    """:func:`_largest` without BLAS: the first largest and the first smallest."""
    cdef Py_ssize_t t, high = 0, low = 0
    cdef real top = x[0], bottom = x[0]
    for t in range(1, size):
        if x[t] > top:
            top = x[t]
            high = t
        elif x[t] < bottom:
            bottom = x[t]
            low = t
    return high if top >= -bottom else low
