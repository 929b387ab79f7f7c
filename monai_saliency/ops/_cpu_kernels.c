/* Fused CPU kernels for the small tensors of Signature Activation's post-processing (monai_saliency.ops.cpu_kernels).
 *
 * On a 512x14x14 activation map every torch op costs a few microseconds of dispatch against a few microseconds of
 * work; these loops do in one pass what takes three to six ops in torch. The matrix products stay in torch (MKL).
 * The functions take raw addresses: monai_saliency.ops.cpu_kernels checks device, dtype, contiguity and sizes
 * before calling them, so nothing here is public API. Each one releases the GIL while it runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one AVX2 build and a baseline build of each loop, chosen at load time by the CPU */
#define MS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MS_CLONES
#endif

/* x (groups, rows, cols): dst = sign(x) where |x| > tol * ||x[g, :, c]||, else 0. The norms run over the rows (the
 * DCT coefficients of one channel), accumulated in double; the comparison runs in T (a vectorised select). Returns 0
 * when a norm is not finite (NaN / Inf input). work holds cols doubles followed by cols T. */
#define MASKED_SIGN(NAME, T, ABS, COPYSIGN)                                                                         \
    MS_CLONES int NAME(const T *src, T *dst, Py_ssize_t groups, Py_ssize_t rows, Py_ssize_t cols, double tol,       \
                       double *work) {                                                                               \
        int finite = 1;                                                                                              \
        T *threshold = (T *)(work + cols);                                                                           \
        for (Py_ssize_t g = 0; g < groups; ++g) {                                                                    \
            const T *x = src + g * rows * cols;                                                                      \
            T *y = dst + g * rows * cols;                                                                            \
            for (Py_ssize_t c = 0; c < cols; ++c) work[c] = 0.0;                                                     \
            for (Py_ssize_t r = 0; r < rows; ++r) {                                                                  \
                const T *row = x + r * cols;                                                                         \
                for (Py_ssize_t c = 0; c < cols; ++c) work[c] += (double)row[c] * (double)row[c];                   \
            }                                                                                                        \
            for (Py_ssize_t c = 0; c < cols; ++c) {                                                                  \
                finite &= isfinite(work[c]) != 0;                                                                    \
                threshold[c] = (T)(tol * sqrt(work[c]));                                                             \
            }                                                                                                        \
            for (Py_ssize_t r = 0; r < rows; ++r) {                                                                  \
                const T *row = x + r * cols;                                                                         \
                T *out = y + r * cols;                                                                               \
                for (Py_ssize_t c = 0; c < cols; ++c) {                                                              \
                    T v = row[c];                                                                                    \
                    out[c] = ABS(v) > threshold[c] ? COPYSIGN((T)1, v) : (T)0;                                       \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
        return finite;                                                                                               \
    }
MASKED_SIGN(ms_masked_sign_f32, float, fabsf, copysignf)
MASKED_SIGN(ms_masked_sign_f64, double, fabs, copysign)

/* x (groups, rows, items, channels, others): sum over channels of x^2, written as (groups * items, others, rows), or
 * as (items, others, rows) summed over the groups too when sum_groups. Accumulated in double. */
#define CHANNEL_ENERGY(NAME, T)                                                                                     \
    MS_CLONES void NAME(const T *src, T *dst, Py_ssize_t groups, Py_ssize_t rows, Py_ssize_t items,                 \
                        Py_ssize_t channels, Py_ssize_t others, int sum_groups, double *acc) {                      \
        Py_ssize_t n_out = (sum_groups ? items : groups * items) * others * rows;                                    \
        for (Py_ssize_t i = 0; i < n_out; ++i) dst[i] = (T)0;                                                        \
        for (Py_ssize_t g = 0; g < groups; ++g)                                                                      \
            for (Py_ssize_t r = 0; r < rows; ++r)                                                                    \
                for (Py_ssize_t b = 0; b < items; ++b) {                                                             \
                    const T *block = src + ((g * rows + r) * items + b) * channels * others;                         \
                    Py_ssize_t item = sum_groups ? b : g * items + b;                                                \
                    if (others == 1) {                                                                               \
                        double part[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};                                   \
                        Py_ssize_t s = 0;                                                                            \
                        for (; s + 8 <= channels; s += 8)                                                            \
                            for (int k = 0; k < 8; ++k) part[k] += (double)block[s + k] * (double)block[s + k];     \
                        double total = 0.0;                                                                          \
                        for (; s < channels; ++s) total += (double)block[s] * (double)block[s];                      \
                        for (int k = 0; k < 8; ++k) total += part[k];                                                \
                        dst[item * rows + r] += (T)total;                                                            \
                        continue;                                                                                    \
                    }                                                                                                \
                    for (Py_ssize_t o = 0; o < others; ++o) acc[o] = 0.0;                                            \
                    for (Py_ssize_t s = 0; s < channels; ++s) {                                                      \
                        const T *row = block + s * others;                                                           \
                        for (Py_ssize_t o = 0; o < others; ++o) acc[o] += (double)row[o] * (double)row[o];           \
                    }                                                                                                \
                    for (Py_ssize_t o = 0; o < others; ++o) dst[(item * others + o) * rows + r] += (T)acc[o];        \
                }                                                                                                    \
    }
CHANNEL_ENERGY(ms_channel_energy_f32, float)
CHANNEL_ENERGY(ms_channel_energy_f64, double)

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

static PyObject *py_masked_sign(PyObject *self, PyObject *args) {
    int code;
    Py_ssize_t src, dst, groups, rows, cols;
    double tol;
    if (!PyArg_ParseTuple(args, "innnnnd", &code, &src, &dst, &groups, &rows, &cols, &tol)) return NULL;
    double *work = (double *)malloc(2 * sizeof(double) * (size_t)(cols > 0 ? cols : 1));
    if (work == NULL) return PyErr_NoMemory();
    int finite;
    Py_BEGIN_ALLOW_THREADS
    if (code == 0)
        finite = ms_masked_sign_f32(as_pointer(src), as_pointer(dst), groups, rows, cols, tol, work);
    else
        finite = ms_masked_sign_f64(as_pointer(src), as_pointer(dst), groups, rows, cols, tol, work);
    Py_END_ALLOW_THREADS
    free(work);
    return PyBool_FromLong(finite);
}

static PyObject *py_channel_energy(PyObject *self, PyObject *args) {
    int code, sum_groups;
    Py_ssize_t src, dst, groups, rows, items, channels, others;
    if (!PyArg_ParseTuple(args, "innnnnnnp", &code, &src, &dst, &groups, &rows, &items, &channels, &others,
                          &sum_groups))
        return NULL;
    double *acc = (double *)malloc(sizeof(double) * (size_t)(others > 0 ? others : 1));
    if (acc == NULL) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    if (code == 0)
        ms_channel_energy_f32(as_pointer(src), as_pointer(dst), groups, rows, items, channels, others, sum_groups, acc);
    else
        ms_channel_energy_f64(as_pointer(src), as_pointer(dst), groups, rows, items, channels, others, sum_groups, acc);
    Py_END_ALLOW_THREADS
    free(acc);
    Py_RETURN_NONE;
}

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
    {"masked_sign", py_masked_sign, METH_VARARGS, "sign with a relative zero threshold over (groups, rows, cols)"},
    {"channel_energy", py_channel_energy, METH_VARARGS, "sum of squares over the channel axis"},
    {"bilateral", py_bilateral, METH_VARARGS, "bilateral filter with a precomputed neighbour index"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cpu_kernels(void) { return PyModule_Create(&module); }
