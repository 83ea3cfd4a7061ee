/* embedstack's attention kernel for inference on AVX-512 CPUs (and AVX2 ones: see below): softmax(Q Kᵀ · scale) V,
 * one (text, head) at a time.
 *
 * Why: at head dimension 32 (MiniLM), torch's scaled_dot_product_attention runs its two products as GEMMs whose
 * inner dimension is 32 (Q Kᵀ) or whose output is 32 wide (P V): too thin for the GEMM kernels, which reach about
 * a third of the GEMM rate on them. Here each product is one register-tiled loop written for that shape:
 *
 *   Q Kᵀ: 12 query rows × 32 keys of scores in 24 accumulators; per head dimension d, two loads of the packed Kᵀ
 *         row and 12 broadcasts of Q feed 24 fused multiply-adds.
 *   P V:  12 query rows × D outputs (D/16 vectors each); per key, D/16 loads of V and 12 broadcasts of P.
 *
 * The scores of 12 rows (12 × keys floats) stay in L1/L2 between the two products; softmax runs on them in
 * place with a vector exp. Everything is float32 (bf16 inputs are widened when packed, outputs rounded to
 * nearest even), so results equal the formula's up to summation order. bf16 states have kernels of their own where
 * the CPU has bf16 products: the tile unit's (AMX) and vdpbf16ps registers' (AVX-512 BF16 and VBMI, Zen 4), below.
 *
 * Layout: q, k, v, out are row-major matrices of token states (rows × ld elements); head h of a row is the
 * columns [h·D, h·D + D). Item b (a text) owns query rows [q_off[b], q_off[b] + q_len[b]) and key / value rows
 * [k_off[b], k_off[b] + k_len[b]); mask (optional, one byte per key row, indexed like k) is 0 where a key must
 * not be attended to. A query row with no key to attend to gets zeros. Work items (text, head) are shared
 * by `threads` threads (the caller plus threads - 1 pthreads) through an atomic counter.
 *
 * Built at first use by embedstack.neural._attention with the system C compiler (-mavx512f ..., or -mavx2); the Python
 * side checks the CPU first and falls back to torch's kernel where this cannot run.
 *
 * On CPUs with AVX2 and FMA but no AVX-512 (Zen 3, Haswell to Comet Lake) the same file builds with -mavx2 -mfma:
 * the float32 attention kernel alone, in 8-float registers (the #else branch after run_item: tiles of 6 query rows
 * × 16 keys and 3 rows × 32 outputs, a degree-5 exp); everything else here (bf16 states, the tile unit, SPLADE's
 * pooling, the row kernels) is AVX-512 only. On one Zen 3 core, 32 abstracts × 240 tokens × 12 heads of 32:
 * 46 against torch's 57 ms.
 */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX512F__
#define ROWS 12     /* query rows per tile */
#define KEYS 32     /* keys per Q Kᵀ tile (two vectors) */
typedef __m512 vec_t; /* one register of floats, and what the tile shared by both builds (qk_tile) does with it */
#define VEC_ZERO _mm512_setzero_ps
#define VEC_LOAD _mm512_loadu_ps
#define VEC_STORE _mm512_storeu_ps
#define VEC_SET1 _mm512_set1_ps
#define VEC_FMADD _mm512_fmadd_ps
#else               /* the AVX2 build: 16 registers of 8 floats */
#define ROWS 6
#define KEYS 16
typedef __m256 vec_t;
#define VEC_ZERO _mm256_setzero_ps
#define VEC_LOAD _mm256_loadu_ps
#define VEC_STORE _mm256_storeu_ps
#define VEC_SET1 _mm256_set1_ps
#define VEC_FMADD _mm256_fmadd_ps
#endif
#define VEC (KEYS / 2) /* floats per register */
#define MAX_DIM 128    /* head dimension: a multiple of 16, at most this */

typedef struct {
    const void *q, *k, *v;
    void *out;
    const uint8_t *mask;
    const int64_t *q_off, *q_len, *k_off, *k_len;
    int64_t ld_q, ld_k, ld_v, ld_o;
    int64_t n_texts, max_keys;
    int heads, dim, bf16;
    float scale;
    int64_t next; /* the next work item, taken with __atomic_fetch_add */
} job_t;

/* scores s[r][j0 .. j0 + KEYS) = qs[r] · kt[:, j0 .. j0 + KEYS) for r < R (qs pre-scaled, kt packed d-major): per
 * head dimension d, two loads of the packed Kᵀ row and R broadcasts of Q feed 2R fused multiply-adds (both builds) */
static inline __attribute__((always_inline)) void qk_tile(const int R, const float *qs, const float *kt,
                                                          int64_t kp, int dim, int64_t j0, float *s) {
    vec_t acc[ROWS][2];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = VEC_ZERO();
    for (int d = 0; d < dim; d++) {
        vec_t b0 = VEC_LOAD(kt + d * kp + j0), b1 = VEC_LOAD(kt + d * kp + j0 + VEC);
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            vec_t a = VEC_SET1(qs[r * MAX_DIM + d]);
            acc[r][0] = VEC_FMADD(a, b0, acc[r][0]);
            acc[r][1] = VEC_FMADD(a, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
        VEC_STORE(s + r * kp + j0, acc[r][0]);
        VEC_STORE(s + r * kp + j0 + VEC, acc[r][1]);
    }
}

#ifdef __AVX512F__
static inline __m512 load16(const void *base, int64_t i, int bf16) {
    if (bf16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_loadu_ps((const float *)base + i);
}

static inline void store16(void *base, int64_t i, __m512 x, int bf16) {
    if (bf16) { /* round to nearest even, as torch's float -> bfloat16 conversion */
        __m512i b = _mm512_castps_si512(x);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
        b = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        _mm256_storeu_si256((__m256i *)((uint16_t *)base + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16)));
    } else {
        _mm512_storeu_ps((float *)base + i, x);
    }
}

/* e^x for x <= 0: x = n ln2 + r, |r| <= ln2 / 2, e^r by its degree-6 Taylor polynomial (relative error
 * below 2e-7), times 2^n by vscalefps. Below -87 the result is ~0 (e^-87 ~ 1.6e-38). */
static inline __m512 exp_neg(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x); /* this order keeps a NaN (max gives its second operand) */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* out rows (R of them) = p[r] · vp (nk keys × NC·16 dims), divided by each row's sum inv[r] */
static inline __attribute__((always_inline)) void pv_tile(const int R, const int NC, const float *p, int64_t kp,
                                                          const float *vp, int64_t nk, const float *inv,
                                                          void *out, int64_t o0, int64_t ld_o, int bf16) {
    __m512 acc[ROWS][MAX_DIM / 16];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; j++) {
        __m512 b[MAX_DIM / 16];
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) b[c] = _mm512_loadu_ps(vp + j * NC * 16 + c * 16);
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_set1_ps(p[r * kp + j]);
#pragma GCC unroll 8
            for (int c = 0; c < NC; c++) acc[r][c] = _mm512_fmadd_ps(a, b[c], acc[r][c]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
        __m512 w = _mm512_set1_ps(inv[r]);
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) store16(out, (o0 + r) * ld_o + c * 16, _mm512_mul_ps(acc[r][c], w), bf16);
    }
}

/* softmax of scale times the first nk scores of row s (in place); masked keys (m[j] == 0) get weight 0. Returns 1 / sum,
 * or 0 when no key may be attended to (the row's output is then zeros). */
static inline float softmax_row(float *s, int64_t nk, const uint8_t *m, float scale) {
    __m512 vmax = _mm512_set1_ps(-__builtin_inff());
    for (int64_t j = 0; j < nk; j += 16) {
        __mmask16 valid = nk - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nk - j)) - 1);
        if (m) valid &= _mm_cmpneq_epi8_mask(_mm_maskz_loadu_epi8(valid, m + j), _mm_setzero_si128());
        vmax = _mm512_mask_max_ps(vmax, valid, vmax, _mm512_loadu_ps(s + j));
    }
    float mx = _mm512_reduce_max_ps(vmax); /* of the unscaled scores: scale > 0 keeps the order */
    if (mx == -__builtin_inff()) { /* nothing to attend to */
        memset(s, 0, (size_t)nk * sizeof(float));
        return 0.0f;
    }
    __m512 vm = _mm512_set1_ps(mx * scale), vs = _mm512_set1_ps(scale), sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; j += 16) {
        __mmask16 valid = nk - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nk - j)) - 1);
        if (m) valid &= _mm_cmpneq_epi8_mask(_mm_maskz_loadu_epi8(valid, m + j), _mm_setzero_si128());
        __m512 e = _mm512_maskz_mov_ps(valid, exp_neg(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vs, vm)));
        _mm512_storeu_ps(s + j, e); /* s is padded to a multiple of 32 floats: the tail store stays inside */
        sum = _mm512_add_ps(sum, e);
    }
    return 1.0f / _mm512_reduce_add_ps(sum);
}

typedef struct {
    float *kt, *vp, *s, *qs;
} scratch_t;

static void run_item(const job_t *J, int64_t item, scratch_t *w) {
    const int64_t b = item / J->heads;
    const int h = (int)(item % J->heads), D = J->dim, NC = D / 16, bf = J->bf16;
    const int64_t q0 = J->q_off[b], nq = J->q_len[b], k0 = J->k_off[b];
    int64_t nk = J->k_len[b];
    const uint8_t *m = J->mask ? J->mask + k0 : NULL;
    if (m) { /* keys after the last attended one cost nothing (right padding) */
        while (nk > 0 && !m[nk - 1]) nk--;
    }
    if (nk == 0) {
        for (int64_t i = 0; i < nq; i++)
            for (int c = 0; c < NC; c++) store16(J->out, (q0 + i) * J->ld_o + h * D + c * 16, _mm512_setzero_ps(), bf);
        return;
    }
    const int64_t kp = (nk + KEYS - 1) / KEYS * KEYS;
    /* pack Kᵀ (d-major, zero padded to kp keys) and V (key-major, D contiguous floats) */
    for (int64_t j = 0; j < nk; j++) {
        for (int c = 0; c < NC; c++) {
            float tmp[16];
            _mm512_storeu_ps(tmp, load16(J->k, (k0 + j) * J->ld_k + h * D + c * 16, bf));
            for (int t = 0; t < 16; t++) w->kt[(c * 16 + t) * kp + j] = tmp[t];
            _mm512_storeu_ps(w->vp + j * D + c * 16, load16(J->v, (k0 + j) * J->ld_v + h * D + c * 16, bf));
        }
    }
    for (int d = 0; d < D; d++)
        for (int64_t j = nk; j < kp; j++) w->kt[d * kp + j] = 0.0f;
    const __m512 scale = _mm512_set1_ps(J->scale);
    for (int64_t i0 = 0; i0 < nq; i0 += ROWS) {
        const int R = nq - i0 < ROWS ? (int)(nq - i0) : ROWS;
        for (int r = 0; r < R; r++)
            for (int c = 0; c < NC; c++)
                _mm512_storeu_ps(w->qs + r * MAX_DIM + c * 16,
                                 _mm512_mul_ps(load16(J->q, (q0 + i0 + r) * J->ld_q + h * D + c * 16, bf), scale));
        for (int64_t j0 = 0; j0 < kp; j0 += KEYS) {
            if (R == ROWS) qk_tile(ROWS, w->qs, w->kt, kp, D, j0, w->s);
            else if (R > 8) qk_tile(11, w->qs, w->kt, kp, D, j0, w->s); /* rows R..10 are stale, never read */
            else if (R > 4) qk_tile(8, w->qs, w->kt, kp, D, j0, w->s);
            else qk_tile(4, w->qs, w->kt, kp, D, j0, w->s);
        }
        float inv[ROWS];
        for (int r = 0; r < R; r++) inv[r] = softmax_row(w->s + r * kp, nk, m, 1.0f); /* q was scaled (float32) */
        const int64_t o0 = q0 + i0;
        void *out = (char *)J->out + (size_t)(h * D) * (bf ? 2 : 4);
        if (NC == 2) {
            if (R == ROWS) pv_tile(ROWS, 2, w->s, kp, w->vp, nk, inv, out, o0, J->ld_o, bf);
            else for (int r0 = 0; r0 < R; r0 += 4) {
                const int n = R - r0 < 4 ? R - r0 : 4;
                if (n == 4) pv_tile(4, 2, w->s + r0 * kp, kp, w->vp, nk, inv + r0, out, o0 + r0, J->ld_o, bf);
                else for (int r = 0; r < n; r++)
                    pv_tile(1, 2, w->s + (r0 + r) * kp, kp, w->vp, nk, inv + r0 + r, out, o0 + r0 + r, J->ld_o, bf);
            }
        } else if (NC == 4) {
            for (int r0 = 0; r0 < R; r0 += 6) {
                const int n = R - r0 < 6 ? R - r0 : 6;
                if (n == 6) pv_tile(6, 4, w->s + r0 * kp, kp, w->vp, nk, inv + r0, out, o0 + r0, J->ld_o, bf);
                else for (int r = 0; r < n; r++)
                    pv_tile(1, 4, w->s + (r0 + r) * kp, kp, w->vp, nk, inv + r0 + r, out, o0 + r0 + r, J->ld_o, bf);
            }
        } else {
            for (int r = 0; r < R; r++)
                switch (NC) {
                    case 1: pv_tile(1, 1, w->s + r * kp, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o, bf); break;
                    case 3: pv_tile(1, 3, w->s + r * kp, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o, bf); break;
                    case 5: pv_tile(1, 5, w->s + r * kp, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o, bf); break;
                    case 6: pv_tile(1, 6, w->s + r * kp, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o, bf); break;
                    case 7: pv_tile(1, 7, w->s + r * kp, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o, bf); break;
                    default: pv_tile(1, 8, w->s + r * kp, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o, bf); break;
                }
        }
    }
}

