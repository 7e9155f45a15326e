// Tests for kernels/cpu/attention.h: RoPE and causal GQA attention, forward and backward.
#include "kernels/cpu/ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "tests/catch.h"
#include "tests/fd.h"

namespace {

using unipool::test::random_vector;
namespace cpu = unipool::cpu;

struct Shape {
  int B, Tlen, nh, nkv, hd;
  int C() const { return (nh + 2 * nkv) * hd; }
  size_t qkv_size() const { return static_cast<size_t>(B) * Tlen * C(); }
  size_t out_size() const { return static_cast<size_t>(B) * Tlen * nh * hd; }
  size_t lse_size() const { return static_cast<size_t>(B) * nh * Tlen; }
};

template <typename To, typename From>
std::vector<To> cast_vector(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

// Reference: materialises each full softmax row, in double.
void naive_attention(std::vector<double>& out, std::vector<double>& lse,
                     const std::vector<double>& qkv, const Shape& s) {
  const int C = s.C(), rep = s.nh / s.nkv;
  out.assign(s.out_size(), 0.0);
  lse.assign(s.lse_size(), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.hd));
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.nh; ++h) {
      const int g = h / rep;
      for (int t = 0; t < s.Tlen; ++t) {
        const double* q = &qkv[(static_cast<size_t>(b) * s.Tlen + t) * C + h * s.hd];
        std::vector<double> z(t + 1);
        for (int j = 0; j <= t; ++j) {
          const double* k = &qkv[(static_cast<size_t>(b) * s.Tlen + j) * C + (s.nh + g) * s.hd];
          double dot = 0;
          for (int i = 0; i < s.hd; ++i) dot += q[i] * k[i];
          z[j] = dot * scale;
        }
        const double m = *std::max_element(z.begin(), z.end());
        double sum = 0;
        for (double v : z) sum += std::exp(v - m);
        const double l = m + std::log(sum);
        lse[(static_cast<size_t>(b) * s.nh + h) * s.Tlen + t] = l;
        double* o = &out[(static_cast<size_t>(b) * s.Tlen + t) * s.nh * s.hd + h * s.hd];
        for (int j = 0; j <= t; ++j) {
          const double p = std::exp(z[j] - l);
          const double* v =
              &qkv[(static_cast<size_t>(b) * s.Tlen + j) * C + (s.nh + s.nkv + g) * s.hd];
          for (int i = 0; i < s.hd; ++i) o[i] += p * v[i];
        }
      }
    }
}

// max |a - b| / max |b|
template <typename A, typename Bv>
double normwise_rel_error(const std::vector<A>& a, const std::vector<Bv>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return num / den;
}

template <typename T>
bool all_finite(const std::vector<T>& v) {
  for (T x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

template <typename T>
void forward(std::vector<T>& out, std::vector<T>& lse, const std::vector<T>& qkv, const Shape& s) {
  out.assign(s.out_size(), std::numeric_limits<T>::quiet_NaN());
  lse.assign(s.lse_size(), std::numeric_limits<T>::quiet_NaN());
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.Tlen, s.nh, s.nkv, s.hd);
}

template <typename T>
void backward(std::vector<T>& dqkv, const std::vector<T>& dout, const std::vector<T>& qkv,
              const std::vector<T>& out, const std::vector<T>& lse, const Shape& s) {
  dqkv.assign(s.qkv_size(), std::numeric_limits<T>::quiet_NaN());
  cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.Tlen,
                          s.nh, s.nkv, s.hd);
}

template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace

