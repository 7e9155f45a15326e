// CUDA RoPE and causal GQA flash attention (kernels/cuda/attention.cu) against the CPU oracle
// (kernels/cpu/attention.h, T = float) on the same bf16-rounded inputs. Without a device the tests
// skip.
//
// Every "=" output (out, lse, dqkv) is poisoned with NaN before each call, so an element the kernel
// forgets fails; every op runs twice and the two results must be bitwise equal.
//
// Tolerances (bf16 has 8 significand bits: unit roundoff u = 2^-8 ≈ 3.9e-3):
//   RoPE: the GPU rounds the fp32 rotation of the same inputs once to bf16, so
//     |gpu − cpu| <= 5e-3·|cpu| + 1e-6 (u, plus fp32 noise for values near 0); v columns bitwise.
//   out:  out = Σ_s bf16(p_s) v_s / l, rounded to bf16: error <= u·Σ_s p_s|v_s| + u·|out|, so
//     |gpu − cpu| <= 1e-2·A + 1e-5 with A = Σ_s p_s|v_s| (>= |out|; 1e-2 > 2u).
//   lse:  fp32 throughout (scores of bf16 inputs, fp32 sums): |gpu − cpu| <= 1e-4·(1 + |cpu|).
//   dqkv: every product takes one bf16 rounding of p or ds (u) and the result one more (u), so
//     |gpu − cpu| <= 1e-2·A + 1e-4 with A the same sum over absolute values (dq: scale·Σ|ds||k|,
//     dk: scale·Σ|ds||q|, dv: Σ p|dout|, computed in double). The 1e-4 covers the fp32 rounding of
//     dp − D where it cancels exactly (e.g. ds of row 0 is 0 in exact arithmetic); real values are
//     O(0.1..1).
// The backward gets the same inputs on both sides: the CPU forward's out (rounded to bf16) and lse.
//
// Shapes (B = 2 unless noted; a covering subset, not the cross product): every head dim (32, 64,
// 128) with T = 1 and T = 130 (3 key tiles, not a multiple of any tile) and with each of (nh, nkv)
// = (4,4), (4,2), (6,1); T = 37 and 64 (exactly one tile) at 64 and 128; B = 1, T = 300 at hd 64.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tests/catch.h"
#include "tests/cuda_test_util.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "base/error.h"
#include "kernels/cpu/ops.h"

