// The NCCL transport (engine/comm_nccl.h) and its rank-order sum (kernels/cuda/comm_sum.h).
//
// sum_in_rank_order runs wherever the CUDA backend is compiled (and under scripts/cuda_emu.sh).
// The NCCL tests need a build with NCCL: the file rendezvous's timeout runs without a GPU (the
// wait comes before any GPU call); the collectives, on one rank, need a GPU and skip without one.
// Several ranks (one GPU each) are beyond a single-process test.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/fsutil.h"
#include "tests/catch.h"
#include "tests/cuda_test_util.h"
#include "tests/errors.h"
#include "tests/tempdir.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cuda/comm_sum.h"
#endif
#ifdef UNIPOOL_HAVE_NCCL
#include "engine/comm_nccl.h"
#endif

#ifdef UNIPOOL_HAVE_CUDA
using namespace unipool::test;
namespace cuda = unipool::cuda;

// The oracle: out[i] = ((in[0·n+i] + in[1·n+i]) + in[2·n+i]) + …, in float, rank by rank.
static FVec host_sum_in_rank_order(const FVec& in, int ranks, int64_t n) {
  FVec out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    float sum = in[size_t(i)];
    for (int r = 1; r < ranks; ++r) sum += in[size_t(r * n + i)];
    out[size_t(i)] = sum;
  }
  return out;
}

TEST_CASE("sum_in_rank_order: bitwise the host's rank-order sum", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int ranks : {1, 2, 3, 8}) {
    for (int64_t n : {int64_t(1), int64_t(63), int64_t(1000), int64_t(4097)}) {
      INFO("ranks " << ranks << ", n " << n);
      // Values of very different sizes: the order of the additions shows in the rounding.
      FVec in = random_floats(size_t(ranks * n), uint32_t(ranks * 7919 + n), 1.0);
      for (size_t k = 0; k < in.size(); k += 3) in[k] *= 1e4f;
      DeviceBuffer<float> d_in(in);
      DeviceBuffer<float> d_out = poisoned_floats(size_t(n) + 1);  // one guard element
      cuda::sum_in_rank_order(d_out.data(), d_in.data(), ranks, n);
      const FVec got = d_out.to_host();
      CHECK(
          bitwise_equal(FVec(got.begin(), got.begin() + n), host_sum_in_rank_order(in, ranks, n)));
      CHECK(std::isnan(got[size_t(n)]));  // nothing written past n
    }
  }
  // The test can tell the orders apart: summed in reverse rank order, some element differs.
  const int ranks = 8;
  const int64_t n = 4097;
  FVec in = random_floats(size_t(ranks * n), 11, 1.0);
  for (size_t k = 0; k < in.size(); k += 3) in[k] *= 1e4f;
  FVec reversed(in.size());
  for (int r = 0; r < ranks; ++r) {
    std::memcpy(&reversed[size_t(r * n)], &in[size_t((ranks - 1 - r) * n)], size_t(n) * 4);
  }
  CHECK_FALSE(bitwise_equal(host_sum_in_rank_order(in, ranks, n),
                            host_sum_in_rank_order(reversed, ranks, n)));
  // n = 0 launches nothing.
  cuda::sum_in_rank_order(nullptr, nullptr, ranks, 0);
}
#endif  // UNIPOOL_HAVE_CUDA

#ifdef UNIPOOL_HAVE_NCCL
using unipool::Communicator;
using unipool::Error;
using unipool::test::error_of;
using unipool::test::TempDir;

