/* Fused CPU kernels for small tensors (monai_saliency.ops.cpu_kernels): Signature Activation's energy and the gathered
 * bilateral filter.
 *
 * On a 512x14x14 activation map every torch op costs a few microseconds of dispatch against a few microseconds of
 * work, and MKL's GEMMs with 14-long inner dimensions run far below peak; the energy kernel keeps a few channels in
 * L1 and does there what takes ~30 torch ops and four GEMMs. The functions take raw addresses:
 * monai_saliency.ops.cpu_kernels checks device, dtype, contiguity and sizes before calling them (and keeps the
 * tensors alive), so nothing here is public API. Each one releases the GIL while it runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one AVX2 build and a baseline build of each loop, chosen at load time by the CPU */
#define MS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MS_CLONES
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define MS_HAVE_FUSED 1
#define MS_AVX2 __attribute__((target("avx2,fma")))
#define MS_KB 8 /* output rows per register block: 8 independent FMA chains */

/* voxels before and after axis d of a block with nd axes */
static inline void axis_extent(const Py_ssize_t *dims, int nd, int d, Py_ssize_t *before, Py_ssize_t *after) {
    *before = 1, *after = 1;
    for (int q = 0; q < d; ++q) *before *= dims[q];
    for (int q = d + 1; q < nd; ++q) *after *= dims[q];
}

/* Signature energy of small activation blocks with L channels at a time in L1 (one 32-byte vector per voxel): for L
 * channels at a time the block (P voxels, the product of dims) is transposed to lane-minor order (x[p][l]),
 * transformed along each axis with the DCT matrices (forward: last axis first; inverse: first axis first), its
 * signs taken with the relative zero threshold tol * ||A_s||, transformed back, squared and summed over the lanes.
 * a is (B, S, O, P) contiguous; out (B, O, P) gets the channel sums. fwd / inv hold, per axis, its n x n matrix with
 * the rows padded with zeros to a multiple of MS_KB (inverse matrices may carry the notebook scaling). Returns 0 when
 * a channel norm is not finite. */