namespace {

namespace cpu = unipool::cpu;
namespace cuda = unipool::cuda;
using namespace unipool::test;

struct Shape {
  int B, T, nh, nkv, hd;
  int C() const { return (nh + 2 * nkv) * hd; }
  size_t qkv_size() const { return size_t(B) * T * C(); }
  size_t out_size() const { return size_t(B) * T * nh * hd; }
  size_t lse_size() const { return size_t(B) * nh * T; }
};

const Shape kShapes[] = {
    {2, 1, 4, 4, 32},  {2, 37, 4, 2, 32},  {2, 130, 6, 1, 32}, {2, 1, 6, 1, 64},
    {2, 37, 4, 2, 64}, {2, 64, 6, 1, 64},  {2, 130, 4, 4, 64}, {1, 300, 4, 2, 64},
    {2, 1, 4, 2, 128}, {2, 37, 4, 4, 128}, {2, 64, 6, 1, 128}, {2, 130, 4, 2, 128},
};

// The sums of absolute values that bound the rounding of the GPU results (see the header), in
// double from the same bf16 inputs:
//   out_abs[t, h·hd+i]   = Σ_{s<=t} p_s |v_s,i|
//   dqkv_abs q columns   = scale · Σ_s |ds_s| |k_s,i|
//   dqkv_abs k columns   = scale · Σ_{h∈g} Σ_{t>=s} |ds_s| |q_t,i|
//   dqkv_abs v columns   = Σ_{h∈g} Σ_{t>=s} p_s |dout_t,i|
// with p_s = softmax, ds_s = p_s (dout_t·v_s − dout_t·out_t) (out: the bf16 out given).
struct AbsScales {
  std::vector<float> out, dqkv;
};
AbsScales abs_scales(const Shape& sh, const std::vector<float>& qkv, const std::vector<float>& out,
                     const std::vector<float>& dout) {
  const int C = sh.C(), Cout = sh.nh * sh.hd, hd = sh.hd, rep = sh.nh / sh.nkv;
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> oa(sh.out_size(), 0.0), da(sh.qkv_size(), 0.0);
  std::vector<double> z, p, ds;
  for (int b = 0; b < sh.B; ++b) {
    const size_t r0 = size_t(b) * sh.T;
    for (int h = 0; h < sh.nh; ++h) {
      const int g = h / rep;
      const int qc = h * hd, kc = (sh.nh + g) * hd, vc = (sh.nh + sh.nkv + g) * hd;
      for (int t = 0; t < sh.T; ++t) {
        const float* q = &qkv[(r0 + t) * C + qc];
        const float* o = &out[(r0 + t) * Cout + qc];
        const float* go = &dout[(r0 + t) * Cout + qc];
        z.assign(size_t(t) + 1, 0.0);
        for (int s = 0; s <= t; ++s) {
          const float* k = &qkv[(r0 + s) * C + kc];
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += double(q[i]) * k[i];
          z[s] = dot * scale;
        }
        const double m = *std::max_element(z.begin(), z.end());
        double sum = 0;
        for (double x : z) sum += std::exp(x - m);
        const double lse = m + std::log(sum);
        double D = 0;
        for (int i = 0; i < hd; ++i) D += double(go[i]) * o[i];
        for (int s = 0; s <= t; ++s) {
          const float* k = &qkv[(r0 + s) * C + kc];
          const float* v = &qkv[(r0 + s) * C + vc];
          const double ps = std::exp(z[s] - lse);
          double dp = 0;
          for (int i = 0; i < hd; ++i) dp += double(go[i]) * v[i];
          const double ads = std::fabs(ps * (dp - D));
          double* oa_t = &oa[(r0 + t) * Cout + qc];
          double* dq_t = &da[(r0 + t) * C + qc];
          double* dk_s = &da[(r0 + s) * C + kc];
          double* dv_s = &da[(r0 + s) * C + vc];
          for (int i = 0; i < hd; ++i) {
            oa_t[i] += ps * std::fabs(v[i]);
            dq_t[i] += scale * ads * std::fabs(k[i]);
            dk_s[i] += scale * ads * std::fabs(q[i]);
            dv_s[i] += ps * std::fabs(go[i]);
          }
        }
      }
    }
  }
  return {std::vector<float>(oa.begin(), oa.end()), std::vector<float>(da.begin(), da.end())};
}

std::string shape_name(const Shape& s) {
  return "B " + std::to_string(s.B) + " T " + std::to_string(s.T) + " nh " + std::to_string(s.nh) +
         " nkv " + std::to_string(s.nkv) + " hd " + std::to_string(s.hd);
}

// Random qkv in [-2, 2) rounded to bf16 (scores with some spread: the softmax is not flat).
std::vector<float> random_qkv(const Shape& s, uint32_t seed) {
  return bf16_values(s.qkv_size(), seed, 2.0);
}

struct ForwardResult {
  std::vector<bf16> out;
  std::vector<float> lse;
};
ForwardResult gpu_forward(const Shape& s, const DeviceBuffer<bf16>& qkv) {
  DeviceBuffer<bf16> out = poisoned_bf16(s.out_size());
  DeviceBuffer<float> lse = poisoned_floats(s.lse_size());
  cuda::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.nh, s.nkv, s.hd);
  return {out.to_host(), lse.to_host()};
}

}  // namespace

