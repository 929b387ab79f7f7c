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
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
/* the vector helpers below are always inlined into AVX2 code, so GCC's note on the AVX vector-passing ABI is moot */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one AVX2 build and a baseline build of each loop, chosen at load time by the CPU */
#define MS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MS_CLONES
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define MS_HAVE_FUSED 1
#include <immintrin.h>
#define MS_AVX2 __attribute__((target("avx2,fma")))
#define MS_KB 8 /* output rows per register block: 8 independent FMA chains */
#define MS_MAX_AXIS 64 /* longest block axis (the butterfly keeps one column on the stack) */

/* voxels before and after axis d of a block with nd axes */
static inline void axis_extent(const Py_ssize_t *dims, int nd, int d, Py_ssize_t *before, Py_ssize_t *after) {
    *before = 1, *after = 1;
    for (int q = 0; q < d; ++q) *before *= dims[q];
    for (int q = d + 1; q < nd; ++q) *after *= dims[q];
}

/* The arguments of one signature energy: a (items, channels, others, voxels) -> dst (items * others, voxels). */
typedef struct {
    const void *a;
    void *dst;
    Py_ssize_t items, channels, others, voxels, dims[3];
    int nd;
    const void *full[3][2];                  /* per axis, forward and inverse matrix, rows padded */
    const void *half_e[3][2], *half_o[3][2]; /* their butterfly halves, or NULL for the full products */
    double tol;
    void *work; /* 4 x voxels vectors, 32-byte aligned, the last voxels of them zero */
} ms_energy_job;

/* Lane-minor copies of 8 float rows / 4 double rows of n values: x[p * L + l] = rows[l][p], by in-register
 * transposes of 8x8 / 4x4 tiles (the scalar copy took a seventh of the energy kernel's time). */
