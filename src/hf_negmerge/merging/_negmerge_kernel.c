/* NegMerge's streaming fold in one pass: the compiled inner loop behind merging/kernel.py.
 *
 * Folding a block of every run with torch ops costs five passes per run (difference, norm, sum,
 * sign, sign sum) and a Python call for each; here each run's block is read once, in chunks that
 * keep the running sum and the two sign masks in L1, and the merged block is written once. The
 * arithmetic is the generic fold's, value for value: task = tuned - base, total = 0 + task_1 +
 * ... + task_n in run order (float32), merged = total / n + 0 where every task has the same
 * nonzero sign and +0 elsewhere. Only the squared norms are summed in another order (float32
 * lanes per chunk, then float64), like the generic fold's float32 dot: ~1e-6 relative.
 *
 * Built by setup.py as an optional extension: where it cannot be compiled the package uses the
 * generic fold. On x86-64 with GCC it is compiled for AVX-512, AVX2 and baseline SSE2, and the
 * loader picks the widest the CPU has (target_clones).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define VECTOR_BYTES 64
#define LANES (VECTOR_BYTES / 4)
#define CHUNK 1024 /* elements whose running state stays in L1: 3 arrays of 4 KiB */

typedef float vfloat __attribute__((vector_size(VECTOR_BYTES)));
typedef int32_t vint __attribute__((vector_size(VECTOR_BYTES)));

#define INLINE static inline __attribute__((always_inline))
INLINE vfloat load(const float *p) { vfloat v; memcpy(&v, p, sizeof v); return v; }
INLINE void store(float *p, vfloat v) { memcpy(p, &v, sizeof v); }
INLINE vint load_int(const int32_t *p) { vint v; memcpy(&v, p, sizeof v); return v; }
INLINE void store_int(int32_t *p, vint v) { memcpy(p, &v, sizeof v); }
INLINE double lane_sum(vfloat v) {
    double sum = 0.0;
    for (int k = 0; k < LANES; k++) sum += v[k];
    return sum;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WIDEST_VECTORS __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define WIDEST_VECTORS
#endif

/* Elements [0, n) of the merged block from `count` runs; squared[r] += sum of run r's task^2.
 * Returns how many merged values are nonzero; *merged_squared = sum of merged^2. */
WIDEST_VECTORS
static int64_t negmerge_block(float *restrict out, const float *restrict base, const float *const *runs,
                              int64_t count, int64_t n, double *squared, double *merged_squared) {
    float total[CHUNK] __attribute__((aligned(64)));
    int32_t all_positive[CHUNK] __attribute__((aligned(64)));
    int32_t all_negative[CHUNK] __attribute__((aligned(64)));
    const vfloat zero = {0};
    const float runs_f = (float)count;
    const vfloat runs_v = zero + runs_f;
    vint nonzero_lanes = {0};
    double merged_sq = 0.0;
    int64_t body = n - n % LANES;
    for (int64_t start = 0; start < body; start += CHUNK) {
        int64_t len = body - start < CHUNK ? body - start : CHUNK;
        const float *b = base + start;
        for (int64_t r = 0; r < count; r++) {
            const float *x = runs[r] + start;
            vfloat norm = zero;
            if (r == 0) {
                for (int64_t i = 0; i < len; i += LANES) {
                    vfloat task = load(x + i) - load(b + i);
                    store(total + i, zero + task); /* 0 + task, as the generic fold's zeroed sum */
                    store_int(all_positive + i, task > zero);
                    store_int(all_negative + i, task < zero);
                    norm += task * task;
                }
            } else {
                for (int64_t i = 0; i < len; i += LANES) {
                    vfloat task = load(x + i) - load(b + i);
                    store(total + i, load(total + i) + task);
                    store_int(all_positive + i, load_int(all_positive + i) & (task > zero));
                    store_int(all_negative + i, load_int(all_negative + i) & (task < zero));
                    norm += task * task;
                }
            }
            squared[r] += lane_sum(norm);
        }
        vfloat chunk_sq = zero;
        for (int64_t i = 0; i < len; i += LANES) {
            vint unanimous = load_int(all_positive + i) | load_int(all_negative + i);
            vfloat merged = (vfloat)((vint)(load(total + i) / runs_v + zero) & unanimous);
            store(out + start + i, merged);
            nonzero_lanes += (vint)(merged != zero); /* true lanes are -1 */
            chunk_sq += merged * merged;
        }
        merged_sq += lane_sum(chunk_sq);
    }
    int64_t nonzero = 0;
    for (int k = 0; k < LANES; k++) nonzero -= nonzero_lanes[k];
    for (int64_t i = body; i < n; i++) { /* the last n % LANES elements, one at a time */
        float sum = 0.0f;
        int positive = 1, negative = 1;
        for (int64_t r = 0; r < count; r++) {
            float task = runs[r][i] - base[i];
            sum += task;
            positive &= task > 0.0f;
            negative &= task < 0.0f;
            squared[r] += (double)(task * task);
        }
        float merged = (positive | negative) ? sum / runs_f + 0.0f : 0.0f;
        out[i] = merged;
        nonzero += merged != 0.0f;
        merged_sq += (double)merged * (double)merged;
    }
    *merged_squared = merged_sq;
    return nonzero;
}

/* fold_block(out, base, runs, count, n, squared) -> (nonzero, merged_squared)
 * Every argument but count and n is an address: out and base of n float32, runs of `count`
 * addresses of n float32 each, squared of `count` float64. The caller (merging/kernel.py)
 * checks dtypes and sizes; the GIL is released while the block is folded. */
static PyObject *fold_block(PyObject *self, PyObject *args) {
    unsigned long long out, base, runs, squared;
    long long count, n;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKLLK", &out, &base, &runs, &count, &n, &squared)) return NULL;
    if (count < 1 || n < 0) {
        PyErr_Format(PyExc_ValueError, "fold_block needs count >= 1 and n >= 0, got %lld and %lld", count, n);
        return NULL;
    }
    int64_t nonzero;
    double merged_sq = 0.0;
    Py_BEGIN_ALLOW_THREADS
    nonzero = negmerge_block((float *)(uintptr_t)out, (const float *)(uintptr_t)base,
                             (const float *const *)(uintptr_t)runs, count, n, (double *)(uintptr_t)squared,
                             &merged_sq);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("Ld", (long long)nonzero, merged_sq);
}

static PyMethodDef methods[] = {
    {"fold_block", fold_block, METH_VARARGS, "Fold one block of every run (NegMerge, unanimous)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_negmerge_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__negmerge_kernel(void) { return PyModule_Create(&module); }
