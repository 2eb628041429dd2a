// bit-trt device preprocessing: raw uint8 RGB HWC image -> resized float32 [0,1] in the engine's input binding.
//
// The arithmetic is OpenCV's cv::resize for uint8 (what the CPU path runs), so both paths agree to within
// one uint8 step (1/255) per value; most values are bit-identical:
//   bilinear: half-pixel centres, edge clamp, weights quantized to 11 bits, OpenCV's integer blend;
//   nearest:  source index floor(dst * src / dst_size), no half-pixel offset (OpenCV's INTER_NEAREST).
// The per-pixel function is __host__ __device__: the same code is compiled for the host and checked against
// OpenCV on CPU-only machines (tests/engine/test_cuda_preprocess.py), and runs in the kernel on a GPU.

#define BIT_COEF_BITS 11
#define BIT_COEF_SCALE (1 << BIT_COEF_BITS)

enum { BIT_BILINEAR = 0, BIT_NEAREST = 1 };

__host__ __device__ inline int bit_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Source index and the 11-bit weight of that index (the other, index+1, gets SCALE - weight).
__host__ __device__ inline void bit_linear_tap(int d, int src_size, int dst_size, int* s0, int* w0) {
    double scale = (double)src_size / (double)dst_size;
    float f = (float)((d + 0.5) * scale - 0.5);
    int s = (int)floorf(f);
    f -= (float)s;
    if (s < 0) { f = 0.f; s = 0; }
    if (s >= src_size - 1) { f = 0.f; s = src_size - 1; }
    *s0 = s;
    *w0 = (int)rintf((1.f - f) * BIT_COEF_SCALE);
}

__host__ __device__ inline void bit_sample(const unsigned char* src, int src_h, int src_w, long src_stride,
                                           int oy, int ox, int dst_size, int mode, unsigned char rgb[3]) {
    if (mode == BIT_NEAREST) {
        int sy = bit_clampi((int)floor(oy * ((double)src_h / dst_size)), 0, src_h - 1);
        int sx = bit_clampi((int)floor(ox * ((double)src_w / dst_size)), 0, src_w - 1);
        const unsigned char* p = src + sy * src_stride + 3L * sx;
        rgb[0] = p[0]; rgb[1] = p[1]; rgb[2] = p[2];
        return;
    }
    int sy, wy, sx, wx;
    bit_linear_tap(oy, src_h, dst_size, &sy, &wy);
    bit_linear_tap(ox, src_w, dst_size, &sx, &wx);
    int sy1 = sy + 1 < src_h ? sy + 1 : sy;
    int sx1 = sx + 1 < src_w ? sx + 1 : sx;
    const unsigned char* r0 = src + sy * src_stride;
    const unsigned char* r1 = src + sy1 * src_stride;
    for (int c = 0; c < 3; ++c) {
        int h0 = r0[3 * sx + c] * wx + r0[3 * sx1 + c] * (BIT_COEF_SCALE - wx);
        int h1 = r1[3 * sx + c] * wx + r1[3 * sx1 + c] * (BIT_COEF_SCALE - wx);
        // OpenCV's vectorized vertical pass (VResizeLinearVec_32s8u): drop 4 bits, 16-bit multiply-high, round.
        int v = (((wy * (h0 >> 4)) >> 16) + (((BIT_COEF_SCALE - wy) * (h1 >> 4)) >> 16) + 2) >> 2;
        rgb[c] = (unsigned char)bit_clampi(v, 0, 255);
    }
}

__host__ __device__ inline void bit_store(float* dst, int dst_size, int nchw, int oy, int ox,
                                          const unsigned char rgb[3], float scale) {
    long plane = (long)dst_size * dst_size;
    long pix = (long)oy * dst_size + ox;
    for (int c = 0; c < 3; ++c) {
        float v = (float)rgb[c] * scale;
        if (nchw) dst[c * plane + pix] = v; else dst[3 * pix + c] = v;
    }
}

// One thread per output pixel. `dst` points at this image's slot in the batch binding.
extern "C" __global__ void bit_preprocess_u8(const unsigned char* src, int src_h, int src_w, long src_stride,
                                             float* dst, int dst_size, int nchw, int mode, float scale) {
    int ox = blockIdx.x * blockDim.x + threadIdx.x;
    int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= dst_size || oy >= dst_size) return;
    unsigned char rgb[3];
    bit_sample(src, src_h, src_w, src_stride, oy, ox, dst_size, mode, rgb);
    bit_store(dst, dst_size, nchw, oy, ox, rgb, scale);
}

// The same arithmetic on the host, for the CPU-side check of this file.
extern "C" void bit_preprocess_u8_host(const unsigned char* src, int src_h, int src_w, long src_stride,
                                       float* dst, int dst_size, int nchw, int mode, float scale) {
    for (int oy = 0; oy < dst_size; ++oy)
        for (int ox = 0; ox < dst_size; ++ox) {
            unsigned char rgb[3];
            bit_sample(src, src_h, src_w, src_stride, oy, ox, dst_size, mode, rgb);
            bit_store(dst, dst_size, nchw, oy, ox, rgb, scale);
        }
}