#else /* AVX2 and FMA (no AVX-512): the same algorithm in 8-float registers, float32 states only ------------------ */

/* Tiles for 16 registers: Q Kᵀ as 6 rows × 16 keys (12 accumulators, 2 loads of Kᵀ, 1 broadcast); P V as 3 rows ×
 * 32 outputs at head dimension 32 (12 accumulators: 2 rows' 8 left the two FMA units waiting on their 4-cycle
 * latency, 74 against 96 GFLOP/s on one Zen 3 core), 6 rows × 16 at 16, one row at a time beyond. */
static inline __m256 exp_neg(__m256 x) { /* e^x for x <= 0 (relative error below 2e-7, as the AVX-512 one) */
    /* x = n ln2 + r, |r| <= ln2 / 2: n rounded by adding 1.5·2^23 (its integer lands in the low mantissa bits),
     * e^r by a degree-5 polynomial fitted for relative error on that interval (1.8e-7 in float32 arithmetic),
     * 2^n by writing n + 127 into the exponent bits (a normal float: x >= -87 keeps n >= -126) */
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x); /* this order keeps a NaN, as the AVX-512 one */
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
    __m256 n = _mm256_sub_ps(t, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(0.008290314115583897f), r, _mm256_set1_ps(0.04189793020486832f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.1666763573884964f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.4999915063381195f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.9999997019767761f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127 - 0x4B400000)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static inline float hsum8(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* out rows (R of them) = p[r] · vp (nk keys × NC·8 dims), divided by each row's sum inv[r] */
static inline __attribute__((always_inline)) void pv_tile(const int R, const int NC, const float *p, int64_t kp,
                                                          const float *vp, int64_t nk, const float *inv,
                                                          float *out, int64_t o0, int64_t ld_o) {
    __m256 acc[ROWS][MAX_DIM / 8];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t j = 0; j < nk; j++) {
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m256 a = _mm256_broadcast_ss(p + r * kp + j);
#pragma GCC unroll 16
            for (int c = 0; c < NC; c++) acc[r][c] = _mm256_fmadd_ps(a, _mm256_loadu_ps(vp + j * NC * 8 + c * 8), acc[r][c]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        __m256 w = _mm256_set1_ps(inv[r]);
#pragma GCC unroll 16
        for (int c = 0; c < NC; c++) _mm256_storeu_ps(out + (o0 + r) * ld_o + c * 8, _mm256_mul_ps(acc[r][c], w));
    }
}

/* lanes j .. j + 8 of a row of nk scores that count: inside the row and, with a mask, not masked */
static inline __m256 valid8(int64_t j, int64_t nk, const uint8_t *m) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i ok = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(nk - j < 8 ? nk - j : 8)), lane);
    if (m) {
        __m128i bytes;
        if (nk - j >= 8) {
            bytes = _mm_loadl_epi64((const __m128i *)(m + j));
        } else { /* never past the row's last key */
            uint8_t b[8] = {0};
            memcpy(b, m + j, (size_t)(nk - j));
            bytes = _mm_loadl_epi64((const __m128i *)b);
        }
        __m256i mv = _mm256_cvtepu8_epi32(bytes);
        ok = _mm256_andnot_si256(_mm256_cmpeq_epi32(mv, _mm256_setzero_si256()), ok);
    }
    return _mm256_castsi256_ps(ok);
}

/* softmax of scale times the first nk scores of row s (in place); masked keys get weight 0. Returns 1 / sum, or 0
 * when no key may be attended to (the row's output is then zeros). */
static inline float softmax_row(float *s, int64_t nk, const uint8_t *m, float scale) {
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
    const int64_t full = m ? 0 : nk / 8 * 8; /* without a mask, whole vectors need no validity test */
    __m256 vmax = ninf;
    for (int64_t j = 0; j < full; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + j));
    for (int64_t j = full; j < nk; j += 8)
        vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + j), valid8(j, nk, m)));
    float mx = hmax8(vmax);
    if (mx == -__builtin_inff()) {
        memset(s, 0, (size_t)nk * sizeof(float));
        return 0.0f;
    }
    __m256 vm = _mm256_set1_ps(mx * scale), vs = _mm256_set1_ps(scale), sum = _mm256_setzero_ps();
    for (int64_t j = 0; j < full; j += 8) {
        __m256 e = exp_neg(_mm256_fmsub_ps(_mm256_loadu_ps(s + j), vs, vm));
        _mm256_storeu_ps(s + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    for (int64_t j = full; j < nk; j += 8) {
        __m256 e = _mm256_and_ps(valid8(j, nk, m), exp_neg(_mm256_fmsub_ps(_mm256_loadu_ps(s + j), vs, vm)));
        _mm256_storeu_ps(s + j, e); /* s is padded to a multiple of 16 floats: the tail store stays inside */
        sum = _mm256_add_ps(sum, e);
    }
    return 1.0f / hsum8(sum);
}

/* dst[c * ld_dst + r] = src[r * ld_src + c] for an 8 × 8 block */
static inline void transpose8(const float *src, int64_t ld_src, float *dst, int64_t ld_dst) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * ld_src);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(dst + i * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

typedef struct {
    float *kt, *vp, *s, *qs;
} scratch_t;

static void run_item(const job_t *J, int64_t item, scratch_t *w) {
    const int64_t b = item / J->heads;
    const int h = (int)(item % J->heads), D = J->dim, NC = D / 8;
    const int64_t q0 = J->q_off[b], nq = J->q_len[b], k0 = J->k_off[b];
    const float *Q = (const float *)J->q, *K = (const float *)J->k, *V = (const float *)J->v;
    float *out = (float *)J->out + h * D;
    int64_t nk = J->k_len[b];
    const uint8_t *m = J->mask ? J->mask + k0 : NULL;
    if (m) {
        while (nk > 0 && !m[nk - 1]) nk--;
    }
    if (nk == 0) {
        for (int64_t i = 0; i < nq; i++) memset(out + (q0 + i) * J->ld_o, 0, (size_t)D * sizeof(float));
        return;
    }
    const int64_t kp = (nk + KEYS - 1) / KEYS * KEYS;
    /* Kᵀ d-major (zero padded to kp keys), by 8 × 8 blocks transposed in registers; V key-major */
    const float *Kh = K + k0 * J->ld_k + h * D;
    int64_t j = 0;
    const float *Qh = Q + q0 * J->ld_q + h * D, *Vh = V + k0 * J->ld_v + h * D;
    for (; j + 8 <= nk; j += 8) {
        /* the rows 16 ahead on their way from L3 meanwhile (key and query rows: the tile loop reads Q later) */
        for (int64_t i = j + 16; i < j + 24 && i < nk; i++)
            for (int d = 0; d < D; d += 16) {
                _mm_prefetch((const char *)(Kh + i * J->ld_k + d), _MM_HINT_T0);
                _mm_prefetch((const char *)(Vh + i * J->ld_v + d), _MM_HINT_T0);
                if (i < nq) _mm_prefetch((const char *)(Qh + i * J->ld_q + d), _MM_HINT_T1);
            }
        for (int d = 0; d < D; d += 8) transpose8(Kh + j * J->ld_k + d, J->ld_k, w->kt + d * kp + j, kp);
    }
    for (; j < nk; j++)
        for (int d = 0; d < D; d++) w->kt[d * kp + j] = Kh[j * J->ld_k + d];
    for (j = 0; j < nk; j++) memcpy(w->vp + j * D, V + (k0 + j) * J->ld_v + h * D, (size_t)D * sizeof(float));
    for (int d = 0; d < D; d++)
        for (int64_t j = nk; j < kp; j++) w->kt[d * kp + j] = 0.0f;
    const __m256 scale = _mm256_set1_ps(J->scale);
    for (int64_t i0 = 0; i0 < nq; i0 += ROWS) {
        const int R = nq - i0 < ROWS ? (int)(nq - i0) : ROWS;
        for (int r = 0; r < R; r++)
            for (int c = 0; c < NC; c++)
                _mm256_storeu_ps(w->qs + r * MAX_DIM + c * 8,
                                 _mm256_mul_ps(_mm256_loadu_ps(Q + (q0 + i0 + r) * J->ld_q + h * D + c * 8), scale));
        for (int64_t j0 = 0; j0 < kp; j0 += KEYS) {
            if (R > 4) qk_tile(ROWS, w->qs, w->kt, kp, D, j0, w->s); /* rows R..5 are stale, never read */
            else if (R > 2) qk_tile(4, w->qs, w->kt, kp, D, j0, w->s);
            else qk_tile(2, w->qs, w->kt, kp, D, j0, w->s);
        }
        float inv[ROWS];
        for (int r = 0; r < R; r++) inv[r] = softmax_row(w->s + r * kp, nk, m, 1.0f); /* q was scaled */
        const int64_t o0 = q0 + i0;
        if (NC == 2 && R == ROWS) {
            pv_tile(ROWS, 2, w->s, kp, w->vp, nk, inv, out, o0, J->ld_o);
            continue;
        }
        int r = 0;
        if (NC == 4)
            for (; r + 3 <= R; r += 3) pv_tile(3, 4, w->s + r * kp, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o);
        for (; r < R; r++) {
            const float *p = w->s + r * kp;
            switch (NC) {
                case 2: pv_tile(1, 2, p, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o); break;
                case 4: pv_tile(1, 4, p, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o); break;
                case 6: pv_tile(1, 6, p, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o); break;
                case 8: pv_tile(1, 8, p, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o); break;
                case 10: pv_tile(1, 10, p, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o); break;
                case 12: pv_tile(1, 12, p, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o); break;
                case 14: pv_tile(1, 14, p, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o); break;
                default: pv_tile(1, 16, p, kp, w->vp, nk, inv + r, out, o0 + r, J->ld_o); break;
            }
        }
    }
}

#endif

/* every work item (text, head) of job J that this thread takes from the shared counter, in turn */
#define FOR_EACH_ITEM(J, item)                                                                              \
    for (int64_t item, items_ = (J)->n_texts * (J)->heads;                                                  \
         (item = __atomic_fetch_add(&(J)->next, 1, __ATOMIC_RELAXED)) < items_;)

static void *worker(void *arg) {
    job_t *J = (job_t *)arg;
    const int64_t kp = (J->max_keys + KEYS - 1) / KEYS * KEYS;
    const size_t floats = (size_t)(J->dim * kp + kp * J->dim + ROWS * kp + ROWS * MAX_DIM);
    float *buf = (float *)aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
    if (!buf) return NULL; /* the other threads take this one's share; none at all: an error (below) */
    memset(buf, 0, floats * sizeof(float)); /* tiles read a few rows past the last query row: zeros */
    scratch_t w = {buf, buf + J->dim * kp, buf + 2 * J->dim * kp, buf + 2 * J->dim * kp + ROWS * kp};
    FOR_EACH_ITEM(J, item) run_item(J, item, &w);
    free(buf);
    return NULL;
}

/* fn(arg) on `threads` threads, which share the work items through a counter in arg (run_parallel: J->next; 0, or
 * 2 if items were left undone, when no thread could get its scratch memory).
 *
 * Built with OpenMP, the threads are OpenMP's: in a process that has loaded torch, that is torch's own runtime
 * (libgomp.so.1 is loaded once), so the work goes to the intra-op threads torch just used. They spin a while after
 * each of torch's parallel regions; a thread of our own would fight them for the cores (measured: 2 threads,
 * 32 abstracts x 256 tokens through MiniLM in bf16, attention 15 ms a layer with pthreads, 10.8 with
 * OMP_WAIT_POLICY=PASSIVE). Without OpenMP, pthreads. */
static void run_threads(void *arg, void *(*fn)(void *), int threads) {
    if (threads <= 1) {
        fn(arg);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    fn(arg);
#else
    pthread_t tid[64];
    int started = 0;
    for (int t = 1; t < threads && t < 64; t++) {
        if (pthread_create(&tid[started], NULL, fn, arg) != 0) break; /* fewer threads: the rest still runs */
        started++;
    }
    fn(arg);
    for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
#endif
}

static int run_parallel(job_t *J, void *(*fn)(void *), int threads) {
    const int64_t items = J->n_texts * J->heads;
    if (threads > items) threads = (int)items;
    run_threads(J, fn, threads);
    return J->next < items ? 2 : 0;
}

/* Returns 0 on success, 1 for an unsupported head dimension (or bf16 states on the AVX2 build), 2 when memory or a
 * thread could not be had. */
int embedstack_attention(const void *q, const void *k, const void *v, void *out, const uint8_t *mask,
                         const int64_t *q_off, const int64_t *q_len, const int64_t *k_off, const int64_t *k_len,
                         int64_t n_texts, int heads, int dim, int64_t ld_q, int64_t ld_k, int64_t ld_v,
                         int64_t ld_o, int bf16, float scale, int threads) {
    if (dim <= 0 || dim % 16 || dim > MAX_DIM) return 1;
#ifndef __AVX512F__
    if (bf16) return 1; /* the AVX2 build takes float32 states only */
#endif
    int64_t max_keys = 1;
    for (int64_t b = 0; b < n_texts; b++) max_keys = k_len[b] > max_keys ? k_len[b] : max_keys;
    job_t J = {q, k, v, out, mask, q_off, q_len, k_off, k_len, ld_q, ld_k, ld_v, ld_o,
               n_texts, max_keys, heads, dim, bf16, scale, 0};
    return run_parallel(&J, worker, threads);
}

/* 512 for the AVX-512 build, 256 for the AVX2 one (the attention kernel alone: no row, SPLADE or tile kernels) */
int embedstack_kernel_width(void) {
#ifdef __AVX512F__
    return 512;
#else
    return 256;
#endif
}

#if defined(EMBEDSTACK_BF16) && defined(__AVX512VBMI__)
/* ---------------------------------------------------------------------------------------------------------------
 * What both bfloat16 kernels share (the tile unit's, AMX; the registers', AVX-512 BF16): K packed as pairs of head
 * dims, V as pairs of keys, P's bf16 weights written from an exponent table, and the (text, head) work items.
 */
/* r[0..15] (16 rows of 16 dwords) transposed: dword c of every row, in row order, stored at out + c * ld */
static inline __attribute__((always_inline)) void transpose16(const __m512i *r, uint32_t *out, int64_t ld) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int g = 0; g < 16; g += 4) { /* u[g + m], lane L: column 4L + m of rows g .. g + 3 */
        u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
        u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
        u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
        u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
    }
    for (int m = 0; m < 4; m++) {
        const __m512i v0 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x44);
        const __m512i v1 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xEE);
        const __m512i v2 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x44);
        const __m512i v3 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xEE);
        _mm512_storeu_si512(out + (0 + m) * ld, _mm512_shuffle_i32x4(v0, v2, 0x88));
        _mm512_storeu_si512(out + (4 + m) * ld, _mm512_shuffle_i32x4(v0, v2, 0xDD));
        _mm512_storeu_si512(out + (8 + m) * ld, _mm512_shuffle_i32x4(v1, v3, 0x88));
        _mm512_storeu_si512(out + (12 + m) * ld, _mm512_shuffle_i32x4(v1, v3, 0xDD));
    }
}