TEST_CASE("cuda rope forward and backward match the CPU op, v columns untouched", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const Shape shapes[] = {{2, 37, 4, 2, 64}, {1, 1, 6, 1, 32}, {2, 130, 4, 4, 128}};
  for (const Shape& s : shapes) {
    INFO(shape_name(s));
    const int half = s.hd / 2;
    std::vector<float> cos_t(size_t(s.T) * half), sin_t(cos_t.size());
    cpu::rope_tables(cos_t.data(), sin_t.data(), s.T, s.hd, 10000.0);
    DeviceBuffer<float> d_cos(cos_t), d_sin(sin_t);
    const std::vector<float> x = bf16_values(s.qkv_size(), 7u + uint32_t(s.T));

    for (const bool backward : {false, true}) {
      INFO((backward ? "rope_backward" : "rope_forward"));
      std::vector<float> ref = x;
      if (backward) {
        cpu::rope_backward(ref.data(), cos_t.data(), sin_t.data(), s.B, s.T, s.nh, s.nkv, s.hd);
      } else {
        cpu::rope_forward(ref.data(), cos_t.data(), sin_t.data(), s.B, s.T, s.nh, s.nkv, s.hd);
      }
      std::vector<std::vector<bf16>> runs;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<bf16> d_x = upload_bf16(x);
        if (backward) {
          cuda::rope_backward(d_x.data(), d_cos.data(), d_sin.data(), s.B, s.T, s.nh, s.nkv, s.hd);
        } else {
          cuda::rope_forward(d_x.data(), d_cos.data(), d_sin.data(), s.B, s.T, s.nh, s.nkv, s.hd);
        }
        runs.push_back(d_x.to_host());
      }
      CHECK(bitwise_equal(runs[0], runs[1]));
      const std::vector<float> got = from_bf16(runs[0]);
      // q and k columns against the CPU op; v columns must be the input, bit for bit
      const int C = s.C(), rot = (s.nh + s.nkv) * s.hd;
      std::vector<float> got_qk, ref_qk;
      int v_changed = 0;
      for (size_t r = 0; r < size_t(s.B) * s.T; ++r) {
        for (int c = 0; c < C; ++c) {
          const size_t i = r * C + c;
          if (c < rot) {
            got_qk.push_back(got[i]);
            ref_qk.push_back(ref[i]);
          } else if (std::memcmp(&got[i], &x[i], sizeof(float)) != 0) {
            ++v_changed;
          }
        }
      }
      expect_close(got_qk, ref_qk, "rotated q/k", 5e-3, 1e-6);
      CHECK(v_changed == 0);
    }
  }
}

TEST_CASE("cuda attention forward matches the CPU op and is bitwise reproducible", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    INFO(shape_name(s));
    const std::vector<float> qkv = random_qkv(s, 100u + uint32_t(s.T * 7 + s.hd + s.nkv));
    std::vector<float> out_ref(s.out_size()), lse_ref(s.lse_size());
    cpu::attention_forward(out_ref.data(), lse_ref.data(), qkv.data(), s.B, s.T, s.nh, s.nkv, s.hd);
    const std::vector<float> dout_unused(s.out_size(), 0.0f);
    const AbsScales a = abs_scales(s, qkv, out_ref, dout_unused);

    DeviceBuffer<bf16> d_qkv = upload_bf16(qkv);
    const ForwardResult first = gpu_forward(s, d_qkv);
    const ForwardResult second = gpu_forward(s, d_qkv);
    CHECK(bitwise_equal(first.out, second.out));
    CHECK(bitwise_equal(first.lse, second.lse));

    expect_close(from_bf16(first.out), out_ref, "out", 1e-2, 1e-5, &a.out);
    std::vector<float> lse_scale(lse_ref.size());
    for (size_t i = 0; i < lse_ref.size(); ++i) lse_scale[i] = 1.0f + std::fabs(lse_ref[i]);
    expect_close(first.lse, lse_ref, "lse", 1e-4, 0.0, &lse_scale);
  }
}

TEST_CASE("cuda attention backward matches the CPU op and is bitwise reproducible", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    INFO(shape_name(s));
    const std::vector<float> qkv = random_qkv(s, 200u + uint32_t(s.T * 7 + s.hd + s.nkv));
    const std::vector<float> dout = bf16_values(s.out_size(), 300u + uint32_t(s.T + s.hd));
    std::vector<float> out(s.out_size()), lse(s.lse_size());
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.nh, s.nkv, s.hd);
    out = round_to_bf16(out);  // the GPU's out is bf16: both sides get the same one

    std::vector<float> dqkv_ref(s.qkv_size());
    cpu::attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B,
                            s.T, s.nh, s.nkv, s.hd);
    const AbsScales a = abs_scales(s, qkv, out, dout);

    DeviceBuffer<bf16> d_qkv = upload_bf16(qkv), d_dout = upload_bf16(dout),
                       d_out = upload_bf16(out);
    DeviceBuffer<float> d_lse(lse);
    std::vector<std::vector<bf16>> runs;
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer<bf16> d_dqkv = poisoned_bf16(s.qkv_size());
      cuda::attention_backward(d_dqkv.data(), d_dout.data(), d_qkv.data(), d_out.data(),
                               d_lse.data(), s.B, s.T, s.nh, s.nkv, s.hd);
      runs.push_back(d_dqkv.to_host());
    }
    CHECK(bitwise_equal(runs[0], runs[1]));
    expect_close(from_bf16(runs[0]), dqkv_ref, "dqkv", 1e-2, 1e-4, &a.dqkv);
  }
}