MS_AVX2 static void ms_transpose_f32(const float *const *rows, Py_ssize_t n, float *x) {
    Py_ssize_t p0 = 0;
    for (; p0 + 8 <= n; p0 += 8) {
        __m256 r[8], t[8], u[8];
        for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(rows[l] + p0);
        for (int l = 0; l < 8; l += 2) {
            t[l] = _mm256_unpacklo_ps(r[l], r[l + 1]);
            t[l + 1] = _mm256_unpackhi_ps(r[l], r[l + 1]);
        }
        for (int l = 0; l < 8; l += 4) {
            u[l] = _mm256_shuffle_ps(t[l], t[l + 2], _MM_SHUFFLE(1, 0, 1, 0));
            u[l + 1] = _mm256_shuffle_ps(t[l], t[l + 2], _MM_SHUFFLE(3, 2, 3, 2));
            u[l + 2] = _mm256_shuffle_ps(t[l + 1], t[l + 3], _MM_SHUFFLE(1, 0, 1, 0));
            u[l + 3] = _mm256_shuffle_ps(t[l + 1], t[l + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        for (int q = 0; q < 4; ++q) {
            _mm256_store_ps(x + (p0 + q) * 8, _mm256_permute2f128_ps(u[q], u[q + 4], 0x20));
            _mm256_store_ps(x + (p0 + q + 4) * 8, _mm256_permute2f128_ps(u[q], u[q + 4], 0x31));
        }
    }
    for (; p0 < n; ++p0)
        for (int l = 0; l < 8; ++l) x[p0 * 8 + l] = rows[l][p0];
}

MS_AVX2 static void ms_transpose_f64(const double *const *rows, Py_ssize_t n, double *x) {
    Py_ssize_t p0 = 0;
    for (; p0 + 4 <= n; p0 += 4) {
        __m256d r0 = _mm256_loadu_pd(rows[0] + p0), r1 = _mm256_loadu_pd(rows[1] + p0);
        __m256d r2 = _mm256_loadu_pd(rows[2] + p0), r3 = _mm256_loadu_pd(rows[3] + p0);
        __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
        __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
        _mm256_store_pd(x + p0 * 4, _mm256_permute2f128_pd(t0, t2, 0x20));
        _mm256_store_pd(x + (p0 + 1) * 4, _mm256_permute2f128_pd(t1, t3, 0x20));
        _mm256_store_pd(x + (p0 + 2) * 4, _mm256_permute2f128_pd(t0, t2, 0x31));
        _mm256_store_pd(x + (p0 + 3) * 4, _mm256_permute2f128_pd(t1, t3, 0x31));
    }
    for (; p0 < n; ++p0)
        for (int l = 0; l < 4; ++l) x[p0 * 4 + l] = rows[l][p0];
}

/* Signature energy of small activation blocks with L channels at a time in L1 (one 32-byte vector per voxel): for L
 * channels at a time the block (P voxels, the product of dims) is transposed to lane-minor order (x[p][l]),
 * transformed along each axis with the DCT matrices (forward: last axis first; inverse: first axis first), its
 * signs taken with the relative zero threshold tol * ||A_s||, transformed back, squared and summed over the lanes.
 * a is (B, S, O, P) contiguous, dst (B * O, P); returns 0 when a channel norm is not finite, else 1. The matrices
 * hold, per axis, its n x n matrix with the rows padded with zeros to a multiple of MS_KB (inverse matrices may carry
 * a per-coefficient scaling). Single-threaded: threads of its own would compete with torch's spinning OpenMP
 * workers, and on a 2-core machine two of them were slower than one inside the signature pipeline.
 *
 * Even/odd butterfly: a DCT-II matrix has C[k][n-1-j] = (-1)^k C[k][j], so with u_j = x_j + x_(n-1-j) and
 * v_j = x_j - x_(n-1-j) (j < n/2, plus the middle x_m as u_m for odd n) the even coefficients are E u and the odd
 * ones O v, two half-size products instead of one. The forward pass stores them even-first along the axis; the
 * sign is elementwise and the inverse reads them in that order (e = E' y_even, o = O' y_odd, x_j = e_j + o_j,
 * x_(n-1-j) = e_j - o_j), so the permutation never shows. An axis takes this path when its matrices have the
 * symmetry (checked) and the padded half products are cheaper (n = 9 and from n = 10 on; not n <= 8). */
#define FUSED_ENERGY(NAME, T, L, TRANSPOSE)                                                                                  \
    typedef T NAME##_vec __attribute__((vector_size(32)));                                                           \
    typedef T NAME##_quad __attribute__((vector_size(4 * sizeof(T))));                                               \
    typedef double NAME##_dvec __attribute__((vector_size(32)));                                                     \
    /* y[r * ys] = sum_j mat[r * cols + j] x[j * xs] for r < rows; the rows of mat padded to a multiple of MS_KB */   \
    MS_AVX2 static inline void NAME##_matvec(const NAME##_vec *x, Py_ssize_t xs, const T *mat, Py_ssize_t rows,     \
                                             Py_ssize_t cols, NAME##_vec *y, Py_ssize_t ys) {                       \
        for (Py_ssize_t k0 = 0; k0 < rows; k0 += MS_KB) {                                                            \
            NAME##_vec acc[MS_KB];                                                                                   \
            for (int kk = 0; kk < MS_KB; ++kk) acc[kk] = (NAME##_vec){0};                                            \
            for (Py_ssize_t j = 0; j < cols; ++j) {                                                                  \
                NAME##_vec v = x[j * xs];                                                                            \
                const T *m = mat + k0 * cols + j;                                                                    \
                for (int kk = 0; kk < MS_KB; ++kk) acc[kk] += m[kk * cols] * v;                                      \
            }                                                                                                        \
            /* a fixed trip count, so that the stores stay in registers (not a spill and a memcpy) */                 \
            for (int kk = 0; kk < MS_KB; ++kk)                                                                       \
                if (k0 + kk < rows) y[(k0 + kk) * ys] = acc[kk];                                                     \
        }                                                                                                            \
    }                                                                                                                \
    /* one axis (n long, `before` x `after` columns) through its full matrix, or through its butterfly halves      \
     * (he_mat: even frequencies, ho_mat: odd ones) when they are given */                                          \
    MS_AVX2 static void NAME##_axis(const NAME##_vec *in, NAME##_vec *out, const T *full, const T *he_mat,           \
                                    const T *ho_mat, int inverse, Py_ssize_t before, Py_ssize_t n,                   \
                                    Py_ssize_t after) {                                                              \
        Py_ssize_t h = n / 2, he = n - h;                                                                            \
        NAME##_vec t[MS_MAX_AXIS];                                                                                   \
        for (Py_ssize_t b = 0; b < before; ++b)                                                                      \
            for (Py_ssize_t a = 0; a < after; ++a) {                                                                 \
                const NAME##_vec *col = in + b * n * after + a;                                                      \
                NAME##_vec *dst = out + b * n * after + a;                                                           \
                if (he_mat == NULL) {                                                                                \
                    NAME##_matvec(col, after, full, n, n, dst, after);                                               \
                } else if (!inverse) {                                                                               \
                    for (Py_ssize_t j = 0; j < h; ++j) {                                                             \
                        NAME##_vec p = col[j * after], q = col[(n - 1 - j) * after];                                 \
                        t[j] = p + q;                                                                                \
                        t[he + j] = p - q;                                                                           \
                    }                                                                                                \
                    if (he > h) t[h] = col[h * after];                                                               \
                    NAME##_matvec(t, 1, he_mat, he, he, dst, after);                                                 \
                    NAME##_matvec(t + he, 1, ho_mat, h, h, dst + he * after, after);                                 \
                } else {                                                                                             \
                    NAME##_matvec(col, after, he_mat, he, he, t, 1);                                                 \
                    NAME##_matvec(col + he * after, after, ho_mat, h, h, t + he, 1);                                 \
                    for (Py_ssize_t j = 0; j < h; ++j) {                                                             \
                        dst[j * after] = t[j] + t[he + j];                                                           \
                        dst[(n - 1 - j) * after] = t[j] - t[he + j];                                                 \
                    }                                                                                                \
                    if (he > h) dst[h * after] = t[h];                                                               \
                }                                                                                                    \
            }                                                                                                        \
    }                                                                                                                \
    /* Fills the butterfly halves of an n x n matrix (rows padded) into he_mat / ho_mat (rows padded) and returns 1 \
     * when it has the DCT-II symmetry (along its columns for the forward, its rows for the inverse); else 0. */    \
    static int NAME##_halves(const T *m, Py_ssize_t n, int inverse, T *he_mat, T *ho_mat) {                          \
        Py_ssize_t h = n / 2, he = n - h;                                                                            \
        double scale = 0.0;                                                                                          \
        for (Py_ssize_t i = 0; i < n * n; ++i) scale = fmax(scale, fabs((double)m[i]));                              \
        double tol = 64.0 * (sizeof(T) == 4 ? 1.1920929e-07 : 2.220446049250313e-16) * scale;                         \
        /* v: entry with frequency k at position j, in either layout */                                           \
        for (Py_ssize_t k = 0; k < n; ++k)                                                                           \
            for (Py_ssize_t j = 0; j < n; ++j) {                                                                     \
                double v = inverse ? m[j * n + k] : m[k * n + j];                                                    \
                double mirror = inverse ? m[(n - 1 - j) * n + k] : m[k * n + n - 1 - j];                             \
                if (fabs(mirror - ((k & 1) ? -v : v)) > tol) return 0;                                               \
                if ((k & 1) && 2 * j + 1 == n && fabs(v) > tol) return 0;                                            \
            }                                                                                                        \
        Py_ssize_t pe = (he + MS_KB - 1) / MS_KB * MS_KB, po = (h + MS_KB - 1) / MS_KB * MS_KB;                      \
        for (Py_ssize_t i = 0; i < pe * he; ++i) he_mat[i] = (T)0;                                                   \
        for (Py_ssize_t i = 0; i < po * h; ++i) ho_mat[i] = (T)0;                                                    \
        for (Py_ssize_t r = 0; r < he; ++r)                                                                          \
            for (Py_ssize_t c = 0; c < he; ++c) /* forward: frequency 2r at position c; inverse: position r, 2c */   \
                he_mat[r * he + c] = inverse ? m[r * n + 2 * c] : m[2 * r * n + c];                                  \
        for (Py_ssize_t r = 0; r < h; ++r)                                                                           \
            for (Py_ssize_t c = 0; c < h; ++c)                                                                       \
                ho_mat[r * h + c] = inverse ? m[r * n + 2 * c + 1] : m[(2 * r + 1) * n + c];                         \
        return 1;                                                                                                    \
    }                                                                                                                \
    /* Butterfly halves of the job's matrices where they pay and both directions have the symmetry, written into   \
     * halves (2 * sum of padded n x n per axis); the others stay NULL (full products). */                          \
    static void NAME##_plan(ms_energy_job *job, T *halves) {                                                         \
        T *next = halves;                                                                                            \
        for (int d = 0; d < job->nd; ++d) {                                                                          \
            Py_ssize_t n = job->dims[d], h = n / 2, he = n - h;                                                      \
            Py_ssize_t pe = (he + MS_KB - 1) / MS_KB * MS_KB, po = (h + MS_KB - 1) / MS_KB * MS_KB;                  \
            job->half_e[d][0] = job->half_e[d][1] = job->half_o[d][0] = job->half_o[d][1] = NULL;                    \
            if (pe * he + po * h >= (n + MS_KB - 1) / MS_KB * MS_KB * n) continue;                                   \
            int symmetric = 1;                                                                                       \
            for (int dir = 0; dir < 2; ++dir) {                                                                      \
                job->half_e[d][dir] = next, job->half_o[d][dir] = next + pe * he;                                    \
                symmetric &= NAME##_halves(job->full[d][dir], n, dir, next, next + pe * he);                         \
                next += pe * he + po * h;                                                                            \
            }                                                                                                        \
            if (!symmetric) /* both directions or neither */                                                         \
                job->half_e[d][0] = job->half_e[d][1] = job->half_o[d][0] = job->half_o[d][1] = NULL;                \
        }                                                                                                            \
    }                                                                                                                \
    MS_AVX2 static int NAME(const ms_energy_job *job) {                                                              \
        const T *a = job->a;                                                                                         \
        const Py_ssize_t channels = job->channels, others = job->others, voxels = job->voxels, *dims = job->dims;    \
        const int nd = job->nd;                                                                                      \
        const double tol = job->tol;                                                                                 \
        NAME##_vec *x = job->work, *y = x + voxels, *energy = x + 2 * voxels;                                        \
        const T *zeros = (const T *)(x + 3 * voxels); /* voxels zeros: the rows of absent channels */                \
        int finite = 1;                                                                                              \
        for (Py_ssize_t pair = 0; pair < job->items * others; ++pair) {                                              \
            Py_ssize_t b = pair / others, o = pair % others;                                                         \
            for (Py_ssize_t p = 0; p < voxels; ++p) energy[p] = (NAME##_vec){0};                                     \
            for (Py_ssize_t s0 = 0; s0 < channels; s0 += L) {                                                        \
                double norm2[L];                                                                                     \
                T threshold[L];                                                                                      \
                const T *rows[L];                                                                                    \
                for (int l = 0; l < L; ++l)                                                                          \
                    rows[l] = s0 + l < channels ? a + ((b * channels + s0 + l) * others + o) * voxels : zeros;       \
                TRANSPOSE(rows, voxels, (T *)x);                                                                     \
                /* squared norms in double, four lanes per vector, two chains against the add latency */             \
                NAME##_dvec even[L / 4], odd[L / 4];                                                                 \
                for (int q = 0; q < L / 4; ++q) even[q] = odd[q] = (NAME##_dvec){0};                                 \
                for (Py_ssize_t p = 0; p < voxels; ++p)                                                              \
                    for (int q = 0; q < L / 4; ++q) {                                                                \
                        NAME##_quad four;                                                                            \
                        memcpy(&four, (const T *)&x[p] + 4 * q, sizeof four);                                        \
                        NAME##_dvec d = __builtin_convertvector(four, NAME##_dvec);                                  \
                        if (p & 1)                                                                                   \
                            odd[q] += d * d;                                                                         \
                        else                                                                                         \
                            even[q] += d * d;                                                                        \
                    }                                                                                                \
                for (int l = 0; l < L; ++l) {                                                                        \
                    norm2[l] = even[l / 4][l % 4] + odd[l / 4][l % 4];                                               \
                    finite &= isfinite(norm2[l]) != 0;                                                               \
                    threshold[l] = (T)(tol * sqrt(norm2[l]));                                                        \
                }                                                                                                    \
                NAME##_vec *cur = x, *nxt = y, *swap;                                                                \
                for (int d = nd - 1; d >= 0; --d) {                                                                  \
                    Py_ssize_t before, after;                                                                        \
                    axis_extent(dims, nd, d, &before, &after);                                                       \
                    NAME##_axis(cur, nxt, job->full[d][0], job->half_e[d][0], job->half_o[d][0], 0, before, dims[d], \
                                after);                                                                              \
                    swap = cur, cur = nxt, nxt = swap;                                                               \
                }                                                                                                    \
                for (Py_ssize_t p = 0; p < voxels; ++p)                                                              \
                    for (int l = 0; l < L; ++l) {                                                                    \
                        T v = cur[p][l];                                                                             \
                        cur[p][l] = (v > threshold[l]) ? (T)1 : ((v < -threshold[l]) ? (T)-1 : (T)0);                \
                    }                                                                                                \
                for (int d = 0; d < nd; ++d) {                                                                       \
                    Py_ssize_t before, after;                                                                        \
                    axis_extent(dims, nd, d, &before, &after);                                                       \
                    NAME##_axis(cur, nxt, job->full[d][1], job->half_e[d][1], job->half_o[d][1], 1, before, dims[d], \
                                after);                                                                              \
                    swap = cur, cur = nxt, nxt = swap;                                                               \
                }                                                                                                    \
                for (Py_ssize_t p = 0; p < voxels; ++p) energy[p] += cur[p] * cur[p];                                \
            }                                                                                                        \
            T *dst = (T *)job->dst + pair * voxels;                                                                  \
            for (Py_ssize_t p = 0; p < voxels; ++p) {                                                                \
                T sum = (T)0;                                                                                        \
                for (int l = 0; l < L; ++l) sum += energy[p][l];                                                     \
                dst[p] = sum;                                                                                        \
            }                                                                                                        \
        }                                                                                                            \
        return finite;                                                                                               \
    }