TEST_CASE("attention forward matches a naive full-softmax reference", "[attention]") {
  const Shape shapes[] = {
      {2, 7, 4, 2, 8}, {2, 33, 4, 2, 8}, {2, 7, 3, 3, 8}, {2, 33, 3, 3, 8}, {1, 100, 2, 1, 64}};
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    INFO("B=" << s.B << " Tlen=" << s.Tlen << " nh=" << s.nh << " nkv=" << s.nkv << " hd=" << s.hd);
    const std::vector<double> qkv = random_vector(s.qkv_size(), seed++, 2.0);
    std::vector<double> ref_out, ref_lse, out, lse;
    naive_attention(ref_out, ref_lse, qkv, s);
    forward(out, lse, qkv, s);
    CHECK(normwise_rel_error(out, ref_out) < 1e-13);
    CHECK(normwise_rel_error(lse, ref_lse) < 1e-13);

    // float against double on the same (float-rounded) inputs, forward and backward
    const std::vector<float> qkv_f = cast_vector<float>(qkv);
    const std::vector<double> qkv_r = cast_vector<double>(qkv_f);
    const std::vector<double> dout = random_vector(s.out_size(), seed++);
    const std::vector<float> dout_f = cast_vector<float>(dout);
    const std::vector<double> dout_r = cast_vector<double>(dout_f);
    std::vector<double> out_d, lse_d, dqkv_d;
    forward(out_d, lse_d, qkv_r, s);
    backward(dqkv_d, dout_r, qkv_r, out_d, lse_d, s);
    std::vector<float> out_f, lse_f, dqkv_f;
    forward(out_f, lse_f, qkv_f, s);
    backward(dqkv_f, dout_f, qkv_f, out_f, lse_f, s);
    CHECK(normwise_rel_error(out_f, out_d) < 1e-5);
    CHECK(normwise_rel_error(lse_f, lse_d) < 1e-5);
    CHECK(normwise_rel_error(dqkv_f, dqkv_d) < 1e-5);
  }
}

TEST_CASE("rope + attention backward matches finite differences", "[attention]") {
  const Shape s{2, 5, 4, 2, 4};
  std::vector<double> cos_t(s.Tlen * s.hd / 2), sin_t(s.Tlen * s.hd / 2);
  cpu::rope_tables(cos_t.data(), sin_t.data(), s.Tlen, s.hd, 1e6);
  std::vector<double> x = random_vector(s.qkv_size(), 11, 1.5);  // pre-RoPE qkv
  const std::vector<double> R = random_vector(s.out_size(), 12);
  std::vector<double> qkv, out, lse;

  auto loss = [&]() {
    qkv = x;
    cpu::rope_forward(qkv.data(), cos_t.data(), sin_t.data(), s.B, s.Tlen, s.nh, s.nkv, s.hd);
    forward(out, lse, qkv, s);
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += out[i] * R[i];
    return l;
  };
  loss();
  std::vector<double> grad;
  backward(grad, R, qkv, out, lse, s);
  cpu::rope_backward(grad.data(), cos_t.data(), sin_t.data(), s.B, s.Tlen, s.nh, s.nkv, s.hd);
  unipool::test::check_gradient(loss, x, grad, "d loss / d qkv", 1000000, 1e-6, 1e-9);
}

