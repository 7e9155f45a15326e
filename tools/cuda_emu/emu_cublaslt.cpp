// The cuBLASLt calls of kernels/cuda/matmul.cu, implemented on the CPU against the real
// <cublasLt.h> (so matmul.cu's own plan code runs unchanged: descriptors, column-major layouts,
// transposes, the alignment-keyed algorithm cache, alpha/beta, the workspace).
//
// What it computes: D = alpha·op(A)·op(B) + beta·C, column-major, with fp32 products summed in
// k order in fp32 (compute type CUBLAS_COMPUTE_32F, scale type fp32), operands bf16/fp16/fp32,
// C/D bf16/fp16/fp32 rounded once to nearest even; beta == 0 reads no C (like cuBLAS, so a
// poisoned output does not leak into the result).
//
// What it checks: handles and descriptors come from the Create calls, dimensions agree
// (op(A) m×k, op(B) k×n, C and D m×n), ld >= rows, C and D have the same layout (in place),
// every operand lies inside one device allocation, each pointer is at least as aligned as the
// preference told the heuristic (the algorithm it returned may rely on that), the workspace is
// device memory of the size passed, the stream is a created one. Attributes it does not know are
// reported (extend it here when matmul.cu uses a new one).
//
// What it does NOT model: cuBLASLt's algorithms, their summation order, split-K, tensor-core
// rounding, or its speed. A result of this file equals the GPU's only within bf16 tolerance.
#include <cublasLt.h>

#include <cstring>
#include <vector>

#include "emu_cuda.h"

namespace {

using emu::fail;

constexpr uint64_t kHandleMagic = 0x4C7448616E646C65ull;  // "LtHandle"
constexpr uint64_t kDescMagic = 0x4C74446573635F5Full;
constexpr uint64_t kLayoutMagic = 0x4C744C61796F7574ull;
constexpr uint64_t kPrefMagic = 0x4C74507265665F5Full;
constexpr uint64_t kAlgoMagic = 0x4C74416C676F5F5Full;

struct Handle {
  uint64_t magic = kHandleMagic;
};
struct Desc {
  uint64_t magic = kDescMagic;
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
};
struct Layout {
  uint64_t magic = kLayoutMagic;
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct Pref {
  uint64_t magic = kPrefMagic;
  uint64_t max_workspace = 0;
  uint32_t reduction_mask = 0;
  uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D: cuBLASLt's defaults
};
struct Algo {
  uint64_t magic = kAlgoMagic;
  uint32_t align[4];
};
static_assert(sizeof(Desc) <= sizeof(cublasLtMatmulDescOpaque_t), "");
static_assert(sizeof(Layout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "");
static_assert(sizeof(Pref) <= sizeof(cublasLtMatmulPreferenceOpaque_t), "");
static_assert(sizeof(Algo) <= sizeof(cublasLtMatmulAlgo_t), "");

template <class T, class Opaque>
T* as(Opaque* o, uint64_t magic, const char* what) {
  if (o == nullptr) fail("cuBLASLt: null %s", what);
  T* t = reinterpret_cast<T*>(o->data);
  if (t->magic != magic) fail("cuBLASLt: %s %p was not created by its Create call", what,
                              static_cast<void*>(o));
  return t;
}

size_t element_bytes(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_16BF:
    case CUDA_R_16F:
      return 2;
    case CUDA_R_32F:
      return 4;
    default:
      return 0;
  }
}
const char* type_name(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_16BF:
      return "CUDA_R_16BF";
    case CUDA_R_16F:
      return "CUDA_R_16F";
    case CUDA_R_32F:
      return "CUDA_R_32F";
    default:
      return "an unsupported type";
  }
}

float load(const void* base, cudaDataType_t t, size_t i) {
  switch (t) {
    case CUDA_R_16BF:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    case CUDA_R_16F:
      return __half2float(static_cast<const __half*>(base)[i]);
    default:
      return static_cast<const float*>(base)[i];
  }
}
void store(void* base, cudaDataType_t t, size_t i, float v) {
  switch (t) {
    case CUDA_R_16BF:
      static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v);
      break;
    case CUDA_R_16F:
      static_cast<__half*>(base)[i] = __float2half_rn(v);
      break;
    default:
      static_cast<float*>(base)[i] = v;
      break;
  }
}

uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align >>= 1;
  return align;
}