#define FUSED_ENERGY(NAME, T, L)                                                                                    \
    typedef T NAME##_vec __attribute__((vector_size(32)));                                                           \
    MS_AVX2 static void NAME##_axis(const NAME##_vec *in, NAME##_vec *out, const T *mat, Py_ssize_t before,          \
                                    Py_ssize_t n, Py_ssize_t after) {                                                \
        for (Py_ssize_t b = 0; b < before; ++b)                                                                      \
            for (Py_ssize_t a = 0; a < after; ++a)                                                                   \
                for (Py_ssize_t k0 = 0; k0 < n; k0 += MS_KB) {                                                       \
                    NAME##_vec acc[MS_KB];                                                                           \
                    for (int kk = 0; kk < MS_KB; ++kk) acc[kk] = (NAME##_vec){0};                                    \
                    for (Py_ssize_t j = 0; j < n; ++j) {                                                             \
                        NAME##_vec v = in[(b * n + j) * after + a];                                                  \
                        const T *m = mat + k0 * n + j;                                                               \
                        for (int kk = 0; kk < MS_KB; ++kk) acc[kk] += m[kk * n] * v;                                 \
                    }                                                                                                \
                    Py_ssize_t rows = n - k0 < MS_KB ? n - k0 : MS_KB;                                               \
                    for (Py_ssize_t kk = 0; kk < rows; ++kk) out[(b * n + k0 + kk) * after + a] = acc[kk];           \
                }                                                                                                    \
    }                                                                                                                \
    MS_AVX2 static int NAME(const T *a, T *out, Py_ssize_t items, Py_ssize_t channels, Py_ssize_t others, int nd,    \
                            const Py_ssize_t *dims, const T *fwd, const T *inv, double tol, NAME##_vec *work) {      \
        Py_ssize_t voxels = 1, offset[3], total = 0;                                                                 \
        for (int d = 0; d < nd; ++d) {                                                                               \
            voxels *= dims[d];                                                                                       \
            offset[d] = total;                                                                                       \
            total += (dims[d] + MS_KB - 1) / MS_KB * MS_KB * dims[d];                                                \
        }                                                                                                            \
        NAME##_vec *x = work, *y = work + voxels, *energy = work + 2 * voxels;                                       \
        int finite = 1;                                                                                              \
        for (Py_ssize_t b = 0; b < items; ++b)                                                                       \
            for (Py_ssize_t o = 0; o < others; ++o) {                                                                \
                for (Py_ssize_t p = 0; p < voxels; ++p) energy[p] = (NAME##_vec){0};                                 \
                for (Py_ssize_t s0 = 0; s0 < channels; s0 += L) {                                                    \
                    double norm2[L];                                                                                 \
                    T threshold[L];                                                                                  \
                    for (int l = 0; l < L; ++l) {                                                                    \
                        norm2[l] = 0.0;                                                                              \
                        if (s0 + l < channels) {                                                                     \
                            const T *src = a + ((b * channels + s0 + l) * others + o) * voxels;                      \
                            for (Py_ssize_t p = 0; p < voxels; ++p) {                                                \
                                x[p][l] = src[p];                                                                    \
                                norm2[l] += (double)src[p] * (double)src[p];                                         \
                            }                                                                                        \
                        } else                                                                                       \
                            for (Py_ssize_t p = 0; p < voxels; ++p) x[p][l] = (T)0;                                  \
                        finite &= isfinite(norm2[l]) != 0;                                                           \
                        threshold[l] = (T)(tol * sqrt(norm2[l]));                                                    \
                    }                                                                                                \
                    NAME##_vec *cur = x, *nxt = y, *swap;                                                            \
                    for (int d = nd - 1; d >= 0; --d) {                                                              \
                        Py_ssize_t before, after;                                                                    \
                        axis_extent(dims, nd, d, &before, &after);                                                   \
                        NAME##_axis(cur, nxt, fwd + offset[d], before, dims[d], after);                              \
                        swap = cur, cur = nxt, nxt = swap;                                                           \
                    }                                                                                                \
                    for (Py_ssize_t p = 0; p < voxels; ++p)                                                          \
                        for (int l = 0; l < L; ++l) {                                                                \
                            T v = cur[p][l];                                                                         \
                            cur[p][l] = (v > threshold[l]) ? (T)1 : ((v < -threshold[l]) ? (T)-1 : (T)0);            \
                        }                                                                                            \
                    for (int d = 0; d < nd; ++d) {                                                                   \
                        Py_ssize_t before, after;                                                                    \
                        axis_extent(dims, nd, d, &before, &after);                                                   \
                        NAME##_axis(cur, nxt, inv + offset[d], before, dims[d], after);                              \
                        swap = cur, cur = nxt, nxt = swap;                                                           \
                    }                                                                                                \
                    for (Py_ssize_t p = 0; p < voxels; ++p) energy[p] += cur[p] * cur[p];                            \
                }                                                                                                    \
                T *dst = out + (b * others + o) * voxels;                                                            \
                for (Py_ssize_t p = 0; p < voxels; ++p) {                                                            \
                    T sum = (T)0;                                                                                    \
                    for (int l = 0; l < L; ++l) sum += energy[p][l];                                                 \
                    dst[p] = sum;                                                                                    \
                }                                                                                                    \
            }                                                                                                        \
        return finite;                                                                                               \
    }
FUSED_ENERGY(ms_signature_energy_f32, float, 8)
FUSED_ENERGY(ms_signature_energy_f64, double, 4)

static int fused_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define MS_HAVE_FUSED 0
static int fused_supported(void) { return 0; }
#endif

/* Bilateral filter of (items, voxels) maps by gathering: out(p) = sum_k w_k x(q_k) / sum_k w_k over the taps q_k =
 * index[p * taps + k], w_k = exp(log_w[k] - half_inv_var * (x(q_k) - x(p))^2). The centre tap has the largest log
 * weight (0), so the denominator is at least 1. Returns 0 (and writes nothing) when an index is outside [0, voxels). */
#define BILATERAL(NAME, T, EXP)                                                                                     \
    MS_CLONES int NAME(const T *src, T *dst, const int64_t *index, const T *log_w, Py_ssize_t items,                 \
                       Py_ssize_t voxels, Py_ssize_t taps, double half_inv_var) {                                    \
        for (Py_ssize_t i = 0; i < voxels * taps; ++i)                                                               \
            if (index[i] < 0 || index[i] >= voxels) return 0;                                                        \
        T h = (T)half_inv_var;                                                                                       \
        for (Py_ssize_t n = 0; n < items; ++n) {                                                                     \
            const T *x = src + n * voxels;                                                                           \
            T *y = dst + n * voxels;                                                                                 \
            for (Py_ssize_t p = 0; p < voxels; ++p) {                                                                \
                const int64_t *idx = index + p * taps;                                                               \
                T centre = x[p], num = (T)0, den = (T)0;                                                             \
                for (Py_ssize_t k = 0; k < taps; ++k) {                                                              \
                    T v = x[idx[k]], d = v - centre;                                                                 \
                    T w = EXP(log_w[k] - h * d * d);                                                                 \
                    num += w * v;                                                                                    \
                    den += w;                                                                                        \
                }                                                                                                    \
                y[p] = num / den;                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
        return 1;                                                                                                    \
    }
BILATERAL(ms_bilateral_f32, float, expf)
BILATERAL(ms_bilateral_f64, double, exp)

/* ---- Python bindings: addresses as integers, dtype as a code (0 float32, 1 float64) ---- */

static void *as_pointer(Py_ssize_t address) { return (void *)(uintptr_t)address; }

static PyObject *py_signature_energy(PyObject *self, PyObject *args) {
    int code, nd;
    Py_ssize_t src, dst, items, channels, others, dims[3], fwd, inv;
    double tol;
    if (!PyArg_ParseTuple(args, "innnnni(nnn)nnd", &code, &src, &dst, &items, &channels, &others, &nd, &dims[0],
                          &dims[1], &dims[2], &fwd, &inv, &tol))
        return NULL;
    if (nd < 1 || nd > 3) {
        PyErr_SetString(PyExc_ValueError, "signature_energy: 1 to 3 block axes");
        return NULL;
    }
#if MS_HAVE_FUSED
    Py_ssize_t voxels = 1;
    for (int d = 0; d < nd; ++d) voxels *= dims[d];
    void *work = NULL;
    if (posix_memalign(&work, 64, 3 * 32 * (size_t)voxels) != 0) return PyErr_NoMemory();
    int finite;
    Py_BEGIN_ALLOW_THREADS
    if (code == 0)
        finite = ms_signature_energy_f32(as_pointer(src), as_pointer(dst), items, channels, others, nd, dims,
                                         as_pointer(fwd), as_pointer(inv), tol, work);
    else
        finite = ms_signature_energy_f64(as_pointer(src), as_pointer(dst), items, channels, others, nd, dims,
                                         as_pointer(fwd), as_pointer(inv), tol, work);
    Py_END_ALLOW_THREADS
    free(work);
    return PyBool_FromLong(finite);
#else
    PyErr_SetString(PyExc_RuntimeError, "signature_energy is not compiled on this platform");
    return NULL;
#endif
}

static PyObject *py_fused_supported(PyObject *self, PyObject *args) { return PyBool_FromLong(fused_supported()); }

static PyObject *py_bilateral(PyObject *self, PyObject *args) {
    int code;
    Py_ssize_t src, dst, index, log_w, items, voxels, taps;
    double half_inv_var;
    if (!PyArg_ParseTuple(args, "innnnnnnd", &code, &src, &dst, &index, &log_w, &items, &voxels, &taps,
                          &half_inv_var))
        return NULL;
    int in_range;
    Py_BEGIN_ALLOW_THREADS
    if (code == 0)
        in_range = ms_bilateral_f32(as_pointer(src), as_pointer(dst), as_pointer(index), as_pointer(log_w), items, voxels, taps,
                         half_inv_var);
    else
        in_range = ms_bilateral_f64(as_pointer(src), as_pointer(dst), as_pointer(index), as_pointer(log_w), items, voxels, taps,
                         half_inv_var);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(in_range);
}

static PyMethodDef methods[] = {
    {"signature_energy", py_signature_energy, METH_VARARGS, "fused DCT, sign, inverse DCT and channel energy"},
    {"fused_supported", py_fused_supported, METH_NOARGS, "whether this CPU runs signature_energy (AVX2 and FMA)"},
    {"bilateral", py_bilateral, METH_VARARGS, "bilateral filter with a precomputed neighbour index"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cpu_kernels(void) { return PyModule_Create(&module); }
