/* bit-trt's fused GroupNorm for ONNX Runtime's CPU provider: GroupNorm, gamma and beta, ReLU and the quantize to
 * uint8 in two passes over a channels-last tensor, on ORT's intra-op threads. engine/ort_group_norm.py says which
 * nodes of an INT8 graph it replaces and why; engine/ort_kernel_library.py builds and loads it.
 *
 * Three ops in the domain "bit_trt", NHWC in, NHWC uint8 Y out:
 *   QGroupNormRelu(X uint8, x_scale, x_zero_point, gamma[C], beta[C], y_scale, y_zero_point) -> Y
 *   GroupNormReluQuantize(X float, gamma[C], beta[C], y_scale, y_zero_point) -> Y
 *   QAddGroupNormRelu(A uint8, a_scale, a_zero_point, B float, gamma[C], beta[C], y_scale, y_zero_point) -> Y, S
 *     the residual sum first: S = dequantized A + B (float, as DequantizeLinear then Add compute it), and Y from S.
 * attributes: groups (int), epsilon (float, default 1e-5). Scales and zero points are per-tensor scalars.
 *
 * y = clamp(round(max(gamma[c] * (x - mean[n,g]) / sqrt(var[n,g] + eps) + beta[c], 0) / y_scale) + y_zero_point,
 * 0, 255), with x dequantized first for QGroupNormRelu. Rounding is half to even, as ONNX's QuantizeLinear.
 * Pass one sums each channel over a chunk of pixels (exactly, in integers, for uint8 input; shifted by the chunk's
 * first value for float input, so the variance does not cancel); the per-group statistics then fold into one
 * affine per (image, channel); pass two applies it. Both passes read along the channels, which the compiler
 * vectorizes.
 *
 * Written against ORT's C API as of version 1.17 (its ABI is append-only, so newer runtimes load it). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <onnxruntime_c_api.h>

#define BIT_ORT_API 17
#define MAX_CHANNELS 65536

static const OrtApi *api;

enum Input { U8_INPUT, FLOAT_INPUT, SUM_INPUT }; /* the three ops, in the order above */

typedef struct {
  int64_t groups;
  float eps;
  enum Input input;
} Kernel;

typedef struct {
  const void *x;        /* uint8 or float; for SUM_INPUT the sum S, written by pass one */
  const uint8_t *addend_q; /* SUM_INPUT: the quantized addend, and its scale and zero point */
  const float *addend_f;   /* SUM_INPUT: the float addend */
  float *sum;           /* SUM_INPUT: S */
  float a_scale;
  int a_zp;
  uint8_t *y;
  const float *gamma, *beta;
  float x_scale, y_scale;
  int x_zp, y_zp, u8;
  int64_t n_images, channels, pixels, groups, chunks, chunk;
  float eps;
  double *sums, *sums_sq; /* [image * chunks + chunk][channel], about the chunk's shift */
  float *shift;         /* [image * chunks + chunk][channel]: float input only */
  float *mul, *add;       /* [image][channel]: y_quantized = clamp(round(mul * x + add)) */
} Job;

/* Half to even, as ONNX's QuantizeLinear rounds (nearbyintf in the default FP rounding mode). Not the add-and-subtract
   1.5 * 2^23 trick: GCC vectorizes that loop with AVX-512's masks only, so built for AVX2 the apply pass ran scalar
   (R50x1 on ORT 1.4x slower; docs/cpu.md, "Built for a CPU without AVX-512"). nearbyintf is one vector round from
   SSE4.1 on. */
static inline uint8_t quantize(float t, float low) {
  t = t < low ? low : t;
  t = t > 255.f ? 255.f : t;
  return (uint8_t)(int)nearbyintf(t);
}

static void pixel_range(const Job *j, size_t task, int64_t *image, int64_t *first, int64_t *end) {
  *image = (int64_t)task / j->chunks;
  *first = ((int64_t)task % j->chunks) * j->chunk;
  *end = *first + j->chunk < j->pixels ? *first + j->chunk : j->pixels;
}