TEST_CASE("rope: tables, identity at position 0, backward is the transpose", "[attention]") {
  const Shape s{2, 9, 4, 2, 8};
  const int half = s.hd / 2, C = s.C();
  std::vector<double> cos_t(s.Tlen * half), sin_t(s.Tlen * half);
  cpu::rope_tables(cos_t.data(), sin_t.data(), s.Tlen, s.hd, 1e6);
  // angle(t, i) = t · base^(-2i/hd) with base 1e6
  for (int t = 0; t < s.Tlen; ++t)
    for (int i = 0; i < half; ++i) {
      const double angle = t * std::pow(1e6, -2.0 * i / s.hd);
      CHECK(cos_t[t * half + i] == std::cos(angle));
      CHECK(sin_t[t * half + i] == std::sin(angle));
    }
  CHECK(cos_t[1 * half + 1] == std::cos(std::pow(1e6, -0.25)));  // t=1, i=1, hd=8: 10^-1.5
  std::vector<float> cf(s.Tlen * half), sf(s.Tlen * half);
  cpu::rope_tables(cf.data(), sf.data(), s.Tlen, s.hd, 1e6);
  CHECK(cf[3 * half + 2] == static_cast<float>(std::cos(3 * std::pow(1e6, -0.5))));

  const std::vector<double> x = random_vector(s.qkv_size(), 21);
  const std::vector<double> y = random_vector(s.qkv_size(), 22);
  std::vector<double> rx = x, ry = y;
  cpu::rope_forward(rx.data(), cos_t.data(), sin_t.data(), s.B, s.Tlen, s.nh, s.nkv, s.hd);
  cpu::rope_backward(ry.data(), cos_t.data(), sin_t.data(), s.B, s.Tlen, s.nh, s.nkv, s.hd);
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    lhs += rx[i] * y[i];
    rhs += x[i] * ry[i];
  }
  CHECK(std::fabs(lhs - rhs) <= 1e-12 * std::fabs(lhs) + 1e-12);

  for (int b = 0; b < s.B; ++b)
    for (int t = 0; t < s.Tlen; ++t) {
      const size_t row = (static_cast<size_t>(b) * s.Tlen + t) * C;
      for (int c = 0; c < C; ++c) {
        if (t == 0 || c >= (s.nh + s.nkv) * s.hd) {  // position 0 and the v heads: untouched
          CHECK(rx[row + c] == x[row + c]);
          CHECK(ry[row + c] == y[row + c]);
        }
      }
      // pairs (i, i + hd/2) rotate by the angle: check one q head and one k head explicitly
      for (int head : {1, s.nh + 1}) {
        for (int i = 0; i < half; ++i) {
          const size_t a = row + head * s.hd + i, bb = a + half;
          const double c = cos_t[t * half + i], sn = sin_t[t * half + i];
          CHECK(std::fabs(rx[a] - (x[a] * c - x[bb] * sn)) < 1e-15);
          CHECK(std::fabs(rx[bb] - (x[bb] * c + x[a] * sn)) < 1e-15);
        }
      }
    }
  // backward undoes forward (rotation)
  std::vector<double> back = rx;
  cpu::rope_backward(back.data(), cos_t.data(), sin_t.data(), s.B, s.Tlen, s.nh, s.nkv, s.hd);
  CHECK(normwise_rel_error(back, x) < 1e-14);
}

TEST_CASE("attention is causal", "[attention]") {
  const Shape s{2, 45, 4, 2, 16};
  const int C = s.C();
  const std::vector<double> qkv = random_vector(s.qkv_size(), 31, 2.0);
  const std::vector<float> qkv_f = cast_vector<float>(qkv);
  std::vector<double> out, lse;
  std::vector<float> out_f, lse_f;
  forward(out, lse, qkv, s);
  forward(out_f, lse_f, qkv_f, s);
  for (int t0 : {0, 7, 15, 16, 31, 32, 43}) {
    INFO("t0=" << t0);
    std::vector<double> changed = qkv;
    const std::vector<double> noise = random_vector(s.qkv_size(), 100 + t0, 3.0);
    for (int b = 0; b < s.B; ++b)
      for (int t = t0 + 1; t < s.Tlen; ++t)
        for (int c = 0; c < C; ++c) {
          const size_t i = (static_cast<size_t>(b) * s.Tlen + t) * C + c;
          changed[i] = noise[i];
        }
    const std::vector<float> changed_f = cast_vector<float>(changed);
    std::vector<double> out2, lse2;
    std::vector<float> out2_f, lse2_f;
    forward(out2, lse2, changed, s);
    forward(out2_f, lse2_f, changed_f, s);
    bool same = true, same_f = true, later_changed = false;
    for (int b = 0; b < s.B; ++b)
      for (int t = 0; t < s.Tlen; ++t)
        for (int c = 0; c < s.nh * s.hd; ++c) {
          const size_t i = (static_cast<size_t>(b) * s.Tlen + t) * s.nh * s.hd + c;
          if (t <= t0) {
            same = same && out2[i] == out[i];
            same_f = same_f && out2_f[i] == out_f[i];
          } else {
            later_changed = later_changed || out2[i] != out[i];
          }
        }
    for (int b = 0; b < s.B; ++b)
      for (int h = 0; h < s.nh; ++h)
        for (int t = 0; t <= t0; ++t) {
          const size_t i = (static_cast<size_t>(b) * s.nh + h) * s.Tlen + t;
          same = same && lse2[i] == lse[i];
          same_f = same_f && lse2_f[i] == lse_f[i];
        }
    CHECK(same);
    CHECK(same_f);
    CHECK(later_changed == (t0 + 1 < s.Tlen));
  }
}