/* P (bf16 bits, padded to kp with zeros) = 2^x, x = scale log2(e) (s - max) over the first nk scores of a row (keys
 * with m[j] == 0 weighted 0), without a float exp: n = round(128 x) + 127 * 128 as int32, saturated to [0, 65535]
 * two vectors at a time (vpackusdw: weights below 2^-127 become 0, those below 2^-126 subnormals, which the tile
 * unit reads as 0), is the bf16's biased exponent (n >> 7) above a 7-bit fraction index (n & 127) whose mantissa
 * comes from a 128-entry byte table (vpermi2b): bits = (n & ~127) | T[n & 127]. x is rounded to 1/128 (2^x within
 * 0.27%) and the mantissa to 7 bits (bf16's own rounding, 0.39%). vpackusdw interleaves the two vectors by 4 keys
 * within each 128-bit lane: the 32 keys of a block are stored in the order KEY_ORDER, and V is packed in the same
 * order. The row's sum is not taken here: P V's tile product takes it. A row with a NaN or an infinite score gets
 * NaN weights, so that its output is NaN, as the float formula's is. */
static inline void softmax_row_tab(const float *s, int64_t nk, int64_t kp, const uint8_t *m, float scale,
                                   __m512i tlo, __m512i thi, uint16_t *p) {
    __m512 m0 = _mm512_set1_ps(-__builtin_inff()), m1 = m0;
    __mmask16 bad = 0; /* a NaN or an infinite score (0x99: either NaN, +inf, -inf): the integer path would hide it */
    int64_t j = 0;
    if (!m)
        for (; j + 32 <= nk; j += 32) {
            const __m512 a = _mm512_loadu_ps(s + j), b = _mm512_loadu_ps(s + j + 16);
            bad |= _mm512_fpclass_ps_mask(a, 0x99) | _mm512_fpclass_ps_mask(b, 0x99);
            m0 = _mm512_max_ps(m0, a);
            m1 = _mm512_max_ps(m1, b);
        }
    for (; j < nk; j += 16) {
        __mmask16 valid = nk - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nk - j)) - 1);
        if (m) valid &= _mm_cmpneq_epi8_mask(_mm_maskz_loadu_epi8(valid, m + j), _mm_setzero_si128());
        const __m512 a = _mm512_maskz_loadu_ps(valid, s + j);
        bad |= _mm512_mask_fpclass_ps_mask(valid, a, 0x99);
        m0 = _mm512_mask_max_ps(m0, valid, m0, a);
    }
    if (bad) { /* as the float formula: the row's output is NaN (NaN weights times V; its sum NaN, so 1 / sum is 0) */
        for (j = 0; j < kp; j += 32) _mm512_storeu_si512(p + j, _mm512_set1_epi16(0x7FC0));
        return;
    }
    const float mx = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
    if (mx == -__builtin_inff()) {
        memset(p, 0, (size_t)kp * 2);
        return;
    }
    const float c = scale * 1.44269504088896341f * 128.0f;
    const __m512 vs = _mm512_set1_ps(c), vm = _mm512_set1_ps(mx * c - 16256.0f);
    const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
    const __m512i hi = _mm512_set1_epi16((short)0xFF80);
    j = 0;
    if (!m)
        for (; j + 32 <= nk; j += 32) {
            const __m512i a = _mm512_cvtps_epi32(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vs, vm));
            const __m512i b = _mm512_cvtps_epi32(_mm512_fmsub_ps(_mm512_loadu_ps(s + j + 16), vs, vm));
            const __m512i n = _mm512_packus_epi32(a, b);
            const __m512i t = _mm512_maskz_permutex2var_epi8(0x5555555555555555ull, tlo, n, thi);
            _mm512_storeu_si512(p + j, _mm512_ternarylogic_epi32(n, hi, t, 0xEA));
        }
    for (; j < kp; j += 32) {
        __m512i e[2];
        for (int h = 0; h < 2; h++) {
            const int64_t jj = j + 16 * h;
            __mmask16 valid = nk - jj >= 16 ? (__mmask16)0xffff : nk > jj ? (__mmask16)((1u << (nk - jj)) - 1) : 0;
            if (m && valid) valid &= _mm_cmpneq_epi8_mask(_mm_maskz_loadu_epi8(valid, m + jj), _mm_setzero_si128());
            e[h] = _mm512_cvtps_epi32(_mm512_fmsub_ps(_mm512_mask_loadu_ps(ninf, valid, s + jj), vs, vm));
        }
        const __m512i n = _mm512_packus_epi32(e[0], e[1]);
        const __m512i t = _mm512_maskz_permutex2var_epi8(0x5555555555555555ull, tlo, n, thi);
        _mm512_storeu_si512(p + j, _mm512_ternarylogic_epi32(n, hi, t, 0xEA));
    }
}

/* the key stored at position i of a block of 32 in P (softmax_row_tab's vpackusdw order) */
static const int8_t KEY_ORDER[32] = {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23,
                                     8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31};

/* Two key rows a and d (32 bf16 each) stored as 32 pairs (a[i], d[i]) at dst (64 bf16): the rows of a packed V */
static inline void store_key_pairs(__m512i a, __m512i d, uint16_t *dst) {
    const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                        39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    _mm512_storeu_si512(dst, _mm512_permutex2var_epi16(a, lo, d));
    _mm512_storeu_si512(dst + 32, _mm512_permutex2var_epi16(a, _mm512_add_epi16(lo, _mm512_set1_epi16(16)), d));
}

/* Text b's keys for the tile kernels: how many count (those after the last attended one cost nothing) and its mask
 * in *mask (NULL when no hole comes before that). With none, head h's outputs of the text are written as zeros. */
static int64_t item_keys(const job_t *J, int64_t b, int h, const uint8_t **mask) {
    const int D = J->dim;
    int64_t nk = J->k_len[b];
    const uint8_t *m = J->mask ? J->mask + J->k_off[b] : NULL;
    if (m) {
        while (nk > 0 && !m[nk - 1]) nk--;
        int64_t holes = 0;
        for (int64_t j = 0; j < nk; j++) holes += !m[j];
        if (!holes) m = NULL;
    }
    if (nk == 0)
        for (int64_t i = 0; i < J->q_len[b]; i++)
            for (int c = 0; c < D / 16; c++)
                store16(J->out, (J->q_off[b] + i) * J->ld_o + h * D + c * 16, _mm512_setzero_ps(), J->bf16);
    *mask = m;
    return nk;
}

/* mantissas of 2^(i / 128), i < 128, rounded to 7 bits (softmax_row_tab's table: entries 0-63, then 64-127) */
static inline __m512i exp2_table_lo(void) {
    return _mm512_set_epi8(52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 43, 42, 41, 40, 39, 38,
                                       37, 36, 35, 34, 34, 33, 32, 31, 30, 29, 28, 28, 27, 26, 25, 24,
                                       23, 23, 22, 21, 20, 19, 19, 18, 17, 16, 15, 15, 14, 13, 12, 12,
                                       11, 10, 9, 9, 8, 7, 6, 6, 5, 4, 4, 3, 2, 1, 1, 0);
}

static inline __m512i exp2_table_hi(void) {
    return _mm512_set_epi8(127, 125, 124, 123, 121, 120, 118, 117, 116, 115, 113, 112, 111, 109, 108, 107,
                                       105, 104, 103, 102, 100, 99, 98, 97, 96, 94, 93, 92, 91, 90, 88, 87,
                                       86, 85, 84, 83, 82, 80, 79, 78, 77, 76, 75, 74, 73, 72, 70, 69,
                                       68, 67, 66, 65, 64, 63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53);
}

/* Head h of text b's keys and values (bf16, nk of them, padded with zeros to kp, a multiple of 32) packed for the
 * bf16 products: kp_buf and vp_buf hold D * kp bf16 each */
static void pack_kv(const job_t *J, int64_t b, int h, int64_t nk, int64_t kp, uint16_t *kp_buf, uint16_t *vp_buf) {
    const int D = J->dim;
    const int64_t k0 = J->k_off[b];
    const uint16_t *K = (const uint16_t *)J->k, *V = (const uint16_t *)J->v;
    /* K as [D/2][kp][2]: row e (a pair of head dims) holds (K[j][2e], K[j][2e+1]) for every key j, 16 keys at a
     * time (16 row loads and a transpose: 3-4% faster than 16 gathers per 32 head dims); padding keys are zeros */
    for (int64_t j = 0; j < kp; j += 16) {
        const uint16_t *base = K + (k0 + j) * J->ld_k + h * D;
        const int64_t n = nk - j >= 16 ? 16 : nk > j ? nk - j : 0;
        for (int half = 0; half < D / 32; half++) { /* 16 keys x 16 pairs of head dims, transposed in registers */
            __m512i r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < n ? _mm512_loadu_si512(base + i * J->ld_k + 32 * half) : _mm512_setzero_si512();
            transpose16(r, (uint32_t *)kp_buf + (int64_t)half * 16 * kp + j, kp);
        }
    }
    /* V as [kp/2][D][2]: row t (a pair of keys) holds (V[j][d], V[j+1][d]) for every head dim d, j = 2t in the
     * order in which softmax_row_tab stores P's keys (KEY_ORDER within each block of 32) */
    {
        for (int64_t t = 0; t < kp / 2; t++) {
            const int64_t j = (2 * t) / 32 * 32 + KEY_ORDER[(2 * t) % 32];
            for (int c = 0; c < D; c += 32) {
                __m512i a = j < nk ? _mm512_loadu_si512(V + (k0 + j) * J->ld_v + h * D + c) : _mm512_setzero_si512();
                __m512i d = j + 1 < nk ? _mm512_loadu_si512(V + (k0 + j + 1) * J->ld_v + h * D + c)
                                       : _mm512_setzero_si512();
                store_key_pairs(a, d, vp_buf + t * D * 2 + 2 * c);
            }
        }
    }
}