static void sums_task(void *data, size_t task) {
  Job *j = (Job *)data;
  int64_t n, p0, p1, C = j->channels;
  pixel_range(j, task, &n, &p0, &p1);
  double *sum = j->sums + task * C, *sum_sq = j->sums_sq + task * C;
  if (j->u8) {
    /* exact: a chunk holds at most 2^15 values of a channel, so 255^2 * 2^15 fits 32 bits */
    uint32_t *s = calloc(2 * C, sizeof *s), *s2 = s + C;
    if (!s) return; /* compute() sees the NaN it leaves and fails */
    const uint8_t *x = (const uint8_t *)j->x + (n * j->pixels + p0) * C;
    for (int64_t p = p0; p < p1; p++, x += C)
      for (int64_t c = 0; c < C; c++) {
        uint32_t v = x[c];
        s[c] += v;
        s2[c] += v * v;
      }
    for (int64_t c = 0; c < C; c++) sum[c] = s[c], sum_sq[c] = s2[c];
    free(s);
    return;
  }
  float *s = calloc(2 * C, sizeof *s), *s2 = s + C, *shift = j->shift + task * C;
  if (!s) return;
  if (j->addend_q) { /* S = (A - a_zp) * a_scale + B, in DequantizeLinear's and Add's order: the same floats */
    const uint8_t *a = j->addend_q + (n * j->pixels + p0) * C;
    const float *b = j->addend_f + (n * j->pixels + p0) * C;
    float *out = j->sum + (n * j->pixels + p0) * C;
    for (int64_t i = 0; i < (p1 - p0) * C; i++) out[i] = (float)((int)a[i] - j->a_zp) * j->a_scale + b[i];
  }
  const float *x = (const float *)j->x + (n * j->pixels + p0) * C;
  memcpy(shift, x, C * sizeof *shift);
  for (int64_t p = p0; p < p1; p++, x += C)
    for (int64_t c = 0; c < C; c++) {
      float v = x[c] - shift[c];
      s[c] += v;
      s2[c] += v * v;
    }
  for (int64_t c = 0; c < C; c++) sum[c] = s[c], sum_sq[c] = s2[c];
  free(s);
}

/* Per (image, group): mean and variance from the chunks' sums; per channel, the affine that pass two applies. */
static int fold(Job *j) {
  int64_t C = j->channels, per_group = C / j->groups;
  double x_scale = j->u8 ? j->x_scale : 1.0; /* the zero point cancels: x - mean_x = x_scale * (v - mean_v) */
  for (int64_t n = 0; n < j->n_images; n++)
    for (int64_t g = 0; g < j->groups; g++) {
      double count = (double)per_group * j->pixels, mean = 0, mean_sq = 0;
      /* each chunk's sums are about its own shift: move them to zero, exactly enough in double */
      for (int64_t k = 0; k < j->chunks; k++) {
        int64_t first = k * j->chunk, m = (first + j->chunk < j->pixels ? first + j->chunk : j->pixels) - first;
        for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
          size_t at = (size_t)((n * j->chunks + k) * C + c);
          double s = j->sums[at], s2 = j->sums_sq[at], h = j->u8 ? 0.0 : j->shift[at];
          mean += s + m * h;
          mean_sq += s2 + 2 * h * s + m * h * h;
        }
      }
      mean /= count;
      double var = mean_sq / count - mean * mean;
      if (!(var >= 0)) {
        if (var != var) return 0;
        var = 0;
      }
      /* real x = x_scale * (v - x_zp); y = A * (x - mean_x) + beta, t = y / y_scale + y_zp = mul * v + add */
      double inv = 1.0 / sqrt(var * x_scale * x_scale + j->eps);
      for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
        double A = j->gamma[c] * inv * x_scale;
        j->mul[n * C + c] = (float)(A / j->y_scale);
        j->add[n * C + c] = (float)((j->beta[c] - A * mean) / j->y_scale + j->y_zp);
      }
    }
  return 1;
}

static void apply_task(void *data, size_t task) {
  Job *j = (Job *)data;
  int64_t n, p0, p1, C = j->channels;
  pixel_range(j, task, &n, &p0, &p1);
  const float *a = j->mul + n * C, *b = j->add + n * C;
  float low = (float)j->y_zp; /* the ReLU: y < 0 quantizes to the zero point */
  uint8_t *y = j->y + (n * j->pixels + p0) * C;
  if (j->u8) {
    const uint8_t *x = (const uint8_t *)j->x + (n * j->pixels + p0) * C;
    for (int64_t p = p0; p < p1; p++, x += C, y += C)
      for (int64_t c = 0; c < C; c++) y[c] = quantize(a[c] * (float)x[c] + b[c], low);
  } else {
    const float *x = (const float *)j->x + (n * j->pixels + p0) * C;
    for (int64_t p = p0; p < p1; p++, x += C, y += C)
      for (int64_t c = 0; c < C; c++) y[c] = quantize(a[c] * x[c] + b[c], low);
  }
}