// No GPU needed: rank 1 waits for rank 0's file before it touches NCCL or the GPU.
TEST_CASE("nccl rendezvous: a missing id file times out, naming the file", "[cuda][comm]") {
  TempDir dir;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string message =
      error_of([&] { unipool::make_nccl_communicator_from_file(1, 2, 0, dir.path, "t", 1.0); });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK_THAT(message, HasSubstring(unipool::nccl_id_file(dir.path, "t")));
  CHECK_THAT(message, HasSubstring("rank 1"));
  CHECK_THAT(message, HasSubstring("did not appear within 1 s"));
  CHECK(seconds >= 1.0);
  CHECK(seconds < 2.5);
  CHECK(unipool::nccl_id_file("/shared/ids", "1234.0") == "/shared/ids/nccl-id-1234.0");

  // A file of the wrong size is not taken for an id.
  unipool::write_file_atomic(unipool::nccl_id_file(dir.path, "short"), "not an id");
  CHECK_THAT(
      error_of([&] { unipool::make_nccl_communicator_from_file(1, 2, 0, dir.path, "short", 1.0); }),
      HasSubstring("holds 9 bytes"));
  // Bad arguments fail before any waiting.
  CHECK_THROWS_AS(unipool::make_nccl_communicator_from_file(2, 2, 0, dir.path, "t", 1.0), Error);
  CHECK_THROWS_AS(unipool::make_nccl_communicator_from_file(1, 2, -1, dir.path, "t", 1.0), Error);
  CHECK_THROWS_AS(unipool::make_nccl_communicator_from_file(1, 2, 0, dir.path, "a/b", 1.0), Error);
  CHECK_THROWS_AS(unipool::make_nccl_communicator_from_file(1, 2, 0, dir.path, "t", 0.0), Error);
}

TEST_CASE("nccl on one rank: every collective is the identity", "[cuda][comm]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  TempDir dir;
  const std::unique_ptr<Communicator> comm =
      unipool::make_nccl_communicator_from_file(0, 1, 0, dir.path, "test", 30);
  CHECK(std::string(comm->transport()) == "NCCL");
  CHECK(comm->on_device());
  CHECK(comm->rank() == 0);
  CHECK(comm->size() == 1);
  CHECK(comm->local_rank() == 0);
  CHECK(comm->timeout() == 30);
  // Rank 0 removed the id file once every rank (itself) had joined.
  CHECK_FALSE(unipool::path_exists(unipool::nccl_id_file(dir.path, "test")));

  // Device arrays: a ragged count, and one past reduce_scatter_sum's 256 MiB receive piece.
  for (int64_t count : {int64_t(1), int64_t(1000), int64_t(4097), (int64_t(256) << 18) + 1000}) {
    INFO("count " << count);
    const FVec values = random_floats(size_t(count), uint32_t(count), 3.0);
    DeviceBuffer<float> data(values);
    comm->reduce_scatter_sum(data.data(), count);
    CHECK(bitwise_equal(data.to_host(), values));
    comm->all_gather(data.data(), count);
    CHECK(bitwise_equal(data.to_host(), values));
  }
  comm->reduce_scatter_sum(nullptr, 0);
  comm->all_gather(nullptr, 0);

  std::vector<double> sums = {1.5, -2.25, 1e300};
  comm->all_reduce_sum(sums.data(), 3);
  CHECK(sums == std::vector<double>{1.5, -2.25, 1e300});

  // Past the 64 MiB staging piece.
  std::vector<unsigned char> bytes((size_t(64) << 20) + 12345);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 131 + 7);
  const std::vector<unsigned char> sent = bytes;
  comm->broadcast(bytes.data(), bytes.size(), 0);
  CHECK(bytes == sent);
  CHECK_THROWS_AS(comm->broadcast(bytes.data(), 1, 1), Error);

  comm->barrier();
  comm->barrier();
  // A rank may not send to itself; there is no other.
  char c = 'x';
  CHECK_THROWS_AS(comm->send(&c, 1, 0), Error);
  CHECK_THROWS_AS(comm->recv(&c, 1, 0), Error);
  // The generic helpers over the transport's broadcast / gather.
  CHECK(comm->broadcast_string("hello", 0) == "hello");
}
#endif  // UNIPOOL_HAVE_NCCL

#if !defined(UNIPOOL_HAVE_NCCL) && !defined(UNIPOOL_HAVE_CUDA)
TEST_CASE("cuda comm: not built (no nvcc at configure time)", "[cuda]") {
  WARN("the CUDA backend was not compiled (nvcc not found): NCCL tests skipped");
}
#endif