/* The tile kernels' entry: `worker` over every (text, head) of the job; head dim 32 or 64 (1 otherwise), 2: no
 * memory. bf16: the states' type (1: bfloat16, 0: float32). */
static int tile_job(const void *q, const void *k, const void *v, void *out, const uint8_t *mask, const int64_t *q_off,
                    const int64_t *q_len, const int64_t *k_off, const int64_t *k_len, int64_t n_texts, int heads,
                    int dim, int64_t ld_q, int64_t ld_k, int64_t ld_v, int64_t ld_o, int bf16, float scale,
                    int threads, void *(*worker)(void *)) {
    if (dim != 32 && dim != 64) return 1;
    int64_t max_keys = 1;
    for (int64_t b = 0; b < n_texts; b++) max_keys = k_len[b] > max_keys ? k_len[b] : max_keys;
    job_t J = {q, k, v, out, mask, q_off, q_len, k_off, k_len, ld_q, ld_k, ld_v, ld_o,
               n_texts, max_keys, heads, dim, bf16, scale, 0};
    return run_parallel(&J, worker, threads);
}

/* ---------------------------------------------------------------------------------------------------------------
 * bfloat16 states on CPUs with AVX-512 BF16 and VBMI but no AMX (Zen 4): the tile kernel's algorithm in registers.
 *
 * Both products are vdpbf16ps (two bf16 products summed into each float32 lane): twice the float32 kernel's
 * multiply-adds per instruction, on the states as they are. Per text and head, 12 query rows at a time:
 *
 *   Q Kᵀ: 12 rows × 32 keys of float32 scores in 24 accumulators; per pair of head dims, two loads of K packed as
 *         pairs of head dims (pack_kv) and 12 broadcasts of a query row's pair (unscaled: the scale is applied to the
 *         float32 scores, as on the tiles);
 *   softmax: softmax_row_tab writes P's bf16 weights from its exponent table;
 *   P V:  12 rows × 32 outputs (6 × 64 at head dim 64) in 24 accumulators; per pair of keys, D/16 loads of V packed
 *         as pairs of keys and a broadcast of each row's pair of weights.
 *
 * Each row is divided by the sum of its weights as rounded (a vdpbf16ps against ones), in float32, as on the tiles:
 * the results are the tile kernel's up to float32 summation order. Head dims 32 and 64.
 */
#define BROWS 12 /* query rows per block */

static inline __attribute__((always_inline)) __m512bh as_bh(__m512i x) { return (__m512bh)x; }

/* scores s[r][j0 .. j0 + 32) = qb[r] · K[j0 .. j0 + 32) for the first R rows of qb (pairs of bf16, `pairs` a row);
 * kt: K packed as pairs (uint32), row e at kt + e * kp */
static inline __attribute__((always_inline)) void qk_tile_bf16(const int R, const uint32_t *qb, const uint32_t *kt,
                                                               int64_t kp, const int pairs, int64_t j0, float *s) {
    __m512 acc[BROWS][2];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int e = 0; e < pairs; e++) {
        const __m512bh b0 = as_bh(_mm512_loadu_si512(kt + e * kp + j0)), b1 = as_bh(_mm512_loadu_si512(kt + e * kp + j0 + 16));
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            const __m512bh a = as_bh(_mm512_set1_epi32((int)qb[r * pairs + e]));
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
        _mm512_storeu_ps(s + r * kp + j0, acc[r][0]);
        _mm512_storeu_ps(s + r * kp + j0 + 16, acc[r][1]);
    }
}

/* out rows o0 .. o0 + n (n <= R) = P's rows (bf16, kp a row, keys in softmax_row_tab's order) times V packed as pairs
 * of keys (NC·16 dims), times inv[r] */
static inline __attribute__((always_inline)) void pv_tile_bf16(const int R, const int NC, const uint16_t *p, int64_t kp,
                                                               const uint16_t *vp, const float *inv, int n,
                                                               void *out, int64_t o0, int64_t ld_o) {
    __m512 acc[BROWS][4];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ps();
    const uint32_t *pw = (const uint32_t *)p;
    for (int64_t t = 0; t < kp / 2; t++) {
        __m512bh v[4];
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) v[c] = as_bh(_mm512_loadu_si512(vp + t * NC * 32 + c * 32));
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            const __m512bh a = as_bh(_mm512_set1_epi32((int)pw[r * (kp / 2) + t]));
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], a, v[c]);
        }
    }
    for (int r = 0; r < n; r++) {
        const __m512 w = _mm512_set1_ps(inv[r]);
        for (int c = 0; c < NC; c++) store16(out, (o0 + r) * ld_o + c * 16, _mm512_mul_ps(acc[r][c], w), 1);
    }
}

static void bf16dp_item(const job_t *J, int64_t item, uint16_t *kp_buf, uint16_t *vp_buf, float *s, uint16_t *p,
                        uint16_t *qb) {
    const int64_t b = item / J->heads;
    const int h = (int)(item % J->heads), D = J->dim;
    const int64_t q0 = J->q_off[b], nq = J->q_len[b];
    const uint8_t *m;
    const int64_t nk = item_keys(J, b, h, &m);
    if (nk == 0) return;
    const int64_t kp = (nk + KEYS - 1) / KEYS * KEYS;
    const uint16_t *Q = (const uint16_t *)J->q;
    const __m512i tlo = exp2_table_lo(), thi = exp2_table_hi();
    const __m512i ones = _mm512_set1_epi16(0x3F80); /* bf16 1.0 */
    pack_kv(J, b, h, nk, kp, kp_buf, vp_buf);
    void *out = (char *)J->out + (size_t)(h * D) * 2;
    for (int64_t i0 = 0; i0 < nq; i0 += BROWS) {
        const int R = nq - i0 < BROWS ? (int)(nq - i0) : BROWS;
        for (int r = 0; r < R; r++) memcpy(qb + r * D, Q + (q0 + i0 + r) * J->ld_q + h * D, (size_t)D * 2);
        if (R < BROWS) memset(qb + R * D, 0, (size_t)(BROWS - R) * D * 2);
        /* a block of a few rows (the last one; a cross-encoder's [CLS]-only block: one) runs a 4-row tile */
        for (int64_t j0 = 0; j0 < kp; j0 += 32) {
            if (R > 4) qk_tile_bf16(BROWS, (const uint32_t *)qb, (const uint32_t *)kp_buf, kp, D / 2, j0, s);
            else qk_tile_bf16(4, (const uint32_t *)qb, (const uint32_t *)kp_buf, kp, D / 2, j0, s);
        }
        float inv[BROWS];
        for (int r = 0; r < R; r++) {
            uint16_t *pr = p + r * kp;
            softmax_row_tab(s + r * kp, nk, kp, m, J->scale, tlo, thi, pr);
            __m512 sum = _mm512_setzero_ps();
            for (int64_t j = 0; j < kp; j += 32) sum = _mm512_dpbf16_ps(sum, as_bh(_mm512_loadu_si512(pr + j)), as_bh(ones));
            const float total = _mm512_reduce_add_ps(sum);
            inv[r] = total > 0.0f ? 1.0f / total : 0.0f; /* a NaN row stays NaN: NaN weights times V */
        }
        if (D == 32) {
            if (R > 4) pv_tile_bf16(BROWS, 2, p, kp, vp_buf, inv, R, out, q0 + i0, J->ld_o);
            else pv_tile_bf16(4, 2, p, kp, vp_buf, inv, R, out, q0 + i0, J->ld_o);
        } else
            for (int r0 = 0; r0 < R; r0 += 6) {
                const int n = R - r0 < 6 ? R - r0 : 6;
                if (n > 2) pv_tile_bf16(6, 4, p + r0 * kp, kp, vp_buf, inv + r0, n, out, q0 + i0 + r0, J->ld_o);
                else pv_tile_bf16(2, 4, p + r0 * kp, kp, vp_buf, inv + r0, n, out, q0 + i0 + r0, J->ld_o);
            }
    }
}

static void *bf16dp_worker(void *arg) {
    job_t *J = (job_t *)arg;
    const int64_t kp = (J->max_keys + KEYS - 1) / KEYS * KEYS;
    const int D = J->dim;
    /* bytes: K and V packed (bf16), scores (f32), P (bf16), Q rows (bf16) */
    const size_t bytes = (size_t)(2 * D * kp * 2 + BROWS * kp * 4 + BROWS * kp * 2 + BROWS * D * 2) + 64 * 5;
    char *buf = (char *)aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!buf) return NULL;
    memset(buf, 0, bytes); /* P's rows past a block's R are read (stale from an earlier block; their outputs dropped) */
    uint16_t *kb = (uint16_t *)buf;
    uint16_t *vb = kb + D * kp + 32;
    float *s = (float *)(vb + D * kp + 32);
    uint16_t *p = (uint16_t *)(s + BROWS * kp + 16);
    uint16_t *qb = p + BROWS * kp + 32;
    FOR_EACH_ITEM(J, item) bf16dp_item(J, item, kb, vb, s, p, qb);
    free(buf);
    return NULL;
}

/* As embedstack_attention, bfloat16 states only, head dim 32 or 64 (AVX-512 BF16 without the tile unit); 1:
 * unsupported dim, 2: no memory. */
int embedstack_attention_bf16(const void *q, const void *k, const void *v, void *out, const uint8_t *mask,
                              const int64_t *q_off, const int64_t *q_len, const int64_t *k_off, const int64_t *k_len,
                              int64_t n_texts, int heads, int dim, int64_t ld_q, int64_t ld_k, int64_t ld_v,
                              int64_t ld_o, float scale, int threads) {
    return tile_job(q, k, v, out, mask, q_off, q_len, k_off, k_len, n_texts, heads, dim, ld_q, ld_k, ld_v, ld_o, 1,
                    scale, threads, bf16dp_worker);
}
#endif

#ifdef EMBEDSTACK_AMX
/* ---------------------------------------------------------------------------------------------------------------
 * bfloat16 states on CPUs with AMX (Sapphire Rapids and later): both products on the tile unit, softmax scores in float32.
 *
 * Per text and head, 16 query rows at a time: Q Kᵀ as 16 × 16 score tiles (tdpbf16ps over 32 head dims a step,
 * K packed as pairs of head dims, transposed in registers), stored to a float32 row buffer; softmax on it with
 * AVX-512 writes P's bf16 bits straight from a table, without a float exp (softmax_row_tab); P V as 16 × 16 output
 * tiles (D / 16 of them, V packed as pairs of keys), accumulated over 32 keys a step, and P times a tile of ones
 * beside them: each row's sum of the weights as rounded, by which the row is divided at the end, in float32.
 * Head dimensions 32 and 64. Each thread saves the tile configuration it finds and restores it when done, so
 * oneDNN's own tile kernels on the same threads are left as they were.
 */
#include <sys/syscall.h>
#include <unistd.h>

typedef struct __attribute__((packed)) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg_t;

/* Linux gives a process the AMX tile state only once asked (ARCH_REQ_XCOMP_PERM for XTILEDATA). 0: granted. */
int embedstack_amx_init(void) { return (int)syscall(SYS_arch_prctl, 0x1023, 18); }

/* This thread's tile configuration saved into `before`, then `n` tiles of 16 rows x 64 bytes; tiles_off puts the
 * saved one back (or releases the tiles), so oneDNN's own tile kernels on the same threads are left as they were. */
