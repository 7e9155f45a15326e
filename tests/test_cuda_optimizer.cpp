// CUDA optimizer ops (kernels/cuda/optimizer.cu) against the CPU optimizer (engine/optimizer.h,
// T = float) on the small layouts of tests/small_layouts.h. Without a device (or without nvcc) the
// tests skip.
//
// The arenas' alignment gaps between tensors hold NaN in the gradients and sentinel values in the
// weights and moments: the GPU must neither read them (the norm would be NaN) nor write them.
// Tolerances:
//   - grad_sum_squares: 1e-12 relative (both add exact double squares, in different orders);
//   - adamw_step: the GPU does the CPU's float operations in the same order; only FMA contraction
//     may differ (nvcc and gcc fuse differently), so each of m, v, θ is within 1e-6 (~16 ulp) of
//     the CPU relative to the sum of its terms' magnitudes (|β·m| + |(1−β)·g|, ...,
//     |θ·decay| + |lr·m̂/(sqrt(v̂)+eps)|);
//   - the bf16 copy: bitwise bf16(θ) of the GPU's updated θ; the conversions: bitwise the host's.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tests/catch.h"
#include "tests/cuda_test_util.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cpu/ops.h"
#include "model/layout.h"
#include "tests/small_layouts.h"

namespace {

using unipool::AdamWParams;
using unipool::Layout;
using unipool::ParamTensor;
namespace cuda = unipool::cuda;
using namespace unipool::test;

// in_tensor[i]: element i of the arena belongs to a tensor (else it is alignment padding).
std::vector<bool> tensor_mask(const Layout& layout) {
  std::vector<bool> in(size_t(layout.arena_size), false);
  for (const ParamTensor& t : layout.tensors) {
    for (int64_t i = 0; i < t.numel; ++i) in[size_t(t.offset + i)] = true;
  }
  return in;
}

// Random arena values with `gap` in the padding.
FVec arena_values(const Layout& layout, uint32_t seed, double scale, float gap) {
  FVec v = random_floats(size_t(layout.arena_size), seed, scale);
  const std::vector<bool> in = tensor_mask(layout);
  for (size_t i = 0; i < v.size(); ++i) {
    if (!in[i]) v[i] = gap;
  }
  return v;
}

void check_grad_norm(const Layout& layout, uint32_t seed) {
  const FVec grads = arena_values(layout, seed, 0.3, std::numeric_limits<float>::quiet_NaN());
  DeviceBuffer<float> d_grads(grads);
  const double want = unipool::cpu::grad_sum_squares<float>(layout.optimizer_table, grads.data());
  const double got = cuda::grad_sum_squares(layout.optimizer_table, d_grads.data());
  const double again = cuda::grad_sum_squares(layout.optimizer_table, d_grads.data());
  INFO("gpu " << got << " cpu " << want);
  CHECK(std::isfinite(got));
  CHECK(std::fabs(got - want) <= 1e-12 * want);
  CHECK(got == again);  // bitwise reproducible
}

}  // namespace

TEST_CASE("cuda grad_sum_squares matches the CPU norm", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const Layout a = unipool_layout(), b = dense_layout();
  INFO("arena sizes " << a.arena_size << " and " << b.arena_size);
  check_grad_norm(a, 101);
  check_grad_norm(b, 102);  // another layout: the chunk table is rebuilt
  check_grad_norm(a, 103);
  SECTION("an empty layout has sum 0") {
    Layout empty;
    CHECK(cuda::grad_sum_squares(empty.optimizer_table, nullptr) == 0.0);
  }
}