FUSED_ENERGY(ms_signature_energy_f32, float, 8, ms_transpose_f32)
FUSED_ENERGY(ms_signature_energy_f64, double, 4, ms_transpose_f64)

static int fused_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define MS_HAVE_FUSED 0
static int fused_supported(void) { return 0; }
#endif

/* exp of x <= 0 on 32-byte vectors (Cephes' expf and exp: 2^n times a polynomial / rational in the remainder, ~1 ulp).
 * Below -87 (float) / -708 (double), where the result would be subnormal, and for -inf it returns 0. */
typedef float ms_f32x8 __attribute__((vector_size(32)));
typedef int32_t ms_i32x8 __attribute__((vector_size(32)));
typedef double ms_f64x4 __attribute__((vector_size(32)));
typedef int64_t ms_i64x4 __attribute__((vector_size(32)));
#define MS_INLINE static inline __attribute__((always_inline)) /* into each clone: no vector-ABI crossing */

/* lo <= x <= 0 lane by lane (C has no vector ?:) */
MS_INLINE ms_f32x8 ms_clamp_f32(ms_f32x8 x, float lo) {
    ms_i32x8 below = x < lo, above = x > 0.0f;
    return (ms_f32x8)(((ms_i32x8)x & ~(below | above)) | ((ms_i32x8)((ms_f32x8){0} + lo) & below));
}
MS_INLINE ms_f64x4 ms_clamp_f64(ms_f64x4 x, double lo) {
    ms_i64x4 below = x < lo, above = x > 0.0;
    return (ms_f64x4)(((ms_i64x4)x & ~(below | above)) | ((ms_i64x4)((ms_f64x4){0} + lo) & below));
}

