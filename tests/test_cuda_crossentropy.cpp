// CUDA fused cross-entropy (kernels/cuda/crossentropy.cu) against the CPU oracle
// (kernels/cpu/crossentropy.h, T = float, on the same bf16-rounded logits). Without a device (or
// without nvcc) the tests skip.
//
// Tolerances:
//   - losses: |gpu − cpu| <= 1e-6·|cpu| + 3e-5. The GPU sums exp in fp32 (threads in chunk order,
//     then a fixed tree), the CPU in double: relative error of the sum <~ 1e-5 in the worst case,
//     so <~ 1e-5 absolute in log Σ; plus the final rounding of losses up to ~150 to fp32
//     (ulp 1.5e-5);
//   - dlogits (bf16): |gpu − cpu| <= 4e-3·max(|cpu|, scale) + 1e-30, 4e-3 = 2 × the bf16 rounding;
//     scale = |dloss| for the target column, where softmax·dloss − dloss cancels (the fp32 error of
//     the softmax term is relative to dloss there), |cpu| elsewhere.
// Every run is repeated and must be bitwise identical; with dloss = 0 the logits must be bitwise
// untouched; the scalar path (V not a multiple of 8, or unaligned logits) is covered, and must give
// the vector path's bits on the same row.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "tests/catch.h"
#include "tests/cuda_test_util.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cpu/ops.h"

namespace {

namespace cuda = unipool::cuda;
namespace cpu = unipool::cpu;
using namespace unipool::test;

struct Problem {
  FVec logits;  // [rows, V], bf16-rounded
  std::vector<int32_t> targets;
};

// Logits with large ranges, bf16-rounded. Row r: uniform in ±{1, 30, 60}[r % 3], and by r % 4:
// 1: the target spiked to +80 (confident and right), 2: another column spiked to +80 (confident
// and wrong: loss ~ 80 + ...), 3: a constant row (loss = log V). Targets include 0 and V − 1.
Problem make_problem(int rows, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> col(0, V - 1);
  Problem p;
  p.logits.resize(size_t(rows) * V);
  p.targets.resize(size_t(rows));
  for (int r = 0; r < rows; ++r) {
    const int32_t t = r == 0 ? 0 : r == 1 ? V - 1 : col(gen);
    p.targets[size_t(r)] = t;
    const double range = r % 3 == 0 ? 1.0 : r % 3 == 1 ? 30.0 : 60.0;
    std::uniform_real_distribution<double> u(-range, range);
    float* x = p.logits.data() + size_t(r) * V;
    for (int i = 0; i < V; ++i) x[i] = float(u(gen));
    if (r % 4 == 1) x[t] = 80.f;
    if (r % 4 == 2) x[(t + 1) % V] = 80.f;
    if (r % 4 == 3) std::fill(x, x + V, 5.f);
  }
  p.logits = round_to_bf16(p.logits);
  return p;
}

struct Result {
  FVec losses;
  std::vector<bf16> logits;  // after the call (bits)
};

// One GPU call on a fresh copy of the logits (shift = 1: one element past a 16-byte boundary).
Result run_gpu(const Problem& p, int rows, int V, double dloss, int shift = 0) {
  DeviceBuffer<bf16> d_logits = shifted_copy(to_bf16(p.logits), size_t(shift));
  DeviceBuffer<int32_t> d_targets(p.targets);
  DeviceBuffer<float> d_losses = poisoned_floats(size_t(rows));
  cuda::crossentropy_forward_backward(d_losses.data(), d_logits.data() + shift, d_targets.data(),
                                      rows, V, dloss);
  const std::vector<bf16> after = d_logits.to_host();
  return Result{d_losses.to_host(), unshift(after, size_t(shift))};
}

void check_against_cpu(int rows, int V, double dloss, uint32_t seed) {
  INFO("rows " << rows << " V " << V << " dloss " << dloss);
  const Problem p = make_problem(rows, V, seed);
  FVec losses_ref(static_cast<size_t>(rows)), grad_ref = p.logits;
  cpu::crossentropy_forward_backward(losses_ref.data(), grad_ref.data(), p.targets.data(), rows, V,
                                     dloss);

  const Result first = run_gpu(p, rows, V, dloss), second = run_gpu(p, rows, V, dloss);
  CHECK(bitwise_equal(first.losses, second.losses));
  CHECK(bitwise_equal(first.logits, second.logits));
  expect_close(first.losses, losses_ref, "losses", 1e-6, 3e-5);

  if (dloss == 0.0) {
    CHECK(bitwise_equal(first.logits, to_bf16(p.logits)));  // untouched
    return;
  }
  FVec scale(grad_ref.size());
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < V; ++i) {
      const size_t k = size_t(r) * V + i;
      scale[k] = i == p.targets[size_t(r)] ? float(std::fabs(dloss)) : std::fabs(grad_ref[k]);
    }
  }
  expect_close(from_bf16(first.logits), grad_ref, "dlogits", 4e-3, 1e-30, &scale);
  // Each row of (softmax − onehot)·dloss sums to ~0 (a bug in the one-hot or the scale breaks it).
  const FVec grad = from_bf16(first.logits);
  for (int r = 0; r < rows; ++r) {
    double s = 0, sabs = 0;
    for (int i = 0; i < V; ++i) {
      s += grad[size_t(r) * V + i];
      sabs += std::fabs(grad[size_t(r) * V + i]);
    }
    // + 2.4e-7·|dloss|: the target entry dloss·(p_t − 1) is formed in fp32, where p_t rounds to 1
    // when the row is peaked (then the other entries' mass, ~ε·dloss, is the whole row sum).
    CHECK(std::fabs(s) <= 4e-3 * sabs + 2.4e-7 * std::fabs(dloss) + 1e-12);
  }
}

}  // namespace

