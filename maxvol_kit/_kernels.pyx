# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled loops of the small MaxVol path: the swaps, the LU start, a stack.

A stack's problems (one small ``fast_maxvol`` is a stack of one) run in
plain loops that call no LAPACK: Householder QR with column pivoting of
``A.T`` for the greedy rows (geqp3's pivots; it takes laqp2's unblocked
path at these sizes), back substitution for ``C`` and the classical
swaps (BLAS i?amax finds the largest entry; level-1 calls hold no lock).
The row-major ``A.T`` turns each reflector and each solve step into sweeps
along rows, four rows at a time, which the compiler vectorizes. One thread,
256 x 128 x 32: 0.72x the time of geqp3 + trtrs + BLAS ger in float64,
0.56x in float32 (parity at r = 64). Without LAPACK the problems need no
lock, so threads run parts of a stack side by side (concurrent LAPACK calls
into SciPy's OpenBLAS serialise: 256 x 128 x 32 on two threads took 72 ms
against 31 ms on one). The results are the Python path's (SciPy's geqp3,
trtrs and ger) to roundoff, with the same rows where no two candidates tie
to the last bits (tested against geqp3, an exact-arithmetic greedy and a
float64 oracle for ``C``). ``maxvol``'s LU start makes the Python path's
LAPACK calls (getrf, gecon, trtrs) without the interpreter between them,
bit for bit its results. Tried and dropped: classical Gram-Schmidt twice
in place of the reflectors lost digits of ``C`` when the columns' scales
spread (8e-8 against 7e-16 at a spread of 1e13).
"""

from libc.math cimport fabs, log, sqrt
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport idamax, isamax
from scipy.linalg.cython_lapack cimport (
    dgecon, dgetrf, dtrtrs, sgecon, sgetrf, strtrs,
)

ctypedef fused real:
    float
    double

cdef extern from *:
    """
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    static int maxvol_kit_avx2_fma(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    #else
    static int maxvol_kit_avx2_fma(void) { return 0; }
    #endif
    """
    int maxvol_kit_avx2_fma() nogil


def avx2_fma():
    """Whether this CPU (and its operating system) runs AVX2 and FMA code."""
    return bool(maxvol_kit_avx2_fma())



def swaps(real[:, ::1] C, int64_t[::1] idx, double tol, int64_t max_iter):
    """Classical MaxVol swaps on ``C`` in place: ``(n_swaps, log_gain, max|C|)``.

    The loop of ``maxvol_kit._small.swaps``: the largest ``|C_ij|`` (the
    first largest entry, or the first smallest when its magnitude is
    larger), one rank-1 update of ``C``, ``idx`` updated in place.
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

    ``work`` (b, r, n) holds ``A[k].T`` row-major for each problem ``k`` of
    the stack ``A`` (b, n, r), factored in place (:func:`_pivoted_qr`) and
    then holding ``R11^-1 R12`` in its last ``n - r`` columns. Fills
    ``rows`` (the pivots), ``diagonal`` (``|diag R11|``), ``C`` (``A[k] A[k][rows]^-1``,
    swapped to ``max|C| <= tol`` if ``refine``), ``gain`` (the swaps'
    ``sum log|C_ij|``), ``peak`` (``max|C|``) and ``n_iter``. Returns the
    first problem whose pivots fall below ``floor`` times the first (its
    ``C`` and the later problems untouched), or -1.
    """
    cdef Py_ssize_t r = work.shape[1], n = work.shape[2], k
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
    """The LU start of ``maxvol_kit._small.lu_coefficients``: ``(rcond, log_det)``.

    ``lu`` holds a Fortran-ordered copy of ``A`` (n, r), factored in place
    (getrf); fills ``rows`` (the pivot rows), ``diagonal`` (``|diag U|``)
    and ``C`` (``A A[rows]^-1``, from ``L21 L11^-1`` by trtrs), and returns
    gecon's estimate of ``1 / cond_1(A[rows])`` and ``sum log|U_jj|``
    (summed in float64; ``-inf`` for a zero pivot).
    """
    cdef double rcond = 0.0, log_det = 0.0
    cdef int status
    cdef Py_ssize_t j
    with nogil:
        status = _lu_start(A, lu, C, rows, diagonal, &rcond)
        for j in range(diagonal.shape[0]):
            log_det += log(diagonal[j])
    if status != 0:
        raise MemoryError()
    return rcond, log_det


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
    _unit_rows(&C[0, 0], r, &rows[0])
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
    cdef Py_ssize_t i, j
    cdef int64_t *pivots = <int64_t *>malloc(n * sizeof(int64_t))
    cdef real *scratch = <real *>malloc((3 * n + r) * sizeof(real))
    if pivots == NULL or scratch == NULL:
        free(pivots)
        free(scratch)
        return -2
    _pivoted_qr(work, r, n, pivots, scratch)
    free(scratch)
    for j in range(r):
        diagonal[j] = fabs(work[j * n + j])
        rows[j] = pivots[j]
    for j in range(r):
        if not diagonal[j] > floor * diagonal[0]:
            free(pivots)
            return 1
    _upper_solve(work, r, n)
    for i in range(r, n):  # row pivots[i] of C is column i of [I, R11^-1 R12]
        for j in range(r):
            C[pivots[i] * r + j] = work[j * n + i]
    free(pivots)
    _unit_rows(C, r, rows)
    peak[0] = fabs(C[_largest(C, n * r)])
    gain[0] = 0.0
    n_iter[0] = 0
    if refine and peak[0] > tol:
        if not _swaps(C, n, r, rows, tol, max_iter, n_iter, gain, peak):
            return -2
    return 0


cdef void _pivoted_qr(real *A, Py_ssize_t m, Py_ssize_t n, int64_t *pivots,
                      real *scratch) noexcept nogil:
    """Householder QR with column pivoting of the row-major ``A`` (m, n), m <= n.

    Unblocked, as LAPACK's laqp2 (geqp3 takes that path at these sizes):
    step ``i`` moves the column of largest residual norm to ``i`` (the first
    one on a tie) and applies the reflector that zeroes it below row ``i``.
    On return ``A`` holds ``R`` in its upper triangle (the reflectors are
    not kept) and ``pivots`` the column order. The row-major layout turns
    both halves of a reflector into sweeps along rows, which the compiler
    vectorizes; the squared residual norms are downdated by ``R_ij^2`` and
    recomputed once they fall below a hundredth of their last exact value
    (so they keep at least 10 correct digits in float64, 3 in float32). The
    input is scaled to ``max|A| ~ 1`` by the caller, so the squares stay in
    range. ``scratch`` holds ``3 n + m`` values.
    """
    cdef Py_ssize_t i, j, t, p
    cdef real *norms = scratch
    cdef real *exact = scratch + n
    cdef real *w = scratch + 2 * n
    cdef real *u = scratch + 3 * n
    cdef real *row
    cdef real alpha, beta, tau, x, best, tail
    for j in range(n):
        pivots[j] = j
        norms[j] = 0
    for t in range(m):
        row = A + t * n
        for j in range(n):
            norms[j] += row[j] * row[j]
    for j in range(n):
        exact[j] = norms[j]
    for i in range(m):
        p = i
        best = norms[i]
        for j in range(i + 1, n):
            if norms[j] > best:
                best = norms[j]
                p = j
        if p != i:
            for t in range(m):
                x = A[t * n + i]
                A[t * n + i] = A[t * n + p]
                A[t * n + p] = x
            t = pivots[i]
            pivots[i] = pivots[p]
            pivots[p] = t
            norms[p] = norms[i]
            exact[p] = exact[i]
        tail = 0
        for t in range(i + 1, m):
            tail = tail + A[t * n + i] * A[t * n + i]
        if tail != 0:  # else the reflector is the identity (LAPACK's tau = 0)
            alpha = A[i * n + i]
            beta = sqrt(alpha * alpha + tail)
            if alpha >= 0:
                beta = -beta
            tau = (beta - alpha) / beta
            x = 1 / (alpha - beta)
            u[i] = 1
            for t in range(i + 1, m):
                u[t] = A[t * n + i] * x
            _reflect(A + i * n + i + 1, m - i, n, n - i - 1, u + i, tau, w)
            A[i * n + i] = beta
            for t in range(i + 1, m):
                A[t * n + i] = 0
        row = A + i * n
        for j in range(i + 1, n):
            norms[j] = norms[j] - row[j] * row[j]
        for j in range(i + 1, n):
            if norms[j] <= exact[j] / 100:
                tail = 0
                for t in range(i + 1, m):
                    tail = tail + A[t * n + j] * A[t * n + j]
                norms[j] = tail
                exact[j] = tail


cdef void _reflect(real *A, Py_ssize_t m, Py_ssize_t ld, Py_ssize_t n,
                   real *u, real tau, real *w) noexcept nogil:
    """``A -= tau u (u^T A)`` for the row-major ``A`` (m, n), leading dimension ``ld``.

    ``w = tau u^T A`` first, then the rank-1 update; both sweep along rows,
    four rows at a time (so ``w`` is read and written once per four rows).
    """
    cdef Py_ssize_t t, j
    cdef real x0, x1, x2, x3
    cdef real *r0
    cdef real *r1
    cdef real *r2
    cdef real *r3
    for j in range(n):
        w[j] = 0
    t = 0
    while t + 4 <= m:
        x0, x1, x2, x3 = u[t], u[t + 1], u[t + 2], u[t + 3]
        r0 = A + t * ld
        r1 = r0 + ld
        r2 = r1 + ld
        r3 = r2 + ld
        for j in range(n):
            w[j] = w[j] + (x0 * r0[j] + x1 * r1[j] + x2 * r2[j] + x3 * r3[j])
        t += 4
    while t < m:
        x0 = u[t]
        r0 = A + t * ld
        for j in range(n):
            w[j] = w[j] + x0 * r0[j]
        t += 1
    for j in range(n):
        w[j] = w[j] * tau
    t = 0
    while t + 4 <= m:
        x0, x1, x2, x3 = u[t], u[t + 1], u[t + 2], u[t + 3]
        r0 = A + t * ld
        r1 = r0 + ld
        r2 = r1 + ld
        r3 = r2 + ld
        for j in range(n):
            r0[j] = r0[j] - x0 * w[j]
            r1[j] = r1[j] - x1 * w[j]
            r2[j] = r2[j] - x2 * w[j]
            r3[j] = r3[j] - x3 * w[j]
        t += 4
    while t < m:
        x0 = u[t]
        r0 = A + t * ld
        for j in range(n):
            r0[j] = r0[j] - x0 * w[j]
        t += 1


cdef void _upper_solve(real *A, Py_ssize_t r, Py_ssize_t n) noexcept nogil:
    """``R11^-1 R12`` in place of ``R12`` in the row-major ``A`` (r, n).

    Back substitution row by row, each step a sweep along rows that
    subtracts up to four solved rows at once, dividing by the diagonal as
    trsm does.
    """
    cdef Py_ssize_t i, t, j, width = n - r
    cdef real f0, f1, f2, f3, d
    cdef real *x
    cdef real *y0
    cdef real *y1
    cdef real *y2
    cdef real *y3
    for i in range(r - 1, -1, -1):
        x = A + i * n + r
        t = r - 1
        while t >= i + 4:
            f0 = A[i * n + t]
            f1 = A[i * n + t - 1]
            f2 = A[i * n + t - 2]
            f3 = A[i * n + t - 3]
            y0 = A + t * n + r
            y1 = y0 - n
            y2 = y1 - n
            y3 = y2 - n
            for j in range(width):
                x[j] = x[j] - (f0 * y0[j] + f1 * y1[j] + f2 * y2[j] + f3 * y3[j])
            t -= 4
        while t > i:
            f0 = A[i * n + t]
            y0 = A + t * n + r
            for j in range(width):
                x[j] = x[j] - f0 * y0[j]
            t -= 1
        d = A[i * n + i]
        for j in range(width):
            x[j] = x[j] / d


cdef int _swaps(real *C, Py_ssize_t n, Py_ssize_t r, int64_t *idx, double tol,
                int64_t max_iter, int64_t *n_iter, double *gain,
                double *largest) noexcept nogil:
    """The swap loop on row-major ``C`` (n, r); 0 if out of memory."""
    cdef Py_ssize_t t, s, i, j, p
    cdef real pivot, f, one = 1
    cdef real *w = <real *>malloc(r * sizeof(real))
    cdef real *row
    if w == NULL:
        return 0
    _unit_rows(C, r, idx)
    while True:
        p = _largest(C, n * r)
        i = p // r
        j = p % r
        largest[0] = fabs(C[p])
        if n_iter[0] >= max_iter or not largest[0] > tol:
            break
        pivot = C[p]
        for t in range(r):
            w[t] = C[i * r + t] / pivot
        w[j] -= one / pivot
        for t in range(n):  # C -= C[:, j] w^T, row by row
            row = C + t * r
            f = row[j]
            if f != 0:
                for s in range(r):
                    row[s] = row[s] - f * w[s]
        for t in range(r):
            C[i * r + t] = 0
        C[i * r + j] = 1
        idx[j] = i
        gain[0] += log(largest[0])
        n_iter[0] += 1
    free(w)
    return 1


cdef void _unit_rows(real *C, Py_ssize_t r, int64_t *rows) noexcept nogil:
    """Row ``rows[j]`` of the row-major ``C`` (n, r) set to ``e_j``: ``C[rows] = I``."""
    cdef Py_ssize_t i, j
    for i in range(r):
        for j in range(r):
            C[rows[i] * r + j] = 1 if i == j else 0


cdef Py_ssize_t _largest(real *x, Py_ssize_t size) noexcept nogil:
    """The entry NumPy's rule picks: the first largest, or the first smallest
    when its magnitude is larger (``argmax``/``argmin``, ties to the largest).

    BLAS i?amax (a level-1 call: no workspace, no lock) finds the first
    entry of largest magnitude ``M``; if it is ``-M``, the first ``+M`` after
    it (there is none before) wins the tie.
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