MS_INLINE ms_f32x8 ms_exp_f32(ms_f32x8 x) {
    ms_i32x8 underflow = x < -87.0f;
    x = ms_clamp_f32(x, -87.0f);
    ms_f32x8 n = x * 1.44269504088896341f + 0.5f;
    ms_i32x8 k = __builtin_convertvector(n, ms_i32x8);
    k -= (ms_i32x8)(__builtin_convertvector(k, ms_f32x8) > n) & 1; /* floor */
    n = __builtin_convertvector(k, ms_f32x8);
    x = x - n * 0.693359375f - n * -2.12194440e-4f;
    ms_f32x8 p = 1.9875691500e-4f * x + 1.3981999507e-3f;
    p = p * x + 8.3334519073e-3f;
    p = p * x + 4.1665795894e-2f;
    p = p * x + 1.6666665459e-1f;
    p = p * x + 5.0000001201e-1f;
    p = p * x * x + x + 1.0f;
    return (ms_f32x8)((ms_i32x8)(p * (ms_f32x8)((k + 127) << 23)) & ~underflow);
}

MS_INLINE ms_f64x4 ms_exp_f64(ms_f64x4 x) {
    ms_i64x4 underflow = x < -708.0;
    x = ms_clamp_f64(x, -708.0);
    ms_f64x4 n = x * 1.4426950408889634073599 + 0.5;
    ms_i64x4 k = __builtin_convertvector(n, ms_i64x4);
    k -= (ms_i64x4)(__builtin_convertvector(k, ms_f64x4) > n) & 1; /* floor */
    n = __builtin_convertvector(k, ms_f64x4);
    x = x - n * 6.93145751953125e-1 - n * 1.42860682030941723212e-6;
    ms_f64x4 xx = x * x;
    ms_f64x4 px = x * ((1.26177193074810590878e-4 * xx + 3.02994407707441961300e-2) * xx + 9.99999999999999999910e-1);
    ms_f64x4 qx = ((3.00198505138664455042e-6 * xx + 2.52448340349684104192e-3) * xx + 2.27265548208155028766e-1) * xx +
                  2.00000000000000000009e0;
    x = 1.0 + 2.0 * (px / (qx - px));
    return (ms_f64x4)((ms_i64x4)(x * (ms_f64x4)((k + 1023) << 52)) & ~underflow);
}