// The problem the descriptors describe; INVALID_VALUE / NOT_SUPPORTED like cuBLASLt.
struct Problem {
  uint64_t m, n, k;
};
cublasStatus_t check_problem(const Desc& d, const Layout& a, const Layout& b, const Layout& c,
                             const Layout& dl, Problem* p) {
  if (d.compute != CUBLAS_COMPUTE_32F || d.scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  for (const Layout* l : {&a, &b, &c, &dl}) {
    if (element_bytes(l->type) == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (l->ld < int64_t(std::max<uint64_t>(l->rows, 1))) return CUBLAS_STATUS_INVALID_VALUE;
  }
  const uint64_t m = dl.rows, n = dl.cols;
  const uint64_t a_m = d.trans_a == CUBLAS_OP_N ? a.rows : a.cols;
  const uint64_t k = d.trans_a == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t b_k = d.trans_b == CUBLAS_OP_N ? b.rows : b.cols;
  const uint64_t b_n = d.trans_b == CUBLAS_OP_N ? b.cols : b.rows;
  if (a_m != m || b_k != k || b_n != n || c.rows != m || c.cols != n)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (c.type != dl.type || c.ld != dl.ld) return CUBLAS_STATUS_INVALID_VALUE;
  if (a.type != b.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  *p = Problem{m, n, k};
  return CUBLAS_STATUS_SUCCESS;
}

size_t span_bytes(const Layout& l) {  // bytes from the first to one past the last element
  if (l.rows == 0 || l.cols == 0) return 0;
  return (size_t(l.ld) * (l.cols - 1) + l.rows) * element_bytes(l.type);
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = reinterpret_cast<cublasLtHandle_t>(new Handle);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete reinterpret_cast<Handle*>(handle);
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS_(emulated)";
  }
}
const char* cublasLtGetStatusString(cublasStatus_t status) {
  return status == CUBLAS_STATUS_SUCCESS ? "success" : "emulated cuBLASLt error";
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                        cublasComputeType_t compute, cudaDataType_t scale) {
  auto* o = new cublasLtMatmulDescOpaque_t{};
  Desc d;
  d.compute = compute;
  d.scale = scale;
  std::memcpy(o->data, &d, sizeof d);
  *desc = o;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  if (desc != nullptr) as<Desc>(desc, kDescMagic, "matmul descriptor")->magic = 0;
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  Desc* d = as<Desc>(desc, kDescMagic, "matmul descriptor");
  if (buf == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
      if (bytes != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      int32_t op;
      std::memcpy(&op, buf, 4);
      if (op != CUBLAS_OP_N && op != CUBLAS_OP_T)
        fail("cuBLASLt emulation: transpose mode %d (only N and T are emulated)", op);
      (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d->trans_a : d->trans_b) = op;
      return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: {
      if (bytes != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      int32_t t;
      std::memcpy(&t, buf, 4);
      d->scale = cudaDataType_t(t);
      return CUBLAS_STATUS_SUCCESS;
    }
    default:
      fail("cuBLASLt emulation: matmul descriptor attribute %d is not emulated (add it to "
           "tools/cuda_emu/emu_cublaslt.cpp)",
           int(attr));
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  auto* o = new cublasLtMatrixLayoutOpaque_t{};
  Layout l;
  l.type = type;
  l.rows = rows;
  l.cols = cols;
  l.ld = ld;
  std::memcpy(o->data, &l, sizeof l);
  *layout = o;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  if (layout != nullptr) as<Layout>(layout, kLayoutMagic, "matrix layout")->magic = 0;
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  auto* o = new cublasLtMatmulPreferenceOpaque_t{};
  const Pref p;
  std::memcpy(o->data, &p, sizeof p);
  *pref = o;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  if (pref != nullptr) as<Pref>(pref, kPrefMagic, "matmul preference")->magic = 0;
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t bytes) {
  Pref* p = as<Pref>(pref, kPrefMagic, "matmul preference");
  if (buf == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      if (bytes != sizeof(uint64_t)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&p->max_workspace, buf, 8);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
      if (bytes != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&p->reduction_mask, buf, 4);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: {
      if (bytes != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      uint32_t a;
      std::memcpy(&a, buf, 4);
      if (a == 0 || (a & (a - 1)) != 0) return CUBLAS_STATUS_INVALID_VALUE;
      p->align[int(attr) - int(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES)] = a;
      return CUBLAS_STATUS_SUCCESS;
    }
    default:
      fail("cuBLASLt emulation: preference attribute %d is not emulated (add it to "
           "tools/cuda_emu/emu_cublaslt.cpp)",
           int(attr));
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
    cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t results[],
    int* returned) {
  as<Handle>(reinterpret_cast<cublasLtMatmulAlgo_t*>(handle), kHandleMagic, "handle");
  if (requested <= 0) return CUBLAS_STATUS_INVALID_VALUE;
  Problem prob;
  const cublasStatus_t st = check_problem(
      *as<Desc>(desc, kDescMagic, "matmul descriptor"), *as<Layout>(a, kLayoutMagic, "layout A"),
      *as<Layout>(b, kLayoutMagic, "layout B"), *as<Layout>(c, kLayoutMagic, "layout C"),
      *as<Layout>(d, kLayoutMagic, "layout D"), &prob);
  if (st != CUBLAS_STATUS_SUCCESS) {
    *returned = 0;
    return st;
  }
  const Pref* p = as<Pref>(pref, kPrefMagic, "matmul preference");
  cublasLtMatmulHeuristicResult_t r{};
  Algo algo;
  std::memcpy(algo.align, p->align, sizeof algo.align);
  std::memcpy(r.algo.data, &algo, sizeof algo);
  r.workspaceSize = 0;
  r.state = CUBLAS_STATUS_SUCCESS;
  r.wavesCount = 1.0f;
  results[0] = r;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                              const void* alpha_p, const void* A, cublasLtMatrixLayout_t a_desc,
                              const void* B, cublasLtMatrixLayout_t b_desc, const void* beta_p,
                              const void* C, cublasLtMatrixLayout_t c_desc, void* D,
                              cublasLtMatrixLayout_t d_desc, const cublasLtMatmulAlgo_t* algo_p,
                              void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  as<Handle>(reinterpret_cast<cublasLtMatmulAlgo_t*>(handle), kHandleMagic, "handle");
  emu::check_stream(stream, "cublasLtMatmul");
  const Desc& d = *as<Desc>(desc, kDescMagic, "matmul descriptor");
  const Layout& la = *as<Layout>(a_desc, kLayoutMagic, "layout A");
  const Layout& lb = *as<Layout>(b_desc, kLayoutMagic, "layout B");
  const Layout& lc = *as<Layout>(c_desc, kLayoutMagic, "layout C");
  const Layout& ld = *as<Layout>(d_desc, kLayoutMagic, "layout D");
  Problem p;
  const cublasStatus_t st = check_problem(d, la, lb, lc, ld, &p);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  if (algo_p == nullptr) fail("cublasLtMatmul without an algorithm is not emulated");
  const Algo* algo = reinterpret_cast<const Algo*>(algo_p->data);
  if (algo->magic != kAlgoMagic) fail("cublasLtMatmul: the algorithm was not made by the heuristic");
  const void* ptrs[4] = {A, B, C, D};
  const char* names[4] = {"A", "B", "C", "D"};
  for (int i = 0; i < 4; ++i) {
    if (alignment_of(ptrs[i]) < algo->align[i])
      fail("cublasLtMatmul: %s = %p is %u-byte aligned, but the heuristic was told it would be "
           "%u-byte aligned (the algorithm may need that)",
           names[i], ptrs[i], alignment_of(ptrs[i]), algo->align[i]);
  }
  const float alpha = *static_cast<const float*>(alpha_p);
  const float beta = *static_cast<const float*>(beta_p);
  emu::check_device_range(A, span_bytes(la), "cublasLtMatmul A");
  emu::check_device_range(B, span_bytes(lb), "cublasLtMatmul B");
  if (beta != 0.0f) emu::check_device_range(C, span_bytes(lc), "cublasLtMatmul C");
  emu::check_device_range(D, span_bytes(ld), "cublasLtMatmul D");
  if (workspace_bytes > 0) emu::check_device_range(workspace, workspace_bytes, "cuBLASLt workspace");
  emu::note_stream_work(stream);

  const bool ta = d.trans_a != CUBLAS_OP_N, tb = d.trans_b != CUBLAS_OP_N;
  const int64_t m = int64_t(p.m), n = int64_t(p.n), k = int64_t(p.k);
  // op(A)[i,kk] = A[i + kk·lda] (N) or A[kk + i·lda] (T); op(B)[kk,j] likewise. op(A) is first
  // converted to fp32 rows (k contiguous), then each column j of D is an independent k-ordered sum
  // (columns in parallel: the result does not depend on the thread count).
  std::vector<float> op_a(static_cast<size_t>(m * k));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t kk = 0; kk < k; ++kk)
      op_a[size_t(i * k + kk)] = load(A, la.type, size_t(ta ? kk + i * la.ld : i + kk * la.ld));
#pragma omp parallel for schedule(static) if (m * n * k > (int64_t(1) << 22))
  for (int64_t j = 0; j < n; ++j) {
    std::vector<float> b_col(static_cast<size_t>(k));
    for (int64_t kk = 0; kk < k; ++kk)
      b_col[size_t(kk)] = load(B, lb.type, size_t(tb ? j + kk * lb.ld : kk + j * lb.ld));
    for (int64_t i = 0; i < m; ++i) {
      const float* arow = op_a.data() + size_t(i * k);
      float acc = 0.0f;
      for (int64_t kk = 0; kk < k; ++kk) acc += arow[kk] * b_col[size_t(kk)];
      float v = alpha * acc;
      if (beta != 0.0f) v += beta * load(C, lc.type, size_t(i + j * lc.ld));
      store(D, ld.type, size_t(i + j * ld.ld), v);
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
