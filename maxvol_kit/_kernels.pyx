# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled loops of the small MaxVol path: the swaps, the LU start, a stack.

The same LAPACK and BLAS calls as ``maxvol_kit._small`` makes through
SciPy's wrappers (geqp3 with SciPy's default workspace, getrf, gecon,
trtrs, i?amax, ger), and the same arithmetic around them, so every result
is bit for bit the one of the Python path; what goes is the interpreter's
time between the calls (about 10 us a swap). The loops release the GIL,
but a stack is not split over threads: concurrent calls into SciPy's
OpenBLAS serialise (256 x 128 x 32 on two threads took 72 ms against 31 ms
on one). A greedy without LAPACK (Gram-Schmidt in plain loops, which
threads can run side by side) was 0.5x geqp3's time at 512-1024 x 32 but
1.1-1.3x at 128 x 32, lost digits of ``C`` when the columns' scales spread
(8e-8 against 7e-16 at a spread of 1e13) and broke exact ties unlike
geqp3; it is not kept.
"""

from libc.math cimport fabs, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport dger, idamax, isamax, sger
from scipy.linalg.cython_lapack cimport (
    dgecon, dgeqp3, dgetrf, dtrtrs, sgecon, sgeqp3, sgetrf, strtrs,
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
                    &n_iter, &gain, &largest)
    if not ok:
        raise MemoryError()
    return n_iter, gain, largest


def stack(real[:, :, ::1] work, real[:, :, ::1] C, int64_t[:, ::1] rows,
          real[:, ::1] diagonal, double[::1] gain, double[::1] peak,
          int64_t[::1] n_iter, double floor, double tol, int64_t max_iter,
          bint refine):
    """Greedy pivots, coefficients and swaps of every problem of a stack.

    ``work`` holds a C-ordered copy of the stack ``A`` (b, n, r): problem
    ``k``'s ``work[k]`` is ``A[k].T`` in Fortran order, factored in place by
    geqp3 and then holding ``R11^-1 R12`` (trtrs). Fills ``rows`` (the
    pivots), ``diagonal`` (``|diag R11|``), ``C`` (``A[k] A[k][rows]^-1``,
    swapped to ``max|C| <= tol`` if ``refine``), ``gain`` (the swaps'
    ``sum log|C_ij|``), ``peak`` (``max|C|``) and ``n_iter``. Returns the
    first problem whose pivots fall below ``floor`` times the first (its
    ``C`` and the later problems untouched), or -1.
    """
    cdef Py_ssize_t n = work.shape[1], r = work.shape[2], k
    cdef int status = 0
    with nogil:
        for k in range(work.shape[0]):
            status = _problem(&work[k, 0, 0], &C[k, 0, 0], &rows[k, 0],
                              &diagonal[k, 0], &gain[k], &peak[k], &n_iter[k],
                              n, r, floor, tol, max_iter, refine)
            if status != 0:
                break
    if status == -2:
        raise MemoryError()
    return k if status == 1 else -1


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


cdef int _problem(real *work, real *C, int64_t *rows, real *diagonal,
                  double *gain, double *peak, int64_t *n_iter, Py_ssize_t n,
                  Py_ssize_t r, double floor, double tol, int64_t max_iter,
                  bint refine) noexcept nogil:
    """One problem of :func:`stack`: 0 done, 1 rank-deficient, -2 no memory."""
    cdef int m = <int>r, cols = <int>n, lwork = 3 * (<int>n + 1), info = 0
    cdef int nrhs = <int>(n - r)
    cdef Py_ssize_t i, j
    cdef char upper = b'U', no = b'N'
    cdef int *jpvt = <int *>malloc(n * sizeof(int))
    cdef real *tau = <real *>malloc(r * sizeof(real))
    cdef real *scratch = <real *>malloc(lwork * sizeof(real))
    if jpvt == NULL or tau == NULL or scratch == NULL:
        free(jpvt)
        free(tau)
        free(scratch)
        return -2
    for j in range(n):
        jpvt[j] = 0
    if real is float:
        sgeqp3(&m, &cols, work, &m, jpvt, tau, scratch, &lwork, &info)
    else:
        dgeqp3(&m, &cols, work, &m, jpvt, tau, scratch, &lwork, &info)
    free(tau)
    free(scratch)
    for j in range(r):
        diagonal[j] = fabs(work[j * r + j])
        rows[j] = jpvt[j] - 1
    for j in range(r):
        if not diagonal[j] > floor * diagonal[0]:
            free(jpvt)
            return 1
    if nrhs > 0:  # R11^-1 R12 in place of R12 (the columns r.. of A[k].T)
        if real is float:
            strtrs(&upper, &no, &no, &m, &nrhs, work, &m, work + r * r, &m, &info)
        else:
            dtrtrs(&upper, &no, &no, &m, &nrhs, work, &m, work + r * r, &m, &info)
    for i in range(r, n):  # row perm[i] of C is column i of [I, R11^-1 R12]
        for j in range(r):
            C[(jpvt[i] - 1) * r + j] = work[i * r + j]
    free(jpvt)
    for i in range(r):
        for j in range(r):
            C[rows[i] * r + j] = 1 if i == j else 0
    peak[0] = _absmax(C, n * r)
    gain[0] = 0.0
    n_iter[0] = 0
    if refine and peak[0] > tol:
        if not _swaps(C, n, r, rows, tol, max_iter, n_iter, gain, peak):
            return -2
    return 0


cdef double _absmax(real *x, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t t
    cdef double best = 0.0
    for t in range(size):
        if fabs(x[t]) > best:
            best = fabs(x[t])
    return best


cdef int _swaps(real *C, Py_ssize_t n, Py_ssize_t r, int64_t *idx, double tol,
                int64_t max_iter, int64_t *n_iter, double *gain,
                double *largest) noexcept nogil:
    """The swap loop on row-major ``C`` (n, r); 0 if out of memory."""
    cdef Py_ssize_t t, i, j, p, size = n * r
    cdef real pivot, one = 1, minus_one = -1
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
        p = _largest(C, size)
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
        if real is float:
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