#define RETURN_IF(status_expr)          \
  do {                                  \
    OrtStatus *status_ = (status_expr); \
    if (status_) return status_;        \
  } while (0)

static OrtStatus *error(const char *message) { return api->CreateStatus(ORT_INVALID_ARGUMENT, message); }

/* Input `index` as data of `count` elements (-1: any count). */
static OrtStatus *input(OrtKernelContext *ctx, size_t index, int64_t count, const void **data, int64_t dims[4],
                        size_t *rank) {
  const OrtValue *value;
  OrtTensorTypeAndShapeInfo *info;
  size_t r;
  int64_t d[8], elements = 1;
  RETURN_IF(api->KernelContext_GetInput(ctx, index, &value));
  RETURN_IF(api->GetTensorTypeAndShape(value, &info));
  OrtStatus *status = api->GetDimensionsCount(info, &r);
  if (!status && r > 8) status = error("bit_trt GroupNorm: an input has rank above 8");
  if (!status) status = api->GetDimensions(info, d, r);
  api->ReleaseTensorTypeAndShapeInfo(info);
  if (status) return status;
  for (size_t i = 0; i < r; i++) elements *= d[i];
  if (count >= 0 && elements != count)
    return error("bit_trt GroupNorm: gamma and beta need one value per channel, scales and zero points one value");
  if (dims) {
    if (r != 4) return error("bit_trt GroupNorm: X must be 4-D, NHWC");
    memcpy(dims, d, 4 * sizeof *d);
    *rank = r;
  }
  void *p;
  RETURN_IF(api->GetTensorMutableData((OrtValue *)value, &p));
  *data = p;
  return NULL;
}

static OrtStatus *compute(void *kernel, OrtKernelContext *ctx) {
  const Kernel *k = (const Kernel *)kernel;
  Job j;
  memset(&j, 0, sizeof j);
  int64_t dims[4];
  size_t rank;
  const void *p;
  RETURN_IF(input(ctx, 0, -1, &p, dims, &rank));
  j.n_images = dims[0], j.pixels = dims[1] * dims[2], j.channels = dims[3];
  j.groups = k->groups, j.eps = k->eps, j.u8 = k->input == U8_INPUT;
  if (j.channels <= 0 || j.channels > MAX_CHANNELS || j.channels % j.groups)
    return error("bit_trt GroupNorm: the channels (last axis) must be a multiple of groups, at most 65536");
  size_t i = 1;
  if (k->input == SUM_INPUT) {
    j.addend_q = p;
    RETURN_IF(input(ctx, i++, 1, &p, NULL, NULL));
    j.a_scale = *(const float *)p;
    RETURN_IF(input(ctx, i++, 1, &p, NULL, NULL));
    j.a_zp = *(const uint8_t *)p;
    int64_t b_dims[4];
    size_t b_rank;
    RETURN_IF(input(ctx, i++, -1, &p, b_dims, &b_rank));
    if (memcmp(b_dims, dims, sizeof dims)) return error("bit_trt GroupNorm: the sum's two addends differ in shape");
    j.addend_f = p;
  } else {
    j.x = p;
  }
  if (j.u8) {
    RETURN_IF(input(ctx, i++, 1, &p, NULL, NULL));
    j.x_scale = *(const float *)p;
    RETURN_IF(input(ctx, i++, 1, &p, NULL, NULL));
    j.x_zp = *(const uint8_t *)p;
  }
  RETURN_IF(input(ctx, i++, j.channels, &p, NULL, NULL));
  j.gamma = p;
  RETURN_IF(input(ctx, i++, j.channels, &p, NULL, NULL));
  j.beta = p;
  RETURN_IF(input(ctx, i++, 1, &p, NULL, NULL));
  j.y_scale = *(const float *)p;
  RETURN_IF(input(ctx, i++, 1, &p, NULL, NULL));
  j.y_zp = *(const uint8_t *)p;
  if (!(j.y_scale > 0) || (j.u8 && !(j.x_scale > 0)) || (j.addend_q && !(j.a_scale > 0)))
    return error("bit_trt GroupNorm: scales must be positive");
  OrtValue *out;
  void *y;
  RETURN_IF(api->KernelContext_GetOutput(ctx, 0, dims, rank, &out));
  RETURN_IF(api->GetTensorMutableData(out, &y));
  j.y = y;
  if (j.addend_q) {
    RETURN_IF(api->KernelContext_GetOutput(ctx, 1, dims, rank, &out));
    RETURN_IF(api->GetTensorMutableData(out, &y));
    j.x = j.sum = y;
  }
  if (j.n_images == 0 || j.pixels == 0) return NULL;
  /* chunks of about 32k values: enough tasks for every thread, sums that fit 32 bits */
  j.chunk = (32768 / j.channels) > 0 ? 32768 / j.channels : 1;
  if (j.chunk > j.pixels) j.chunk = j.pixels;
  j.chunks = (j.pixels + j.chunk - 1) / j.chunk;
  size_t tasks = (size_t)(j.n_images * j.chunks), cells = tasks * (size_t)j.channels;
  j.sums = calloc(2 * cells, sizeof *j.sums);
  j.shift = j.u8 ? NULL : calloc(cells, sizeof *j.shift);
  j.mul = calloc(2 * (size_t)(j.n_images * j.channels), sizeof *j.mul);
  OrtStatus *status = NULL;
  if (!j.sums || !j.mul || (!j.u8 && !j.shift))
    status = api->CreateStatus(ORT_FAIL, "bit_trt GroupNorm: out of memory");
  if (!status) {
    j.sums_sq = j.sums + cells;
    j.add = j.mul + j.n_images * j.channels;
    for (size_t c = 0; c < cells; c++) j.sums[c] = NAN; /* a task that could not allocate leaves it */
    status = api->KernelContext_ParallelFor(ctx, sums_task, tasks, 0, &j);
  }
  if (!status && !fold(&j)) status = api->CreateStatus(ORT_FAIL, "bit_trt GroupNorm: out of memory");
  if (!status) status = api->KernelContext_ParallelFor(ctx, apply_task, tasks, 0, &j);
  free(j.sums);
  free(j.shift);
  free(j.mul);
  return status;
}