static void tiles_on(tilecfg_t *before, int n) {
    tilecfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    _tile_storeconfig(before);
    cfg.palette = 1;
    for (int t = 0; t < n; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
}

static void tiles_off(const tilecfg_t *before) {
    if (before->palette) _tile_loadconfig(before);
    else _tile_release();
}

static void amx_item(const job_t *J, int64_t item, uint16_t *kp_buf, uint16_t *vp_buf, float *s, uint16_t *p,
                     uint16_t *qb, float *ob) {
    const int64_t b = item / J->heads;
    const int h = (int)(item % J->heads), D = J->dim, NC = D / 16;
    const int64_t q0 = J->q_off[b], nq = J->q_len[b];
    const uint8_t *m;
    const int64_t nk = item_keys(J, b, h, &m);
    if (nk == 0) return;
    const int64_t kp = (nk + KEYS - 1) / KEYS * KEYS;
    const uint16_t *Q = (const uint16_t *)J->q;
    const __m512i tlo = exp2_table_lo(), thi = exp2_table_hi();
    static const uint16_t ones[16 * 32] __attribute__((aligned(64))) = {[0 ... 16 * 32 - 1] = 0x3F80}; /* bf16 1.0 */
    float sums[16 * 16] __attribute__((aligned(64)));
    pack_kv(J, b, h, nk, kp, kp_buf, vp_buf);
    _tile_loadd(6, ones, 64); /* after the call: tile registers are not preserved across calls */
    for (int64_t i0 = 0; i0 < nq; i0 += 16) {
        const int R = nq - i0 < 16 ? (int)(nq - i0) : 16;
        /* Q tiles straight from the states (unscaled: the scale is applied to the float32 scores, as rounding
         * q * scale to bf16 would add error); a last block of fewer than 16 rows is copied, zero padded */
        const uint16_t *qt = Q + (q0 + i0) * J->ld_q + h * D;
        int64_t ldq = J->ld_q * 2;
        if (R < 16) {
            memset(qb, 0, 16 * (size_t)D * 2);
            for (int r = 0; r < R; r++) memcpy(qb + r * D, qt + r * J->ld_q, (size_t)D * 2);
            qt = qb;
            ldq = D * 2;
        }
        /* scores: 16 rows x 16 keys a tile, two tiles in flight (tmm0, tmm3) */
        if (D == 32) {
            _tile_loadd(1, qt, ldq);
            for (int64_t j0 = 0; j0 < kp; j0 += 32) {
                _tile_zero(0);
                _tile_zero(3);
                _tile_loadd(2, kp_buf + j0 * 2, kp * 4);
                _tile_dpbf16ps(0, 1, 2);
                _tile_loadd(2, kp_buf + (j0 + 16) * 2, kp * 4);
                _tile_dpbf16ps(3, 1, 2);
                _tile_stored(0, s + j0, kp * 4);
                _tile_stored(3, s + j0 + 16, kp * 4);
            }
        } else {
            for (int64_t j0 = 0; j0 < kp; j0 += 16) {
                _tile_zero(0);
                for (int st = 0; st < D / 32; st++) {
                    _tile_loadd(1, qt + st * 32, ldq);
                    _tile_loadd(2, kp_buf + (int64_t)st * 16 * kp * 2 + j0 * 2, kp * 4);
                    _tile_dpbf16ps(0, 1, 2);
                }
                _tile_stored(0, s + j0, kp * 4);
            }
        }
        float inv[16];
        for (int r = 0; r < 16; r++) {
            if (r < R) softmax_row_tab(s + r * kp, nk, kp, m, J->scale, tlo, thi, p + r * kp);
            else memset(p + r * kp, 0, (size_t)kp * 2);
        }
        /* outputs: 16 rows x 16 head dims a tile; for D = 32 two chains (even and odd steps of 32 keys, tmm0-1 and
         * tmm2-3) so that consecutive products do not wait on each other, summed at the end; the row sums (tmm7, P
         * times the ones in tmm6) are one chain beside them */
        if (NC == 2) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            _tile_zero(7);
/* P (tmm4) times V's two 16-dim halves into accumulators c0, c1 (tile numbers are instruction immediates) */
#define PV_STEP(c0, c1)                    \
    do {                                   \
        _tile_loadd(5, vb, D * 4);         \
        _tile_dpbf16ps(c0, 4, 5);          \
        _tile_loadd(5, vb + 32, D * 4);    \
        _tile_dpbf16ps(c1, 4, 5);          \
    } while (0)
            for (int64_t t0 = 0; t0 < kp; t0 += 32) {
                const uint16_t *vb = vp_buf + (t0 / 2) * D * 2;
                _tile_loadd(4, p + t0, kp * 2);
                _tile_dpbf16ps(7, 4, 6);
                if ((t0 / 32) % 2 == 0) PV_STEP(0, 1);
                else PV_STEP(2, 3);
            }
#undef PV_STEP
            _tile_stored(0, ob, D * 4);
            _tile_stored(1, ob + 16, D * 4);
            _tile_stored(2, ob + 16 * D, D * 4);
            _tile_stored(3, ob + 16 * D + 16, D * 4);
            _tile_stored(7, sums, 64);
            for (int r = 0; r < R; r++) inv[r] = sums[16 * r] > 0.0f ? 1.0f / sums[16 * r] : 0.0f;
            for (int r = 0; r < R; r++) {
                const __m512 w = _mm512_set1_ps(inv[r]);
                for (int c = 0; c < 2; c++) {
                    __m512 o = _mm512_add_ps(_mm512_loadu_ps(ob + r * D + c * 16), _mm512_loadu_ps(ob + 16 * D + r * D + c * 16));
                    store16(J->out, (q0 + i0 + r) * J->ld_o + h * D + c * 16, _mm512_mul_ps(o, w), 1);
                }
            }
        } else {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            _tile_zero(7);
            for (int64_t t0 = 0; t0 < kp; t0 += 32) {
                _tile_loadd(4, p + t0, kp * 2);
                _tile_dpbf16ps(7, 4, 6);
                const uint16_t *vb = vp_buf + (t0 / 2) * D * 2;
                _tile_loadd(5, vb, D * 4);
                _tile_dpbf16ps(0, 4, 5);
                _tile_loadd(5, vb + 32, D * 4);
                _tile_dpbf16ps(1, 4, 5);
                _tile_loadd(5, vb + 64, D * 4);
                _tile_dpbf16ps(2, 4, 5);
                _tile_loadd(5, vb + 96, D * 4);
                _tile_dpbf16ps(3, 4, 5);
            }
            _tile_stored(0, ob, D * 4);
            _tile_stored(1, ob + 16, D * 4);
            _tile_stored(2, ob + 32, D * 4);
            _tile_stored(3, ob + 48, D * 4);
            _tile_stored(7, sums, 64);
            for (int r = 0; r < R; r++) inv[r] = sums[16 * r] > 0.0f ? 1.0f / sums[16 * r] : 0.0f;
            for (int r = 0; r < R; r++) {
                const __m512 w = _mm512_set1_ps(inv[r]);
                for (int c = 0; c < 4; c++)
                    store16(J->out, (q0 + i0 + r) * J->ld_o + h * D + c * 16, _mm512_mul_ps(_mm512_loadu_ps(ob + r * D + c * 16), w), 1);
            }
        }
    }
}

static void *amx_worker(void *arg) {
    job_t *J = (job_t *)arg;
    const int64_t kp = (J->max_keys + KEYS - 1) / KEYS * KEYS;
    const int D = J->dim;
    /* bytes: K and V packed (bf16), scores (f32), P (bf16), Q tile (bf16), output tile (f32) */
    const size_t bytes = (size_t)(2 * D * kp * 2 + 16 * kp * 4 + 16 * kp * 2 + 16 * D * 2 + 2 * 16 * D * 4) + 64 * 6;
    char *buf = (char *)aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!buf) return NULL;
    memset(buf, 0, bytes);
    uint16_t *kb = (uint16_t *)buf;
    uint16_t *vb = kb + D * kp + 32;
    float *s = (float *)(vb + D * kp + 32);
    uint16_t *p = (uint16_t *)(s + 16 * kp + 16);
    uint16_t *qb = p + 16 * kp + 32;
    float *ob = (float *)(qb + 16 * D + 32);
    tilecfg_t before;
    tiles_on(&before, 8);
    FOR_EACH_ITEM(J, item) amx_item(J, item, kb, vb, s, p, qb, ob);
    tiles_off(&before);
    free(buf);
    return NULL;
}

/* As embedstack_attention, bfloat16 states only, head dim 32 or 64; 1: unsupported dim, 2: no memory. */
int embedstack_attention_amx(const void *q, const void *k, const void *v, void *out, const uint8_t *mask,
                             const int64_t *q_off, const int64_t *q_len, const int64_t *k_off, const int64_t *k_len,
                             int64_t n_texts, int heads, int dim, int64_t ld_q, int64_t ld_k, int64_t ld_v,
                             int64_t ld_o, float scale, int threads) {
    return tile_job(q, k, v, out, mask, q_off, q_len, k_off, k_len, n_texts, heads, dim, ld_q, ld_k, ld_v, ld_o, 1,
                    scale, threads, amx_worker);
}

/* ---------------------------------------------------------------------------------------------------------------
 * float32 states to float32 accuracy on the tiles (precision fp32-bf16x3): both products of attention as three
 * bf16 products each, as embedstack_linear_x3 makes a linear layer's (a = a_h + a_l; a·b ≈ a_h b_h + a_h b_l + a_l b_h,
 * summed in float32: about 2^-16 of each product). The softmax runs in float32 (softmax_row, as the float32
 * kernel's), and its weights are split the same way for P V; rows are divided by the float32 sum of the weights.
 */

/* 32 floats split: h = their bf16 roundings, l = the bf16 roundings of what those leave out (32 bf16 each) */
static inline void split32(const float *src, __m512i *h, __m512i *l) {
    const __m512 a = _mm512_loadu_ps(src), b = _mm512_loadu_ps(src + 16);
    const __m512i hi = (__m512i)_mm512_cvtne2ps_pbh(b, a); /* words 0-15: a, 16-31: b */
    const __m512 ah = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi)), 16));
    const __m512 bh = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hi, 1)), 16));
    *h = hi;
    *l = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, bh), _mm512_sub_ps(a, ah));
}

typedef struct {
    uint16_t *kh, *kl, *vh, *vl, *ph, *pl, *qh, *ql;
    float *s, *ob;
} x3_scratch_t;