TEST_CASE("cuda attention rejects unsupported head dims naming the value", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (const int hd : {48, 96, 256}) {
    INFO("hd " << hd);
    bool threw = false;
    try {
      cuda::attention_forward(nullptr, nullptr, nullptr, 1, 4, 2, 1, hd);
    } catch (const unipool::Error& e) {
      threw = true;
      CHECK(std::string(e.what()).find(std::to_string(hd)) != std::string::npos);
    }
    CHECK(threw);
    threw = false;
    try {
      cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4, 2, 1, hd);
    } catch (const unipool::Error& e) {
      threw = true;
      CHECK(std::string(e.what()).find(std::to_string(hd)) != std::string::npos);
    }
    CHECK(threw);
  }
}

// Decoding: the last row's query against the K/V columns of all T rows (ld = C, the qkv row
// stride, so the cache rows are strided as in the model's cache rows are packed: both work). The
// GPU sums in fp32 and rounds out once to bf16: |gpu − cpu| <= 5e-3·A + 1e-5 with A = Σ_s p_s|v_s|
// of that row (u = 3.9e-3 of the rounding, plus fp32 noise). Any head dim (the generator's tests
// use hd 8).
TEST_CASE("cuda attention_decode matches the CPU op and is bitwise reproducible", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const Shape shapes[] = {{1, 1, 4, 4, 8},    {1, 24, 4, 2, 8},   {1, 37, 4, 2, 32},
                          {1, 130, 6, 1, 64}, {1, 300, 4, 4, 64}, {1, 64, 4, 2, 128}};
  for (const Shape& s : shapes) {
    INFO(shape_name(s));
    const int C = s.C(), Cout = s.nh * s.hd, kv = s.nkv * s.hd;
    const std::vector<float> qkv = random_qkv(s, 400u + uint32_t(s.T * 7 + s.hd + s.nkv));
    const float* last = qkv.data() + size_t(s.T - 1) * C;
    std::vector<float> ref(Cout), scratch(size_t(s.nh) * (s.T + 16));
    cpu::attention_decode(ref.data(), last, qkv.data() + Cout, qkv.data() + Cout + kv, C, s.T,
                          s.nh, s.nkv, s.hd, scratch.data());
    // The CPU decode row is attention_forward's last row (tests/test_generator.cpp checks that);
    // the bound's A comes from the full forward's scales.
    std::vector<float> out(s.out_size()), lse(s.lse_size());
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.nh, s.nkv, s.hd);
    const AbsScales a = abs_scales(s, qkv, out, std::vector<float>(s.out_size(), 0.0f));
    const std::vector<float> a_last(a.out.end() - Cout, a.out.end());

    DeviceBuffer<bf16> d_qkv = upload_bf16(qkv);
    const bf16* d_last = d_qkv.data() + size_t(s.T - 1) * C;
    std::vector<std::vector<bf16>> runs;
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer<bf16> d_out = poisoned_bf16(size_t(Cout));
      DeviceBuffer<float> d_scratch = poisoned_floats(scratch.size());
      cuda::attention_decode(d_out.data(), d_last, d_qkv.data() + Cout, d_qkv.data() + Cout + kv,
                             C, s.T, s.nh, s.nkv, s.hd, d_scratch.data());
      runs.push_back(d_out.to_host());
    }
    CHECK(bitwise_equal(runs[0], runs[1]));
    expect_close(from_bf16(runs[0]), ref, "out", 5e-3, 1e-5, &a_last);
  }
}

#endif  // UNIPOOL_HAVE_CUDA
