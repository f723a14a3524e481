// millrace's GPU kernels, compiled at run time by NVRTC (see `runtime.rs`) and cached on disk.
//
// Everything is written against plain C++ with no CUDA headers, so that NVRTC needs no include
// path. bf16 values are stored as `unsigned short` and converted by hand (round to nearest even,
// NaN kept a NaN), which is what `__float2bfloat16_rn` does.
//
// Layouts: a batch of activations is row-major `[capacity, width]` (column-major `width x
// capacity` to cuBLASLt). Rows at or past `ctl->rows` are padding: their loss and output
// gradient are zero, so they contribute nothing to any gradient.

typedef unsigned short bf16;

struct Ctl {
    int rows;      // live rows of the batch; the rest up to the capacity are padding
    float scale;   // the loss is `scale * sum over live rows`
    float lr;      // learning rate of the optimiser step
    int pad;
};

__device__ __forceinline__ float ldv(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float ldv(const bf16* p, long long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ void stv(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void stv(bf16* p, long long i, float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        p[i] = (bf16)0x7fc0u;
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    p[i] = (bf16)(u >> 16);
}

// Activations: 0 relu, 1 tanh, 2 gelu (exact, erf), 3 sigmoid, anything else identity.
__device__ __forceinline__ float act_f(int act, float z) {
    switch (act) {
        case 0: return z > 0.f ? z : 0.f;
        case 1: return tanhf(z);
        case 2: return 0.5f * z * (1.f + erff(z * 0.70710678118654752f));
        case 3: return 1.f / (1.f + expf(-z));
        default: return z;
    }
}

// Derivative of the activation at pre-activation `z` with output `h`.
__device__ __forceinline__ float act_d(int act, float z, float h) {
    switch (act) {
        case 0: return h > 0.f ? 1.f : 0.f;
        case 1: return 1.f - h * h;
        case 2: {
            // burn 0.21's gelu_backward (the CPU path): the derivative of the tanh
            // approximation, although its forward pass is the exact erf form.
            float z3 = z * z * z;
            float t = tanhf(0.0356774f * z3 + 0.797885f * z);
            return 0.5f * t + (0.0535161f * z3 + 0.398942f * z) * (1.f - t * t) + 0.5f;
        }
        case 3: return h * (1.f - h);
        default: return 1.f;
    }
}

#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// Sums `v` over the block into `acc` (one atomic per block). blockDim.x must be 256.
__device__ __forceinline__ void block_sum_into(double* acc, float v) {
    __shared__ float part[256];
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(acc, (double)part[0]);
}

template <typename T>
__device__ void to_t(const float* x, T* out, long long n) {
    if (sizeof(T) == 2 && (n & 3) == 0) {
        // Four at a time: one 16-byte load, one 8-byte store.
        const float4* x4 = (const float4*)x;
        uint2* o4 = (uint2*)out;
        GRID_STRIDE(v, n / 4) {
            float4 f = x4[v];
            bf16 b[4];
            stv(b, 0, f.x);
            stv(b, 1, f.y);
            stv(b, 2, f.z);
            stv(b, 3, f.w);
            o4[v] = make_uint2((unsigned int)b[0] | ((unsigned int)b[1] << 16),
                               (unsigned int)b[2] | ((unsigned int)b[3] << 16));
        }
    } else {
        GRID_STRIDE(i, n) { stv(out, i, x[i]); }
    }
}

// h = act(z + bias) per element of a row-major [rows, cols] batch; z keeps the pre-activation
// (with the bias added when `add_bias`).
template <typename T>
__device__ void bias_act(T* z, const float* bias, T* h, long long rows, int cols, int act,
                         int add_bias) {
    GRID_STRIDE(i, rows * cols) {
        float v = ldv(z, i);
        if (add_bias) {
            v += bias[i % cols];
            stv(z, i, v);
        }
        stv(h, i, act_f(act, v));
    }
}

// dz = dh * act'(z, h), in place over dh.
template <typename T>
__device__ void act_back(T* dh, const T* z, const T* h, long long n, int act) {
    // Only gelu's derivative needs the pre-activation; the others read `h` alone.
    if (act == 2) {
        GRID_STRIDE(i, n) { stv(dh, i, ldv(dh, i) * act_d(act, ldv(z, i), ldv(h, i))); }
    } else if (sizeof(T) == 2 && (n & 7) == 0) {
        // bf16, eight at a time: one 16-byte load of each operand (buffers are 256-byte
        // aligned allocations).
        uint4* d8 = (uint4*)dh;
        const uint4* h8 = (const uint4*)h;
        GRID_STRIDE(v, n / 8) {
            uint4 dv = d8[v];
            uint4 hv = h8[v];
            unsigned int* dw = (unsigned int*)&dv;
            const unsigned int* hw = (const unsigned int*)&hv;
            for (int w = 0; w < 4; ++w) {
                bf16 out[2];
                for (int half = 0; half < 2; ++half) {
                    float g = __uint_as_float(((dw[w] >> (16 * half)) & 0xffffu) << 16);
                    float hh = __uint_as_float(((hw[w] >> (16 * half)) & 0xffffu) << 16);
                    stv(out, half, g * act_d(act, 0.f, hh));
                }
                dw[w] = (unsigned int)out[0] | ((unsigned int)out[1] << 16);
            }
            d8[v] = dv;
        }
    } else {
        GRID_STRIDE(i, n) { stv(dh, i, ldv(dh, i) * act_d(act, 0.f, ldv(h, i))); }
    }
}

// db[c] = sum over rows of dz[r, c] (one thread per column; neighbours read neighbours).
template <typename T>
__device__ void bias_grad(const T* dz, float* db, int rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.f;
    for (int r = 0; r < rows; ++r) s += ldv(dz, (long long)r * cols + c);
    db[c] = s;
}

// Weight and bias gradient of a layer with few outputs (n <= 16), where a matrix product of
// shape d_in x n x cap leaves the GPU idle: pass 1 sums chunks of 256 rows into partials
// [chunk][n][d_in + 1] (the last slot is the bias), pass 2 adds the chunks in order. No atomics:
// the result is the same on every run.
#define SMALL_N 16
#define MAX_CHUNK_ROWS 512
template <typename T>
__device__ void dw_small_partial(const T* a, const T* dz, float* part, int cap, int d_in, int n,
                                 int chunk_rows) {
    __shared__ float dzs[MAX_CHUNK_ROWS * SMALL_N];
    int xblocks = (d_in + 1 + blockDim.x - 1) / blockDim.x;
    int i = (blockIdx.x % xblocks) * blockDim.x + threadIdx.x;
    int chunk = blockIdx.x / xblocks;
    int r0 = chunk * chunk_rows;
    int rows = min(cap - r0, chunk_rows);
    // The chunk's output gradients, read once per block into shared memory.
    for (int e = threadIdx.x; e < rows * n; e += blockDim.x) {
        dzs[e] = ldv(dz, (long long)r0 * n + e);
    }
    __syncthreads();
    if (i > d_in) return;
    float acc[SMALL_N];
#pragma unroll
    for (int j = 0; j < SMALL_N; ++j) acc[j] = 0.f;
#pragma unroll 8
    for (int r = 0; r < rows; ++r) {
        // Slot d_in sums the output gradient itself: the bias gradient.
        float av = i < d_in ? ldv(a, (long long)(r0 + r) * d_in + i) : 1.f;
#pragma unroll
        for (int j = 0; j < SMALL_N; ++j) {
            if (j < n) acc[j] += av * dzs[r * n + j];
        }
    }
    float* out = part + (long long)chunk * n * (d_in + 1);
#pragma unroll
    for (int j = 0; j < SMALL_N; ++j) {
        if (j < n) out[(long long)j * (d_in + 1) + i] = acc[j];
    }
}

// dw[j * d_in + i] (the device's transposed weight) and db[j] from the partials.
extern "C" __global__ void dw_small_reduce(const float* part, float* dw, float* db, int chunks,
                                           int d_in, int n) {
    long long total = (long long)n * (d_in + 1);
    GRID_STRIDE(e, total) {
        float s = 0.f;
        for (int c = 0; c < chunks; ++c) s += part[(long long)c * total + e];
        int j = (int)(e / (d_in + 1));
        int i = (int)(e % (d_in + 1));
        if (i < d_in) dw[(long long)j * d_in + i] = s; else db[j] = s;
    }
}

// Softmax cross-entropy: one thread per row of [cap, k] f32 logits.
template <typename T>
__device__ void loss_ce(const float* logits, const long long* y, const Ctl* ctl, T* dlogits,
                        double* loss_acc, int cap, int k) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    float loss = 0.f;
    if (r < cap) {
        const float* z = logits + (long long)r * k;
        long long base = (long long)r * k;
        if (r < ctl->rows) {
            float m = z[0];
            for (int j = 1; j < k; ++j) m = fmaxf(m, z[j]);
            float s = 0.f;
            for (int j = 0; j < k; ++j) s += expf(z[j] - m);
            float lse = m + logf(s);
            int label = (int)y[r];
            loss = lse - z[label];
            float scale = ctl->scale;
            for (int j = 0; j < k; ++j) {
                float p = expf(z[j] - lse);
                stv(dlogits, base + j, scale * (p - (j == label ? 1.f : 0.f)));
            }
        } else {
            for (int j = 0; j < k; ++j) stv(dlogits, base + j, 0.f);
        }
    }
    block_sum_into(loss_acc, loss);
}

// Squared (mae == 0) or absolute (mae != 0) error of one output per row.
template <typename T>
__device__ void loss_reg(const float* out, const float* y, const Ctl* ctl, T* dout,
                         double* loss_acc, int cap, int mae) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    float loss = 0.f;
    if (r < cap) {
        float d = 0.f;
        if (r < ctl->rows) {
            float e = out[r] - y[r];
            if (mae) {
                loss = fabsf(e);
                d = e > 0.f ? 1.f : (e < 0.f ? -1.f : 0.f);
            } else {
                loss = e * e;
                d = 2.f * e;
            }
            d *= ctl->scale;
        }
        stv(dout, r, d);
    }
    block_sum_into(loss_acc, loss);
}

#define INSTANTIATE(T, S)                                                                       \
    extern "C" __global__ void to_##S(const float* x, T* out, long long n) { to_t(x, out, n); } \
    extern "C" __global__ void bias_act_##S(T* z, const float* bias, T* h, long long rows,       \
                                            int cols, int act, int add_bias) {                  \
        bias_act(z, bias, h, rows, cols, act, add_bias);                                        \
    }                                                                                           \
    extern "C" __global__ void act_back_##S(T* dh, const T* z, const T* h, long long n,          \
                                            int act) {                                          \
        act_back(dh, z, h, n, act);                                                             \
    }                                                                                           \
    extern "C" __global__ void dw_small_##S(const T* a, const T* dz, float* part, int cap,      \
                                            int d_in, int n, int chunk_rows) {                  \
        dw_small_partial(a, dz, part, cap, d_in, n, chunk_rows);                                \
    }                                                                                           \
    extern "C" __global__ void bias_grad_##S(const T* dz, float* db, int rows, int cols) {      \
        bias_grad(dz, db, rows, cols);                                                          \
    }                                                                                           \
    extern "C" __global__ void loss_ce_##S(const float* logits, const long long* y,             \
                                           const Ctl* ctl, T* dlogits, double* loss_acc,        \
                                           int cap, int k) {                                    \
        loss_ce(logits, y, ctl, dlogits, loss_acc, cap, k);                                     \
    }                                                                                           \
    extern "C" __global__ void loss_reg_##S(const float* out, const float* y, const Ctl* ctl,   \
                                            T* dout, double* loss_acc, int cap, int mae) {      \
        loss_reg(out, y, ctl, dout, loss_acc, cap, mae);                                        \
    }