/* Bilateral filter of (items, voxels) maps by gathering: out(p) = sum_k w_k x(q_k) / sum_k w_k over the taps q_k =
 * index[p * taps + k], w_k = exp(log_w[k] - half_inv_var * (x(q_k) - x(p))^2), for 32 bytes of voxels at a time (the
 * last group repeats the last voxel in its spare lanes). The centre tap has the largest log weight (0), so the
 * denominator is at least 1. Returns 0 (and writes nothing) when an index is outside [0, voxels). */
#define BILATERAL(NAME, T, L, VEC, EXP)                                                                             \
    MS_CLONES int NAME(const T *src, T *dst, const int64_t *index, const T *log_w, Py_ssize_t items,                 \
                       Py_ssize_t voxels, Py_ssize_t taps, double half_inv_var) {                                    \
        for (Py_ssize_t i = 0; i < voxels * taps; ++i)                                                               \
            if (index[i] < 0 || index[i] >= voxels) return 0;                                                        \
        T h = (T)half_inv_var;                                                                                       \
        for (Py_ssize_t n = 0; n < items; ++n) {                                                                     \
            const T *x = src + n * voxels;                                                                           \
            T *y = dst + n * voxels;                                                                                 \
            for (Py_ssize_t p0 = 0; p0 < voxels; p0 += L) {                                                          \
                Py_ssize_t lane_voxel[L];                                                                            \
                VEC centre, num = {0}, den = {0};                                                                    \
                for (int l = 0; l < L; ++l) {                                                                        \
                    lane_voxel[l] = p0 + l < voxels ? p0 + l : voxels - 1;                                           \
                    centre[l] = x[lane_voxel[l]];                                                                    \
                }                                                                                                    \
                for (Py_ssize_t k = 0; k < taps; ++k) {                                                              \
                    VEC v;                                                                                           \
                    for (int l = 0; l < L; ++l) v[l] = x[index[lane_voxel[l] * taps + k]];                           \
                    VEC d = v - centre;                                                                              \
                    /* without a range term (h == 0) an overflowing d * d must not make 0 * inf = NaN */              \
                    VEC w = EXP(h > 0 ? log_w[k] - h * d * d : (VEC){0} + log_w[k]);                                 \
                    num += w * v;                                                                                    \
                    den += w;                                                                                        \
                }                                                                                                    \
                VEC out = num / den;                                                                                 \
                for (int l = 0; l < L && p0 + l < voxels; ++l) y[p0 + l] = out[l];                                   \
            }                                                                                                        \
        }                                                                                                            \
        return 1;                                                                                                    \
    }