static void x3_attn_item(const job_t *J, int64_t item, const x3_scratch_t *w) {
    const int64_t b = item / J->heads;
    const int h = (int)(item % J->heads), D = J->dim, NC = D / 16;
    const int64_t q0 = J->q_off[b], nq = J->q_len[b], k0 = J->k_off[b];
    const uint8_t *m;
    const int64_t nk = item_keys(J, b, h, &m);
    if (nk == 0) return;
    const int64_t kp = (nk + KEYS - 1) / KEYS * KEYS;
    const float *K = (const float *)J->k, *V = (const float *)J->v, *Q = (const float *)J->q;
    /* K's two halves as [D/2][kp][2] (pairs of head dims by key), as amx_item packs K */
    for (int64_t j = 0; j < kp; j += 16) {
        const int64_t n = nk - j >= 16 ? 16 : nk > j ? nk - j : 0;
        for (int half = 0; half < D / 32; half++) {
            __m512i rh[16], rl[16];
            for (int i = 0; i < 16; i++) {
                if (i < n) split32(K + (k0 + j + i) * J->ld_k + h * D + 32 * half, &rh[i], &rl[i]);
                else rh[i] = rl[i] = _mm512_setzero_si512();
            }
            transpose16(rh, (uint32_t *)w->kh + (int64_t)half * 16 * kp + j, kp);
            transpose16(rl, (uint32_t *)w->kl + (int64_t)half * 16 * kp + j, kp);
        }
    }
    /* V's two halves as [kp/2][D][2] (pairs of keys, in key order, by head dim) */
    for (int64_t t = 0; t < kp / 2; t++) {
        const int64_t j = 2 * t;
        for (int c = 0; c < D; c += 32) {
            __m512i ah = _mm512_setzero_si512(), al = ah, dh = ah, dl = ah;
            if (j < nk) split32(V + (k0 + j) * J->ld_v + h * D + c, &ah, &al);
            if (j + 1 < nk) split32(V + (k0 + j + 1) * J->ld_v + h * D + c, &dh, &dl);
            const int64_t o = t * D * 2 + 2 * c;
            store_key_pairs(ah, dh, w->vh + o);
            store_key_pairs(al, dl, w->vl + o);
        }
    }
    for (int64_t i0 = 0; i0 < nq; i0 += 16) {
        const int R = nq - i0 < 16 ? (int)(nq - i0) : 16;
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < D; c += 32) {
                __m512i qh = _mm512_setzero_si512(), ql = qh;
                if (r < R) split32(Q + (q0 + i0 + r) * J->ld_q + h * D + c, &qh, &ql);
                _mm512_storeu_si512(w->qh + r * D + c, qh);
                _mm512_storeu_si512(w->ql + r * D + c, ql);
            }
        /* scores, 16 rows x 16 keys a tile: q_h k_h + q_h k_l + q_l k_h over D / 32 steps of 32 head dims; at D = 32
         * the two Q tiles stay loaded and two key tiles alternate (tmm0, tmm7), so that products do not wait on
         * each other */
        if (D == 32) {
            _tile_loadd(1, w->qh, D * 2);
            _tile_loadd(4, w->ql, D * 2);
            for (int64_t j0 = 0; j0 < kp; j0 += 32) {
                _tile_zero(0);
                _tile_zero(7);
                _tile_loadd(2, w->kh + j0 * 2, kp * 4);
                _tile_loadd(5, w->kh + (j0 + 16) * 2, kp * 4);
                _tile_dpbf16ps(0, 1, 2);
                _tile_dpbf16ps(7, 1, 5);
                _tile_dpbf16ps(0, 4, 2);
                _tile_dpbf16ps(7, 4, 5);
                _tile_loadd(3, w->kl + j0 * 2, kp * 4);
                _tile_loadd(6, w->kl + (j0 + 16) * 2, kp * 4);
                _tile_dpbf16ps(0, 1, 3);
                _tile_dpbf16ps(7, 1, 6);
                _tile_stored(0, w->s + j0, kp * 4);
                _tile_stored(7, w->s + j0 + 16, kp * 4);
            }
        } else
        for (int64_t j0 = 0; j0 < kp; j0 += 16) {
            _tile_zero(0);
            for (int st = 0; st < D / 32; st++) {
                const int64_t ko = (int64_t)st * 16 * kp * 2 + j0 * 2;
                _tile_loadd(1, w->qh + st * 32, D * 2);
                _tile_loadd(2, w->kh + ko, kp * 4);
                _tile_dpbf16ps(0, 1, 2);
                _tile_loadd(3, w->kl + ko, kp * 4);
                _tile_dpbf16ps(0, 1, 3);
                _tile_loadd(1, w->ql + st * 32, D * 2);
                _tile_dpbf16ps(0, 1, 2);
            }
            _tile_stored(0, w->s + j0, kp * 4);
        }
        float inv[16];
        for (int r = 0; r < 16; r++) {
            float *sr = w->s + r * kp;
            if (r < R) {
                inv[r] = softmax_row(sr, nk, m, J->scale);
                memset(sr + nk, 0, (size_t)(kp - nk) * sizeof(float)); /* padding keys weigh nothing */
            } else {
                memset(sr, 0, (size_t)kp * sizeof(float));
            }
            for (int64_t j = 0; j < kp; j += 32) {
                __m512i ph, pl;
                split32(sr + j, &ph, &pl);
                _mm512_storeu_si512(w->ph + r * kp + j, ph);
                _mm512_storeu_si512(w->pl + r * kp + j, pl);
            }
        }
        /* outputs, 16 rows x 16 head dims a tile (tmm0 .. tmm NC-1): p_h v_h + p_l v_h + p_h v_l, 32 keys a step */
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
#define X3_PV(c)                                   \
    do {                                           \
        _tile_loadd(5, vh + 32 * (c), D * 4);      \
        _tile_dpbf16ps(c, 4, 5);                   \
        _tile_dpbf16ps(c, 6, 5);                   \
        _tile_loadd(7, vl + 32 * (c), D * 4);      \
        _tile_dpbf16ps(c, 4, 7);                   \
    } while (0)
        for (int64_t t0 = 0; t0 < kp; t0 += 32) {
            const uint16_t *vh = w->vh + (t0 / 2) * D * 2, *vl = w->vl + (t0 / 2) * D * 2;
            _tile_loadd(4, w->ph + t0, kp * 2);
            _tile_loadd(6, w->pl + t0, kp * 2);
            if (NC == 2) { /* both output tiles' products alternate (V's four tiles in tmm2, 3, 5, 7) */
                _tile_loadd(5, vh, D * 4);
                _tile_loadd(2, vh + 32, D * 4);
                _tile_dpbf16ps(0, 4, 5);
                _tile_dpbf16ps(1, 4, 2);
                _tile_dpbf16ps(0, 6, 5);
                _tile_dpbf16ps(1, 6, 2);
                _tile_loadd(7, vl, D * 4);
                _tile_loadd(3, vl + 32, D * 4);
                _tile_dpbf16ps(0, 4, 7);
                _tile_dpbf16ps(1, 4, 3);
                continue;
            }
            X3_PV(0);
            X3_PV(1);
            X3_PV(2);
            X3_PV(3);
        }
#undef X3_PV
        _tile_stored(0, w->ob, D * 4);
        _tile_stored(1, w->ob + 16, D * 4);
        if (NC == 4) {
            _tile_stored(2, w->ob + 32, D * 4);
            _tile_stored(3, w->ob + 48, D * 4);
        }
        for (int r = 0; r < R; r++) {
            const __m512 sc = _mm512_set1_ps(inv[r]);
            for (int c = 0; c < NC; c++)
                store16(J->out, (q0 + i0 + r) * J->ld_o + h * D + c * 16,
                        _mm512_mul_ps(_mm512_loadu_ps(w->ob + r * D + c * 16), sc), 0);
        }
    }
}

static void *x3_attn_worker(void *arg) {
    job_t *J = (job_t *)arg;
    const int64_t kp = (J->max_keys + KEYS - 1) / KEYS * KEYS;
    const int64_t D = J->dim;
    /* bf16: K, V (two halves each, D x kp), P (two halves, 16 x kp), Q (two halves, 16 x D); f32: scores, outputs */
    const size_t halves = (size_t)(4 * D * kp + 2 * 16 * kp + 2 * 16 * D) * 2, floats = (size_t)(16 * kp + 16 * D) * 4;
    char *buf = (char *)aligned_alloc(64, (halves + floats + 64 * 12 + 63) / 64 * 64);
    if (!buf) return NULL;
    uint16_t *u = (uint16_t *)buf;
    x3_scratch_t w;
    w.kh = u;
    w.kl = w.kh + D * kp + 32;
    w.vh = w.kl + D * kp + 32;
    w.vl = w.vh + D * kp + 32;
    w.ph = w.vl + D * kp + 32;
    w.pl = w.ph + 16 * kp + 32;
    w.qh = w.pl + 16 * kp + 32;
    w.ql = w.qh + 16 * D + 32;
    w.s = (float *)(w.ql + 16 * D + 32);
    w.ob = w.s + 16 * kp + 16;
    tilecfg_t before;
    tiles_on(&before, 8);
    FOR_EACH_ITEM(J, item) x3_attn_item(J, item, &w);
    tiles_off(&before);
    free(buf);
    return NULL;
}

/* As embedstack_attention, float32 states only, head dim 32 or 64, products as three bf16 ones on the tiles;
 * 1: unsupported dim, 2: no memory. */
int embedstack_attention_x3(const void *q, const void *k, const void *v, void *out, const uint8_t *mask,
                            const int64_t *q_off, const int64_t *q_len, const int64_t *k_off, const int64_t *k_len,
                            int64_t n_texts, int heads, int dim, int64_t ld_q, int64_t ld_k, int64_t ld_v,
                            int64_t ld_o, float scale, int threads) {
    return tile_job(q, k, v, out, mask, q_off, q_len, k_off, k_len, n_texts, heads, dim, ld_q, ld_k, ld_v, ld_o, 0,
                    scale, threads, x3_attn_worker);
}

#endif

#ifdef EMBEDSTACK_BF16
/* ---------------------------------------------------------------------------------------------------------------
 * SPLADE's pooling (inference): out[b][v] = bias[v] + max over text b's valid tokens t of x[b][t] · W[v], the
 * (texts x tokens x |V|) logits never written to memory.
 *
 * Why: the MLM decoder (384 x 30,522 products per token) is most of a SPLADE model's work. As a torch product it
 * writes every logit (31 MB a 256-token text in float32) and reads them back twice to mask and take the max; here
 * each block of logits is reduced into a running max while it is still in registers or L1. The products are bf16
 * with float32 sums, the max and the bias in float32: bf16 autocast's product without its rounding of the logits
 * to bf16. Two ways to make a block, the same layout and work split:
 *
 *   AMX (Sapphire Rapids and later): 2 x 2 tiles of 16 tokens x 16 terms (tdpbf16ps over 32 channels a step),
 *        stored to a 4 KB buffer and reduced row by row;
 *   AVX-512 BF16 (Zen 4, Cooper Lake): 8 tokens x 32 terms in 16 registers; per pair of channels, two loads of the
 *        packed decoder and 8 broadcasts of a token's pair feed 16 vdpbf16ps; reduced in registers.
 *
 * x: bfloat16 (B, T, C) contiguous, T and C multiples of 32; mask: (B, T) bytes, 0 for a token to leave out;
 * wp: the decoder packed by term blocks of 16, [Vp/16][C/2][16][2] (block n, row e holds (W[16n+j][2e],
 * W[16n+j][2e+1]) for its 16 terms j), Vp = V rounded up to 32 (padding terms zero); bias: float32 (V); out:
 * float32 (B, V), -inf for a text with no valid token. Work items are (a group of 4 texts, 256 terms): the
 * group's states (4 x 256 x 384 bf16: 0.8 MB) stay in L2 while the decoder streams by, and each pair of term
 * blocks (24 KB) stays in L1 while the group's tokens pass.
 */
#define SPLADE_GROUP 4  /* texts per work item */
#define SPLADE_CHUNK 16 /* term blocks (of 16) per work item */
typedef struct {
    const uint16_t *x, *wp;
    const uint8_t *mask;
    const float *bias;
    float *out;
    int64_t B, T, C, V, nchunks, next;
    const int64_t *rows; /* per text: valid rows rounded up to 32 (blocks past them are skipped) */
    int amx;
} splade_t;

/* out[b][v0 .. v0 + 32) = (lo, hi) + bias, the terms past V left out */
static inline void splade_store(const splade_t *J, int64_t b, int64_t v0, __m512 lo, __m512 hi) {
    float *o = J->out + b * J->V;
    for (int h = 0; h < 2; h++) {
        const int64_t v = v0 + 16 * h;
        if (v >= J->V) break;
        const __mmask16 k = J->V - v >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (J->V - v)) - 1);
        _mm512_mask_storeu_ps(o + v, k, _mm512_add_ps(h ? hi : lo, _mm512_maskz_loadu_ps(k, J->bias + v)));
    }
}

/* the AVX-512 BF16 block: 8 token rows x 32 terms, running max of the valid rows into lo / hi */
static inline void splade_rows8(const uint16_t *xr, int64_t C, const uint16_t *w0, const uint16_t *w1,
                                const uint8_t *m, __m512 *lo, __m512 *hi) {
    __m512 a0[8], a1[8];
    for (int r = 0; r < 8; r++) a0[r] = a1[r] = _mm512_setzero_ps();
    for (int64_t e = 0; e < C / 2; e++) {
        const __m512bh v0 = (__m512bh)_mm512_loadu_si512(w0 + e * 32);
        const __m512bh v1 = (__m512bh)_mm512_loadu_si512(w1 + e * 32);
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            int32_t pair;
            memcpy(&pair, xr + r * C + 2 * e, 4);
            const __m512bh xv = (__m512bh)_mm512_set1_epi32(pair);
            a0[r] = _mm512_dpbf16_ps(a0[r], xv, v0);
            a1[r] = _mm512_dpbf16_ps(a1[r], xv, v1);
        }
    }
    for (int r = 0; r < 8; r++)
        if (m[r]) {
            *lo = _mm512_max_ps(*lo, a0[r]);
            *hi = _mm512_max_ps(*hi, a1[r]);
        }
}

/* the AVX-512 BF16 way through one text's valid rows (blocks of 8 with no valid token skipped) */
static inline void splade_text_avx(const uint16_t *xb, const uint8_t *mb, int64_t rows, int64_t C, const uint16_t *w0,
                                   const uint16_t *w1, __m512 *lo, __m512 *hi) {
    for (int64_t t = 0; t < rows; t += 8) {
        int any = 0;
        for (int r = 0; r < 8; r++) any |= mb[t + r];
        if (any) splade_rows8(xb + t * C, C, w0, w1, mb + t, lo, hi);
    }
}

#ifdef EMBEDSTACK_AMX
/* the running max of 32 terms over one 16-row tile pair (c0: terms 0-15, c1: 16-31) of stored logits */
static inline void max_rows(const float *c0, const float *c1, const uint8_t *m, __m512 *lo, __m512 *hi) {
    for (int r = 0; r < 16; r++)
        if (m[r]) {
            *lo = _mm512_max_ps(*lo, _mm512_load_ps(c0 + 16 * r));
            *hi = _mm512_max_ps(*hi, _mm512_load_ps(c1 + 16 * r));
        }
}

/* the AMX way: 2 x 2 tiles (32 rows x 32 terms) a step, stored to cb (4 KB) and reduced */
static inline void splade_text_amx(const uint16_t *xb, const uint8_t *mb, int64_t rows, int64_t C, const uint16_t *w0,
                                   const uint16_t *w1, float *cb, __m512 *lo, __m512 *hi) {
    for (int64_t t = 0; t < rows; t += 32) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t s = 0; s < C / 32; s++) {
            _tile_loadd(4, xb + t * C + 32 * s, C * 2);
            _tile_loadd(5, xb + (t + 16) * C + 32 * s, C * 2);
            _tile_loadd(6, w0 + s * 16 * 32, 64);
            _tile_loadd(7, w1 + s * 16 * 32, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, cb, 64);
        _tile_stored(1, cb + 256, 64);
        _tile_stored(2, cb + 512, 64);
        _tile_stored(3, cb + 768, 64);
        max_rows(cb, cb + 256, mb + t, lo, hi);
        max_rows(cb + 512, cb + 768, mb + t + 16, lo, hi);
    }
}
#endif