TEST_CASE("attention is bitwise independent of the thread count", "[attention]") {
  const Shape shapes[] = {{1, 64, 4, 2, 16}, {2, 37, 6, 2, 64}};
  const int saved = omp_get_max_threads();
  uint32_t seed = 41;
  for (const Shape& s : shapes) {
    INFO("B=" << s.B << " Tlen=" << s.Tlen << " nh=" << s.nh << " nkv=" << s.nkv << " hd=" << s.hd);
    const std::vector<float> qkv = cast_vector<float>(random_vector(s.qkv_size(), seed++, 2.0));
    const std::vector<float> dout = cast_vector<float>(random_vector(s.out_size(), seed++));
    std::vector<float> out[3], lse[3], dqkv[3];
    for (int n = 1; n <= 3; ++n) {
      omp_set_num_threads(n);
      forward(out[n - 1], lse[n - 1], qkv, s);
      backward(dqkv[n - 1], dout, qkv, out[n - 1], lse[n - 1], s);
    }
    omp_set_num_threads(saved);
    for (int n = 1; n < 3; ++n) {
      INFO("threads " << n + 1 << " vs 1");
      CHECK(bitwise_equal(out[n], out[0]));
      CHECK(bitwise_equal(lse[n], lse[0]));
      CHECK(bitwise_equal(dqkv[n], dqkv[0]));
    }
    // and run to run
    std::vector<float> out2, lse2, dqkv2;
    forward(out2, lse2, qkv, s);
    backward(dqkv2, dout, qkv, out2, lse2, s);
    CHECK(bitwise_equal(out2, out[0]));
    CHECK(bitwise_equal(dqkv2, dqkv[0]));
  }
}

TEST_CASE("attention overwrites NaN-poisoned outputs completely", "[attention]") {
  const Shape shapes[] = {{2, 7, 3, 3, 8}, {2, 33, 4, 2, 8}, {1, 50, 4, 1, 64}};
  uint32_t seed = 51;
  for (const Shape& s : shapes) {
    INFO("B=" << s.B << " Tlen=" << s.Tlen << " nh=" << s.nh << " nkv=" << s.nkv << " hd=" << s.hd);
    const std::vector<double> qkv = random_vector(s.qkv_size(), seed++);
    const std::vector<double> dout = random_vector(s.out_size(), seed++);
    // forward() / backward() fill out, lse, dqkv with NaN before calling the kernels
    std::vector<double> out, lse, dqkv;
    forward(out, lse, qkv, s);
    backward(dqkv, dout, qkv, out, lse, s);
    CHECK(all_finite(out));
    CHECK(all_finite(lse));
    CHECK(all_finite(dqkv));
    std::vector<float> out_f, lse_f, dqkv_f;
    const std::vector<float> qkv_f = cast_vector<float>(qkv), dout_f = cast_vector<float>(dout);
    forward(out_f, lse_f, qkv_f, s);
    backward(dqkv_f, dout_f, qkv_f, out_f, lse_f, s);
    CHECK(all_finite(out_f));
    CHECK(all_finite(lse_f));
    CHECK(all_finite(dqkv_f));
  }
}