INSTANTIATE(float, f32)
INSTANTIATE(bf16, bf16)

// Row-wise softmax in place over [rows, k] f32 (serving).
extern "C" __global__ void softmax_rows(float* z, int rows, int k) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float* p = z + (long long)r * k;
    float m = p[0];
    for (int j = 1; j < k; ++j) m = fmaxf(m, p[j]);
    float s = 0.f;
    for (int j = 0; j < k; ++j) {
        p[j] = expf(p[j] - m);
        s += p[j];
    }
    for (int j = 0; j < k; ++j) p[j] /= s;
}

// Advances the optimiser's step counter and writes Adam's per-step factors:
// coef[0] = sqrt(1 - b2^t) / (1 - b1^t), coef[1] = eps * sqrt(1 - b2^t).
extern "C" __global__ void opt_tick(unsigned long long* steps, float* coef, float b1, float b2,
                                    float eps) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    unsigned long long t = steps[0] + 1;
    steps[0] = t;
    int ti = t > 2147483647ull ? 2147483647 : (int)t;
    float c2 = sqrtf(1.f - powf(b2, (float)ti));
    coef[0] = c2 / (1.f - powf(b1, (float)ti));
    coef[1] = eps * c2;
}

// Adam over the flat parameters (burn's rule, as `FlatOptimizer`): decoupled from the layout.
// `w16`, when not null, receives the bf16 copy of the updated parameters.
extern "C" __global__ void adam(float* w, const float* g, float* m, float* v, bf16* w16,
                                long long n, const Ctl* ctl, const float* coef, float b1,
                                float b2, float wd) {
    float lr = ctl->lr;
    float combined = coef[0];
    float deps = coef[1];
    GRID_STRIDE(i, n) {
        float wi = w[i];
        float gi = g[i];
        if (wd > 0.f) gi = wi * wd + gi;
        float mi = m[i] * b1 + gi * (1.f - b1);
        float vi = v[i] * b2 + gi * gi * (1.f - b2);
        m[i] = mi;
        v[i] = vi;
        float step = (mi * combined) / (sqrtf(vi) + deps);
        wi -= step * lr;
        w[i] = wi;
        if (w16) stv(w16, i, wi);
    }
}

// SGD with optional momentum (`momentum` > 0 keeps a velocity), Nesterov and L2 decay.
extern "C" __global__ void sgd(float* w, const float* g, float* vel, bf16* w16, long long n,
                               const Ctl* ctl, float momentum, int nesterov, float wd) {
    float lr = ctl->lr;
    GRID_STRIDE(i, n) {
        float wi = w[i];
        float gi = g[i];
        if (wd > 0.f) gi = wi * wd + gi;
        float step = gi;
        if (momentum > 0.f) {
            float vi = vel[i] * momentum + gi;
            vel[i] = vi;
            step = nesterov ? vi * momentum + gi : vi;
        }
        wi -= step * lr;
        w[i] = wi;
        if (w16) stv(w16, i, wi);
    }
}

// Scales a flat f32 vector in place (the mean reduction of a summed gradient).
extern "C" __global__ void scale_f32(float* x, long long n, float s) {
    GRID_STRIDE(i, n) { x[i] *= s; }
}