/* one work item: a group of texts x a chunk of term blocks, a pair of blocks (32 terms) at a time */
static void splade_item(const splade_t *J, int64_t item, float *cb) {
    const int64_t g = item / J->nchunks, chunk = item % J->nchunks, C = J->C;
    const int64_t blocks = (J->V + 31) / 32 * 2; /* term blocks of 16 in wp */
    const int64_t n0 = chunk * SPLADE_CHUNK, n1 = n0 + SPLADE_CHUNK < blocks ? n0 + SPLADE_CHUNK : blocks;
    const int64_t b1 = (g + 1) * SPLADE_GROUP < J->B ? (g + 1) * SPLADE_GROUP : J->B;
    (void)cb;
    for (int64_t n = n0; n < n1; n += 2) {
        const uint16_t *w0 = J->wp + n * (C / 2) * 32, *w1 = w0 + (C / 2) * 32;
        for (int64_t b = g * SPLADE_GROUP; b < b1; b++) {
            __m512 lo = _mm512_set1_ps(-INFINITY), hi = lo;
            const uint16_t *xb = J->x + b * J->T * C;
            const uint8_t *mb = J->mask + b * J->T;
#ifdef EMBEDSTACK_AMX
            if (J->amx) splade_text_amx(xb, mb, J->rows[b], C, w0, w1, cb, &lo, &hi);
            else
#endif
                splade_text_avx(xb, mb, J->rows[b], C, w0, w1, &lo, &hi);
            splade_store(J, b, n * 16, lo, hi);
        }
    }
}

static void *splade_worker(void *arg) {
    splade_t *J = (splade_t *)arg;
    const int64_t items = (J->B + SPLADE_GROUP - 1) / SPLADE_GROUP * J->nchunks;
    float *cb = NULL;
#ifdef EMBEDSTACK_AMX
    tilecfg_t before;
    if (J->amx) { /* a buffer for 4 tiles of logits, and the tile configuration (the caller's restored at the end) */
        cb = (float *)aligned_alloc(64, 4 * 256 * sizeof(float));
        if (!cb) return NULL;
        tiles_on(&before, 8);
    }
#endif
    for (;;) {
        int64_t item = __atomic_fetch_add(&J->next, 1, __ATOMIC_RELAXED);
        if (item >= items) break;
        splade_item(J, item, cb);
    }
#ifdef EMBEDSTACK_AMX
    if (J->amx) {
        tiles_off(&before);
        free(cb);
    }
#endif
    return NULL;
}

/* amx: 1 for the tile unit (an AMX build only), 0 for AVX-512 BF16. Returns 0; 1 when T or C is not a multiple
 * of 32 (or C > 1024), or AMX is asked of a build without it; 2 when memory could not be had. */
int embedstack_splade_max(const uint16_t *x, const uint8_t *mask, int64_t B, int64_t T, int64_t C,
                          const uint16_t *wp, int64_t V, const float *bias, float *out, int amx, int threads) {
    if (T % 32 || C % 32 || C > 1024 || B < 1 || V < 1) return 1;
#ifndef EMBEDSTACK_AMX
    if (amx) return 1;
#endif
    int64_t *rows = (int64_t *)malloc((size_t)B * sizeof(int64_t));
    if (!rows) return 2;
    for (int64_t b = 0; b < B; b++) {
        int64_t n = T;
        while (n > 0 && !mask[b * T + n - 1]) n--;
        rows[b] = (n + 31) / 32 * 32;
    }
    const int64_t blocks = (V + 31) / 32 * 2;
    splade_t J = {x, wp, mask, bias, out, B, T, C, V, (blocks + SPLADE_CHUNK - 1) / SPLADE_CHUNK, 0, rows, amx};
    const int64_t items = (B + SPLADE_GROUP - 1) / SPLADE_GROUP * J.nchunks;
    if (threads > items) threads = (int)items;
    run_threads(&J, splade_worker, threads);
    free(rows);
    return J.next < items ? 2 : 0;
}
#endif

#ifdef __AVX512F__
/* ---------------------------------------------------------------------------------------------------------------
 * Row kernels of the int8 products (precisions bf16-int8-ffn and bf16-int8-all, quantize.Int8FeedForwardIn / Out,
 * Int8Linear) and of the
 * bf16 LayerNorm (packed.RowLayerNorm).
 *
 * oneDNN's int8 product takes one activation scale per tensor; one scale per token (row) keeps far more of a
 * transformer's activations (its largest values sit in a few tokens). So the product runs with scale 1 and
 * these kernels do the rest, one row at a time, in float32: quantize a row (after the smoothing factors of
 * its channels) to int8 with its own scale; and after the product, multiply each row by its input's scale,
 * add the bias, then either GELU and quantize again for the next product (ffn_mid) or add the residual and
 * round to bfloat16 (rows_out). Rows are shared by `threads` OpenMP threads (torch's, as for attention).
 *
 * GELU(x) = x Φ(x), Φ by a cubic on each of 32 segments of [-5.5, 5.5] (coefficients from the caller, 4 × 32
 * floats: c0[32], c1[32], c2[32], c3[32], in the segment's own coordinate u in [0, 1)); outside, Φ of the nearest
 * end (Φ(-5.5) = 2e-8). Its largest error against the exact GELU is 2.5e-6 for |x| <= 20, far below the int8 step
 * that follows.
 * --------------------------------------------------------------------------------------------------------------- */
#include <math.h>
#define ROW_MAX 8192   /* widest row (floats of per-thread scratch) */
#define NONFINITE 0x99 /* vfpclassps: quiet NaN, +inf, -inf, signalling NaN */

static inline __m512 gelu16(__m512 x, const __m512 *c) {
    /* s = (x + 5.5) 32 / 11 in [0, 32): segment i = trunc(s), u = s - i (beyond +-5.5: the end segment's end) */
    const __m512 s = _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(32.0f / 11.0f), _mm512_set1_ps(16.0f)),
                                                 _mm512_setzero_ps()), _mm512_set1_ps(31.999998f));
    const __m512i i = _mm512_cvttps_epi32(s);
    const __m512 u = _mm512_sub_ps(s, _mm512_cvtepi32_ps(i));
    __m512 p = _mm512_permutex2var_ps(c[6], i, c[7]);
    p = _mm512_fmadd_ps(p, u, _mm512_permutex2var_ps(c[4], i, c[5]));
    p = _mm512_fmadd_ps(p, u, _mm512_permutex2var_ps(c[2], i, c[3]));
    p = _mm512_fmadd_ps(p, u, _mm512_permutex2var_ps(c[0], i, c[1]));
    return _mm512_mul_ps(x, p);
}

/* buf[0 .. cols) to int8 with one symmetric scale (127 levels a side); returns the scale: 1 for an all-zero row
 * (zeros), NaN for a row with a NaN or an infinity in it (bad: its lanes' fpclass mask), so that the product after
 * carries it and the caller's non-finite checks see it, as in float. The largest magnitude is taken as at least
 * 1e-12, as quantize_rows does, so that 127 / max stays finite. */
static inline float quantize_buf(const float *buf, int64_t cols, __m512 amax, __mmask16 bad, int8_t *q, int flip) {
    if (bad) {
        memset(q, flip ? 0x80 : 0, (size_t)cols);
        return __builtin_nanf("");
    }
    float mx = _mm512_reduce_max_ps(amax);
    if (mx == 0.0f) {
        memset(q, flip ? 0x80 : 0, (size_t)cols);
        return 1.0f;
    }
    mx = mx > 1e-12f ? mx : 1e-12f;
    const float scale = mx / 127.0f;
    const __m512 inv = _mm512_set1_ps(127.0f / mx);
    for (int64_t j = 0; j < cols; j += 16) {
        const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(buf + j), inv)); /* nearest even */
        const __m128i b = _mm512_cvtsepi32_epi8(v);
        _mm_storeu_si128((__m128i *)(q + j), flip ? _mm_xor_si128(b, _mm_set1_epi8((char)0x80)) : b);
    }
    return scale;
}

/* fn(ctx, r, buf) for every row r < rows, with buf a float32 scratch row of ROW_MAX, on `threads` OpenMP threads
 * (one when there is little work). Returns 0, or 1 when cols is not a multiple of 16 up to ROW_MAX. */
typedef void (*row_fn)(const void *ctx, int64_t r, float *buf);
static int for_rows(int64_t rows, int64_t cols, int threads, row_fn fn, const void *ctx) {
    if (cols % 16 || cols > ROW_MAX) return 1;
    if (threads < 1 || rows * cols < 65536) threads = 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t r = 0; r < rows; r++) {
        float buf[ROW_MAX];
        fn(ctx, r, buf);
    }
    return 0;
}

typedef struct {
    const uint16_t *x; /* bfloat16 rows of `cols` (stride ld) */
    const float *y;    /* or float32 rows of `cols` (contiguous) */
    int64_t cols, ld;
    const float *row_scale, *bias, *coef, *inv_smooth, *gamma, *beta;
    const uint16_t *residual;
    int64_t ld_res;
    float eps;
    int8_t *q;
    int flip; /* q as uint8 codes + 128 (the sign bit flipped): oneDNN's fast rows where there is no AMX int8 */
    float *scale;
    uint16_t *out;
} rows_t;

static void quant_row(const void *ctx, int64_t r, float *buf) {
    const rows_t *A = (const rows_t *)ctx;
    __m512 amax = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t j = 0; j < A->cols; j += 16) {
        __m512 v = load16(A->x + r * A->ld, j, 1);
        if (A->inv_smooth) v = _mm512_mul_ps(v, _mm512_loadu_ps(A->inv_smooth + j));
        _mm512_storeu_ps(buf + j, v);
        amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
        bad |= _mm512_fpclass_ps_mask(v, NONFINITE);
    }
    A->scale[r] = quantize_buf(buf, A->cols, amax, bad, A->q + r * A->cols, A->flip);
}

/* x (rows × cols bfloat16, row stride ld) times inv_smooth (cols, or NULL) -> q (rows × cols int8; flip: uint8 codes
 * + 128), scale (rows). cols: a multiple of 16, at most ROW_MAX. Returns 0, or 1 for an unsupported width. */
int embedstack_quant_rows(const uint16_t *x, int64_t rows, int64_t cols, int64_t ld, const float *inv_smooth,
                          int8_t *q, float *scale, int flip, int threads) {
    const rows_t A = {.x = x, .cols = cols, .ld = ld, .inv_smooth = inv_smooth, .q = q, .flip = flip, .scale = scale};
    return for_rows(rows, cols, threads, quant_row, &A);
}

static void ffn_mid_row(const void *ctx, int64_t r, float *buf) {
    const rows_t *A = (const rows_t *)ctx;
    __m512 c[8];
    for (int k = 0; k < 8; k++) c[k] = _mm512_loadu_ps(A->coef + 16 * k);
    const __m512 rs = _mm512_set1_ps(A->row_scale[r]);
    __m512 amax = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t j = 0; j < A->cols; j += 16) {
        __m512 v = _mm512_fmadd_ps(load16(A->x + r * A->cols, j, 1), rs,
                                   A->bias ? _mm512_loadu_ps(A->bias + j) : _mm512_setzero_ps());
        bad |= _mm512_fpclass_ps_mask(v, NONFINITE); /* GELU's clamp would hide them */
        v = gelu16(v, c);
        if (A->inv_smooth) v = _mm512_mul_ps(v, _mm512_loadu_ps(A->inv_smooth + j));
        _mm512_storeu_ps(buf + j, v);
        amax = _mm512_max_ps(amax, _mm512_abs_ps(v)); /* finite in, finite out: GELU and smoothing keep it so */
    }
    A->scale[r] = quantize_buf(buf, A->cols, amax, bad, A->q + r * A->cols, A->flip);
}

/* The middle of the feed-forward: y (rows × cols bfloat16, the int8 product times the weight scales) ->
 * GELU(y × row_scale[r] + bias) × inv_smooth -> q (int8; flip: uint8 codes + 128), scale (rows). */
int embedstack_ffn_mid(const uint16_t *y, int64_t rows, int64_t cols, const float *row_scale, const float *bias,
                       const float *coef, const float *inv_smooth, int8_t *q, float *scale, int flip, int threads) {
    const rows_t A = {.x = y, .cols = cols, .row_scale = row_scale, .bias = bias, .coef = coef,
                      .inv_smooth = inv_smooth, .q = q, .flip = flip, .scale = scale};
    return for_rows(rows, cols, threads, ffn_mid_row, &A);
}