TEST_CASE("cuda adamw_step matches the CPU step and writes the bf16 copy", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (const Layout& layout : {unipool_layout(), dense_layout()}) {
    const size_t n = size_t(layout.arena_size);
    INFO("arena size " << n);
    AdamWParams optim;
    optim.weight_decay = 0.1;
    const int step = 3;
    const double lr = 1e-3, grad_scale = 0.7;
    optim.step = step;
    optim.lr = lr;
    optim.grad_scale = grad_scale;
    const float sentinel = 12345.f;
    const FVec p0 = arena_values(layout, 111, 0.05, sentinel);
    FVec g = arena_values(layout, 112, 0.02, std::numeric_limits<float>::quiet_NaN());
    const ParamTensor& zero_grad = layout.tensors[1];  // an unused tensor still moves
    std::fill(g.begin() + zero_grad.offset, g.begin() + zero_grad.offset + zero_grad.numel, 0.f);
    const FVec m0 = arena_values(layout, 113, 1e-3, sentinel);
    FVec v0 = arena_values(layout, 114, 1e-5, sentinel);
    for (float& x : v0) x = std::fabs(x);

    FVec p_ref = p0, m_ref = m0, v_ref = v0;
    unipool::cpu::adamw_step<float>(layout.optimizer_table, p_ref.data(), g.data(), m_ref.data(),
                                    v_ref.data(), nullptr, optim);

    DeviceBuffer<float> d_p(p0), d_g(g), d_m(m0), d_v(v0);
    DeviceBuffer<bf16> d_copy = poisoned_bf16(n);
    cuda::adamw_step(layout.optimizer_table, d_p.data(), d_g.data(), d_m.data(), d_v.data(),
                     d_copy.data(), optim);
    const FVec p = d_p.to_host(), m = d_m.to_host(), v = d_v.to_host();
    const std::vector<bf16> copy = d_copy.to_host();

    // Scales: the magnitudes of each update's terms (see the file comment).
    const float b1 = float(optim.beta1), b2 = float(optim.beta2);
    const double bias1 = 1.0 - std::pow(optim.beta1, step),
                 bias2 = 1.0 - std::pow(optim.beta2, step);
    FVec p_scale(n, 0.f), m_scale(n, 0.f), v_scale(n, 0.f);
    for (const ParamTensor& t : layout.tensors) {
      const double decay = t.decay ? 1.0 - lr * optim.weight_decay : 1.0;
      for (int64_t k = 0; k < t.numel; ++k) {
        const size_t i = size_t(t.offset + k);
        const double grad = double(g[i]) * grad_scale;
        m_scale[i] = float(std::fabs(b1 * m0[i]) + std::fabs((1 - b1) * grad));
        v_scale[i] = float(std::fabs(b2 * v0[i]) + (1 - b2) * grad * grad);
        const double upd =
            lr * std::fabs(m_ref[i] / bias1) / (std::sqrt(v_ref[i] / bias2) + optim.eps);
        p_scale[i] = float(std::fabs(p0[i] * decay) + upd);
      }
    }
    // Whole arenas: the padding must still hold the sentinel (equal to the CPU's untouched values).
    expect_close(p, p_ref, "params", 1e-6, 0, &p_scale);
    expect_close(m, m_ref, "m", 1e-6, 0, &m_scale);
    expect_close(v, v_ref, "v", 1e-6, 0, &v_scale);

    // The copy: bf16 of the updated weights on every tensor element; the padding stays poisoned.
    const std::vector<bool> in = tensor_mask(layout);
    const FVec copy_f = from_bf16(copy);
    int bad_copy = 0, touched_gap = 0;
    for (size_t i = 0; i < n; ++i) {
      if (in[i]) {
        bad_copy += !bitwise_equal(std::vector<bf16>{copy[i]},
                                   std::vector<bf16>{cuda::float_to_bf16(p[i])});
      } else {
        touched_gap += !std::isnan(copy_f[i]);
      }
    }
    CHECK(bad_copy == 0);
    CHECK(touched_gap == 0);

    // Without the copy, and again from the same state: the same bits.
    d_p.copy_from_host(p0);
    d_m.copy_from_host(m0);
    d_v.copy_from_host(v0);
    cuda::adamw_step(layout.optimizer_table, d_p.data(), d_g.data(), d_m.data(), d_v.data(),
                     nullptr, optim);
    CHECK(bitwise_equal(d_p.to_host(), p));
    CHECK(bitwise_equal(d_m.to_host(), m));
    CHECK(bitwise_equal(d_v.to_host(), v));
  }
}

TEST_CASE("cuda float_to_bf16_copy and bf16_to_float_copy equal the host conversions", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  FVec x = random_floats(100003, 121, 50.0);
  const float inf = std::numeric_limits<float>::infinity();
  // zeros, denormals, near-max values (one rounds to inf), inf, ties to even (down, up)
  const float specials[] = {0.f,     -0.f, 1e-40f,      -3e-39f,    3.0e38f,
                            3.4e38f, -inf, 1.00390625f, 1.01171875f};
  for (size_t i = 0; i < sizeof specials / sizeof specials[0]; ++i) x[i * 7] = specials[i];
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(3), int64_t(4), int64_t(100002)}) {
    for (int shift : {0, 1}) {  // shift 1: unaligned pointers (the scalar path)
      INFO("n " << n << " shift " << shift);
      DeviceBuffer<float> d_x(x);
      DeviceBuffer<bf16> d_b = poisoned_bf16(x.size());
      cuda::float_to_bf16_copy(d_b.data() + shift, d_x.data() + shift, n);
      const std::vector<bf16> b = d_b.to_host();
      int bad = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const bool inside = int64_t(i) >= shift && int64_t(i) < shift + n;
        const float got = cuda::bf16_to_float(b[i]);
        if (inside) {
          const float want = cuda::bf16_to_float(cuda::float_to_bf16(x[i]));
          bad += !bitwise_equal(FVec{got}, FVec{want});
        } else {
          bad += !std::isnan(got);  // outside [shift, shift + n): untouched
        }
      }
      CHECK(bad == 0);

      DeviceBuffer<float> d_f = poisoned_floats(x.size());
      cuda::bf16_to_float_copy(d_f.data() + shift, d_b.data() + shift, n);
      const FVec f = d_f.to_host();
      bad = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const bool inside = int64_t(i) >= shift && int64_t(i) < shift + n;
        if (inside) {
          bad += !bitwise_equal(FVec{f[i]}, FVec{cuda::bf16_to_float(b[i])});
        } else {
          bad += !std::isnan(f[i]);
        }
      }
      CHECK(bad == 0);
    }
  }
}

#else
TEST_CASE("cuda optimizer: not built (no nvcc at configure time)", "[cuda]") {
  WARN("the CUDA backend was not compiled (nvcc not found): GPU optimizer tests skipped");
}
#endif