BILATERAL(ms_bilateral_f32, float, 8, ms_f32x8, ms_exp_f32)
BILATERAL(ms_bilateral_f64, double, 4, ms_f64x4, ms_exp_f64)

/* ---- Python bindings: addresses as integers, dtype as a code (0 float32, 1 float64) ---- */

static void *as_pointer(Py_ssize_t address) { return (void *)(uintptr_t)address; }

/* signature_energy(code, src, dst, items, channels, others, nd, dims, fwd, inv, tol) -> whether finite */
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
    ms_energy_job job = {.a = as_pointer(src), .dst = as_pointer(dst), .items = items, .channels = channels,
                         .others = others, .voxels = 1, .nd = nd, .tol = tol};
    size_t item = code == 0 ? sizeof(float) : sizeof(double);
    Py_ssize_t padded = 0;
    for (int d = 0; d < nd; ++d) {
        if (dims[d] < 1 || dims[d] > MS_MAX_AXIS) {
            PyErr_Format(PyExc_ValueError, "signature_energy: block axes must be 1 to %d long", MS_MAX_AXIS);
            return NULL;
        }
        job.dims[d] = dims[d];
        job.voxels *= dims[d];
        job.full[d][0] = (const char *)as_pointer(fwd) + item * (size_t)padded;
        job.full[d][1] = (const char *)as_pointer(inv) + item * (size_t)padded;
        padded += (dims[d] + MS_KB - 1) / MS_KB * MS_KB * dims[d];
    }
    void *halves = malloc(2 * item * (size_t)padded);
    if (halves == NULL || posix_memalign(&job.work, 64, 4 * 32 * (size_t)job.voxels) != 0) {
        free(halves);
        return PyErr_NoMemory();
    }
    memset((char *)job.work + 3 * 32 * (size_t)job.voxels, 0, 32 * (size_t)job.voxels);
    int finite;
    Py_BEGIN_ALLOW_THREADS
    if (code == 0) {
        ms_signature_energy_f32_plan(&job, halves);
        finite = ms_signature_energy_f32(&job);
    } else {
        ms_signature_energy_f64_plan(&job, halves);
        finite = ms_signature_energy_f64(&job);
    }
    Py_END_ALLOW_THREADS
    free(job.work);
    free(halves);
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