static OrtStatus *create(const OrtKernelInfo *info, void **out, enum Input input) {
  Kernel *k = calloc(1, sizeof *k);
  if (!k) return api->CreateStatus(ORT_FAIL, "bit_trt GroupNorm: out of memory");
  OrtStatus *status = api->KernelInfoGetAttribute_int64(info, "groups", &k->groups);
  if (!status && k->groups < 1) status = error("bit_trt GroupNorm: groups must be at least 1");
  if (status) {
    free(k);
    return status;
  }
  OrtStatus *no_eps = api->KernelInfoGetAttribute_float(info, "epsilon", &k->eps);
  if (no_eps) {
    api->ReleaseStatus(no_eps);
    k->eps = 1e-5f;
  }
  k->input = input;
  *out = k;
  return NULL;
}

#define FLOAT ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
#define UINT8 ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8

/* Each op: its name, its inputs' and outputs' types (X or A first, Y first), and how its kernel starts. */
static const struct {
  const char *name;
  size_t inputs, outputs;
  ONNXTensorElementDataType input_types[8], output_types[2];
} OPS[3] = {
    {"QGroupNormRelu", 7, 1, {UINT8, FLOAT, UINT8, FLOAT, FLOAT, FLOAT, UINT8}, {UINT8}},
    {"GroupNormReluQuantize", 5, 1, {FLOAT, FLOAT, FLOAT, FLOAT, UINT8}, {UINT8}},
    {"QAddGroupNormRelu", 8, 2, {UINT8, FLOAT, UINT8, FLOAT, FLOAT, FLOAT, FLOAT, UINT8}, {UINT8, FLOAT}},
};

typedef struct {
  OrtCustomOp op; /* first: ORT passes a pointer to it, which is a pointer to this */
  enum Input input;
} Op;

static const Op *op_of(const OrtCustomOp *op) { return (const Op *)op; }

static OrtStatus *ORT_API_CALL create_kernel(const OrtCustomOp *op, const OrtApi *a, const OrtKernelInfo *info,
                                             void **out) {
  (void)a;
  return create(info, out, op_of(op)->input);
}
static OrtStatus *ORT_API_CALL compute_api(void *kernel, OrtKernelContext *ctx) { return compute(kernel, ctx); }
static void ORT_API_CALL destroy(void *kernel) { free(kernel); }

/* The outputs: X's (or A's) shape, symbolic dimensions too, Y in uint8 and S in float, so ORT's layout optimizer
 * can cancel the Transposes around the channels-last convolutions on either side. */