TEST_CASE("cuda crossentropy matches the CPU op at the padded vocabulary", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int rows : {1, 37}) {
    check_against_cpu(rows, 50304, 0.0, 71u + uint32_t(rows));
    check_against_cpu(rows, 50304, 1.0 / 37, 72u + uint32_t(rows));
    check_against_cpu(rows, 50304, -0.5, 73u + uint32_t(rows));
  }
}

TEST_CASE("cuda crossentropy matches the CPU op at small and odd vocabularies", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int rows : {1, 37}) {
    for (int V : {1000, 1003, 5}) {  // 1003, 5: the scalar path (V not a multiple of 8)
      check_against_cpu(rows, V, 0.0, 81u + uint32_t(rows + V));
      check_against_cpu(rows, V, 0.7, 82u + uint32_t(rows + V));
    }
  }
}

TEST_CASE("cuda crossentropy: unaligned logits give the aligned path's bits", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const int rows = 9, V = 50304;
  const Problem p = make_problem(rows, V, 91);
  for (double dloss : {0.0, 0.25}) {
    const Result aligned = run_gpu(p, rows, V, dloss, 0);
    const Result shifted = run_gpu(p, rows, V, dloss, 1);
    CHECK(bitwise_equal(aligned.losses, shifted.losses));
    CHECK(bitwise_equal(aligned.logits, shifted.logits));
  }
}

TEST_CASE("cuda crossentropy with 0 rows is a no-op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  DeviceBuffer<float> d_losses(FVec(3, 2.f));
  cuda::crossentropy_forward_backward(d_losses.data(), nullptr, nullptr, 0, 50304, 1.0);
  CHECK(d_losses.to_host() == FVec(3, 2.f));
}

#else
TEST_CASE("cuda crossentropy: not built (no nvcc at configure time)", "[cuda]") {
  WARN("the CUDA backend was not compiled (nvcc not found): GPU crossentropy tests skipped");
}
#endif