/* out (bfloat16, cols) = LayerNorm of buf (float32, cols; sum: its 16-lane sums) with weight gamma, bias beta (or
 * NULL): torch's, biased variance, both moments in float32, the variance from a second pass over the row */
static inline void norm_row(const float *buf, int64_t cols, __m512 sum, const float *gamma, const float *beta,
                            float eps, uint16_t *out) {
    const float mean = _mm512_reduce_add_ps(sum) / (float)cols;
    const __m512 vm = _mm512_set1_ps(mean);
    __m512 sq = _mm512_setzero_ps();
    for (int64_t j = 0; j < cols; j += 16) {
        const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(buf + j), vm);
        sq = _mm512_fmadd_ps(d, d, sq);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(sq) / (float)cols + eps));
    for (int64_t j = 0; j < cols; j += 16) {
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(buf + j), vm), inv),
                                 _mm512_loadu_ps(gamma + j));
        if (beta) v = _mm512_add_ps(v, _mm512_loadu_ps(beta + j));
        store16(out, j, v, 1);
    }
}

static void layer_norm_row(const void *ctx, int64_t r, float *buf) {
    const rows_t *A = (const rows_t *)ctx;
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < A->cols; j += 16) {
        const __m512 v = load16(A->x + r * A->ld, j, 1);
        _mm512_storeu_ps(buf + j, v);
        sum = _mm512_add_ps(sum, v);
    }
    norm_row(buf, A->cols, sum, A->gamma, A->beta, A->eps, A->out + r * A->cols);
}

/* LayerNorm of bfloat16 rows x (rows × cols, row stride ld) -> out (rows × cols bfloat16); as norm_row. */
int embedstack_layer_norm_rows(const uint16_t *x, int64_t rows, int64_t cols, int64_t ld, const float *gamma,
                               const float *beta, float eps, uint16_t *out, int threads) {
    const rows_t A = {.x = x, .cols = cols, .ld = ld, .gamma = gamma, .beta = beta, .eps = eps, .out = out};
    return for_rows(rows, cols, threads, layer_norm_row, &A);
}

static void rows_out_row(const void *ctx, int64_t r, float *buf) {
    const rows_t *A = (const rows_t *)ctx;
    const __m512 rs = _mm512_set1_ps(A->row_scale[r]);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < A->cols; j += 16) {
        __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(A->y + r * A->cols + j), rs,
                                   A->bias ? _mm512_loadu_ps(A->bias + j) : _mm512_setzero_ps());
        if (A->residual) v = _mm512_add_ps(v, load16(A->residual + r * A->ld_res, j, 1));
        if (!A->gamma) {
            store16(A->out + r * A->cols, j, v, 1);
            continue;
        }
        _mm512_storeu_ps(buf + j, v);
        sum = _mm512_add_ps(sum, v);
    }
    if (A->gamma) norm_row(buf, A->cols, sum, A->gamma, A->beta, A->eps, A->out + r * A->cols);
}

/* The end of an int8 product: out = y × row_scale[r] + bias (+ residual), then LayerNorm (weight gamma, bias
 * beta, epsilon eps) when gamma is given, rounded to bfloat16. y: float32 (the int8 product times the weight
 * scales), rows × cols; residual: bfloat16 with row stride ld_res, or NULL; beta may be NULL. The LayerNorm is
 * norm_row's. */
int embedstack_rows_out(const float *y, int64_t rows, int64_t cols, const float *row_scale, const float *bias,
                        const uint16_t *residual, int64_t ld_res, const float *gamma, const float *beta, float eps,
                        uint16_t *out, int threads) {
    const rows_t A = {.y = y, .cols = cols, .row_scale = row_scale, .bias = bias, .residual = residual,
                      .ld_res = ld_res, .gamma = gamma, .beta = beta, .eps = eps, .out = out};
    return for_rows(rows, cols, threads, rows_out_row, &A);
}

#endif /* __AVX512F__: the row kernels */

#ifdef EMBEDSTACK_AMX
/* ---------------------------------------------------------------------------------------------------------------
 * float32 linear layers on the bf16 tile unit, to float32 accuracy: y = x Wᵀ + b as three bf16 products.
 *
 * Each float32 value splits into two bfloat16s, a = a_h + a_l (a_h: a rounded to bf16; a_l: the rest, rounded),
 * which keeps 16 of float32's 24 mantissa bits. Then x Wᵀ ≈ x_h W_hᵀ + x_h W_lᵀ + x_l W_hᵀ, accumulated in
 * float32 by tdpbf16ps; the term left out (x_l W_lᵀ) and the split's rounding are about 2^-16 of each product,
 * against 2^-24 for float32 itself (XLA calls this "bf16_3x"). With GELU (coef), outputs below -5.5 come out as
 * x Φ(-5.5) (2e-8 x, where the exact GELU is nearer 0): 2e-6 at x = -100. On a Xeon with AMX the tile unit multiplies bf16 about
 * ten times as fast as AVX-512 multiplies float32, so three products still take well under half the time.
 *
 * x: float32 rows (M x K, row stride ldx); wh, wl: W's two halves packed by column blocks of 16, [N/16][K/2][16][2]
 * (as pack_decoder above); bias: float32 (N) or NULL; coef: GELU's table (gelu16, the row kernels') to apply GELU
 * to the output, or NULL; out: float32 (M x N, row stride ldo). K and N multiples of
 * 32. Work items are (a block of `mb` rows, a group of columns): the block is split once into x_h and x_l
 * (bf16, in L2), then 2 x 2 tiles (32 rows x 32 columns) at a time run over K: 8 tile loads feed 12 products.
 */
typedef struct {
    const float *x, *bias;
    const uint16_t *wh, *wl;
    float *out;
    const float *coef; /* GELU's cubic segments (gelu16) when the output goes through GELU, else NULL */
    int64_t M, K, N, ldx, ldo, mb, col_groups, next;
} x3_t;

/* rows [r0, r0 + n) of x split into h and l (mb x K bf16 each; rows past n zero) */
static void x3_split(const x3_t *J, int64_t r0, int64_t n, uint16_t *h, uint16_t *l) {
    const int64_t K = J->K;
    for (int64_t r = 0; r < J->mb; r++) {
        uint16_t *hr = h + r * K, *lr = l + r * K;
        if (r >= n) {
            memset(hr, 0, (size_t)K * 2);
            memset(lr, 0, (size_t)K * 2);
            continue;
        }
        const float *xr = J->x + (r0 + r) * J->ldx;
        for (int64_t k = 0; k < K; k += 16) {
            const __m512 v = _mm512_loadu_ps(xr + k);
            const __m256bh vh = _mm512_cvtneps_pbh(v);
            const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)vh), 16));
            _mm256_storeu_si256((__m256i *)(hr + k), (__m256i)vh);
            _mm256_storeu_si256((__m256i *)(lr + k), (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(v, back)));
        }
    }
}

static void x3_item(const x3_t *J, int64_t item, uint16_t *h, uint16_t *l, float *cb) {
    const int64_t K = J->K, N = J->N, blocks = N / 32;
    const int64_t rb = item / J->col_groups, g = item % J->col_groups;
    const int64_t r0 = rb * J->mb, n = J->M - r0 < J->mb ? J->M - r0 : J->mb;
    const int64_t p0 = blocks * g / J->col_groups, p1 = blocks * (g + 1) / J->col_groups; /* 32-column pairs */
    __m512 gc[8];
    if (J->coef)
        for (int k = 0; k < 8; k++) gc[k] = _mm512_loadu_ps(J->coef + 16 * k);
    x3_split(J, r0, n, h, l);
    const int64_t wstride = (K / 2) * 32; /* one column block of 16 in the packed weights */
    for (int64_t p = p0; p < p1; p++) {
        const uint16_t *wh0 = J->wh + 2 * p * wstride, *wh1 = wh0 + wstride;
        const uint16_t *wl0 = J->wl + 2 * p * wstride, *wl1 = wl0 + wstride;
        const int64_t c0 = 32 * p;
        /* the accumulators start from the bias: a 16 x 32 tile of it, each row the same */
        const __m512 b0 = J->bias ? _mm512_loadu_ps(J->bias + c0) : _mm512_setzero_ps();
        const __m512 b1 = J->bias ? _mm512_loadu_ps(J->bias + c0 + 16) : _mm512_setzero_ps();
        float *bt = cb + 1024;
        for (int r = 0; r < 16; r++) {
            _mm512_store_ps(bt + 32 * r, b0);
            _mm512_store_ps(bt + 32 * r + 16, b1);
        }
        for (int64_t t = 0; t < n; t += 32) {
            const uint16_t *h0 = h + t * K, *l0 = l + t * K;
            _tile_loadd(0, bt, 128);
            _tile_loadd(1, bt + 16, 128);
            _tile_loadd(2, bt, 128);
            _tile_loadd(3, bt + 16, 128);
            for (int64_t s = 0; s < K / 32; s++) {
                _tile_loadd(4, h0 + 32 * s, K * 2);
                _tile_loadd(5, h0 + 16 * K + 32 * s, K * 2);
                _tile_loadd(6, wl0 + s * 512, 64);
                _tile_loadd(7, wl1 + s * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
                _tile_loadd(6, wh0 + s * 512, 64);
                _tile_loadd(7, wh1 + s * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
                _tile_loadd(4, l0 + 32 * s, K * 2);
                _tile_loadd(5, l0 + 16 * K + 32 * s, K * 2);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            const int64_t rows = n - t < 32 ? n - t : 32;
            float *o = J->out + (r0 + t) * J->ldo + c0;
            if (rows == 32) { /* straight to the output */
                _tile_stored(0, o, J->ldo * 4);
                _tile_stored(1, o + 16, J->ldo * 4);
                _tile_stored(2, o + 16 * J->ldo, J->ldo * 4);
                _tile_stored(3, o + 16 * J->ldo + 16, J->ldo * 4);
            } else {
                _tile_stored(0, cb, 128);
                _tile_stored(1, cb + 16, 128);
                _tile_stored(2, cb + 512, 128);
                _tile_stored(3, cb + 528, 128);
                for (int64_t r = 0; r < rows; r++) memcpy(o + r * J->ldo, cb + 32 * r, 32 * sizeof(float));
            }
            if (J->coef) /* GELU on the block just written (in L1) */
                for (int64_t r = 0; r < rows; r++) {
                    _mm512_storeu_ps(o + r * J->ldo, gelu16(_mm512_loadu_ps(o + r * J->ldo), gc));
                    _mm512_storeu_ps(o + r * J->ldo + 16, gelu16(_mm512_loadu_ps(o + r * J->ldo + 16), gc));
                }
        }
    }
}

static void *x3_worker(void *arg) {
    x3_t *J = (x3_t *)arg;
    const int64_t items = (J->M + J->mb - 1) / J->mb * J->col_groups;
    const size_t half = (size_t)(J->mb * J->K) * 2;
    char *buf = (char *)aligned_alloc(64, 2 * half + 2 * 32 * 32 * sizeof(float)); /* + output and bias tiles */
    if (!buf) return NULL;
    tilecfg_t before;
    tiles_on(&before, 8);
    for (;;) {
        int64_t item = __atomic_fetch_add(&J->next, 1, __ATOMIC_RELAXED);
        if (item >= items) break;
        x3_item(J, item, (uint16_t *)buf, (uint16_t *)(buf + half), (float *)(buf + 2 * half));
    }
    tiles_off(&before);
    free(buf);
    return NULL;
}

/* Returns 0; 1 when K or N is not a multiple of 32 (or K > 8192); 2 when memory could not be had. */
int embedstack_linear_x3(const float *x, int64_t M, int64_t K, int64_t ldx, const uint16_t *wh, const uint16_t *wl,
                         int64_t N, const float *bias, const float *coef, float *out, int64_t ldo, int threads) {
    if (K % 32 || N % 32 || K < 32 || K > 8192 || N < 32 || M < 1) return 1;
    if (threads < 1) threads = 1;
    /* rows per block: up to 128 (the weights stream past each block once), fewer where that leaves a thread idle */
    const int64_t b32 = (M + 31) / 32;
    int64_t per = (b32 + 2 * threads - 1) / (2 * threads);
    per = per < 1 ? 1 : per > 4 ? 4 : per;
    const int64_t mb = 32 * per, row_blocks = (M + mb - 1) / mb;
    int64_t groups = row_blocks >= 2 * threads ? 1 : (2 * threads + row_blocks - 1) / row_blocks;
    if (groups > N / 32) groups = N / 32;
    x3_t J = {x, bias, wh, wl, out, coef, M, K, N, ldx, ldo, mb, groups, 0};
    const int64_t items = row_blocks * groups;
    run_threads(&J, x3_worker, threads > items ? (int)items : threads);
    return J.next < items ? 2 : 0;
}
#endif