static OrtStatus *ORT_API_CALL infer_shape(const OrtCustomOp *op, OrtShapeInferContext *ctx) {
  OrtTensorTypeAndShapeInfo *in, *out; /* `in` belongs to the context */
  size_t rank;
  int64_t dims[8];
  const char *symbols[8];
  RETURN_IF(api->ShapeInferContext_GetInputTypeShape(ctx, 0, &in));
  RETURN_IF(api->GetDimensionsCount(in, &rank));
  if (rank != 4) return error("bit_trt GroupNorm: X must be 4-D, NHWC");
  RETURN_IF(api->GetDimensions(in, dims, rank));
  RETURN_IF(api->GetSymbolicDimensions(in, symbols, rank));
  int which = op_of(op)->input;
  for (size_t o = 0; o < OPS[which].outputs; o++) {
    RETURN_IF(api->CreateTensorTypeAndShapeInfo(&out));
    OrtStatus *status = api->SetTensorElementType(out, OPS[which].output_types[o]);
    if (!status) status = api->SetDimensions(out, dims, rank);
    if (!status) status = api->SetSymbolicDimensions(out, symbols, rank);
    if (!status) status = api->ShapeInferContext_SetOutputTypeShape(ctx, o, out);
    api->ReleaseTensorTypeAndShapeInfo(out);
    if (status) return status;
  }
  return NULL;
}

static const char *ORT_API_CALL name(const OrtCustomOp *op) { return OPS[op_of(op)->input].name; }
static const char *ORT_API_CALL provider(const OrtCustomOp *op) {
  (void)op;
  return "CPUExecutionProvider";
}
static ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp *op, size_t i) {
  return OPS[op_of(op)->input].input_types[i];
}
static size_t ORT_API_CALL input_count(const OrtCustomOp *op) { return OPS[op_of(op)->input].inputs; }
static ONNXTensorElementDataType ORT_API_CALL output_type(const OrtCustomOp *op, size_t i) {
  return OPS[op_of(op)->input].output_types[i];
}
static size_t ORT_API_CALL output_count(const OrtCustomOp *op) { return OPS[op_of(op)->input].outputs; }
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp *op, size_t i) {
  (void)op, (void)i;
  return INPUT_OUTPUT_REQUIRED;
}
static OrtMemType ORT_API_CALL memory_type(const OrtCustomOp *op, size_t i) {
  (void)op, (void)i;
  return OrtMemTypeDefault;
}

static Op ops[3];

static void describe(Op *op, enum Input input) {
  memset(op, 0, sizeof *op);
  op->input = input;
  op->op.version = BIT_ORT_API; /* the struct's fields up to this version are filled; ORT reads no further */
  op->op.GetName = name;
  op->op.GetExecutionProviderType = provider;
  op->op.GetInputType = input_type;
  op->op.GetInputTypeCount = input_count;
  op->op.GetOutputType = output_type;
  op->op.GetOutputTypeCount = output_count;
  op->op.GetInputCharacteristic = required;
  op->op.GetOutputCharacteristic = required;
  op->op.GetInputMemoryType = memory_type;
  op->op.KernelDestroy = destroy;
  op->op.CreateKernelV2 = create_kernel;
  op->op.KernelComputeV2 = compute_api;
  op->op.InferOutputShapeFn = infer_shape;
}

/* What ORT's register_custom_ops_library calls. The domain is never released: sessions refer to it while they live. */
OrtStatus *ORT_API_CALL RegisterCustomOps(OrtSessionOptions *options, const OrtApiBase *base) {
  api = base->GetApi(BIT_ORT_API);
  if (!api) return NULL; /* an ORT older than 1.17 can't say why; the session then finds no kernel for the ops */
  OrtCustomOpDomain *domain;
  RETURN_IF(api->CreateCustomOpDomain("bit_trt", &domain));
  for (int i = 0; i < 3; i++) {
    describe(&ops[i], (enum Input)i);
    RETURN_IF(api->CustomOpDomain_Add(domain, &ops[i].op));
  }
  return api->AddCustomOpDomain(options, domain);
}

/* The source's digest, written in by engine/ort_kernel_library.py when it builds: which source this library is. */
#ifndef BIT_SOURCE_SHA256
#define BIT_SOURCE_SHA256 "unknown"
#endif
const char bit_trt_kernel_source_sha256[] = BIT_SOURCE_SHA256;
