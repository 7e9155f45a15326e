// The MPI transport of engine/comm.h, run under `mpirun -np N` by ctest (N = 2 and 3): every
// collective gives exactly (bitwise) the result computed locally in rank order, twice in a row,
// on arrays whose shards are ragged (the last ones shorter or empty) as well as even.
// Each rank's inputs are a function of (rank, index) that every rank can compute, with magnitudes
// (1e8 and 1) chosen so that another summation order gives other bits. Exit status 0 = pass; a
// failure prints the rank, the collective and the index.
//
// `comm_collectives timeout`: rank 1 joins a barrier 3 s late while rank 0 waits at most 1 s:
// rank 0 must get an Error naming the collective and the limit (a missing or stuck rank is an
// error, never a hang), then both finish cleanly.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "engine/comm.h"

using namespace unipool;

namespace {

int failures = 0;

void expect(bool ok, int rank, const char* what, int64_t i) {
  if (!ok && failures++ < 10)
    std::fprintf(stderr, "rank %d: %s differs at %lld\n", rank, what, (long long)i);
}

bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}
bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// Rank r's value at i: large and small terms whose sum depends on the order of addition.
double value(int r, int64_t i) {
  const double big = (r % 2 == 0 ? 1e8 : -1e8) * double(1 + (i % 3));
  return big + 0.1 * double(r + 1) + 1e-3 * double(i % 7);
}

void check_array_collectives(Communicator& comm, int64_t count) {
  const int rank = comm.rank(), size = comm.size();
  // The shards tile [0, count) in rank order.
  int64_t next = 0;
  for (int r = 0; r < size; ++r) {
    const Shard s = comm.shard(count, r);
    expect(s.begin == next && s.end >= s.begin && s.end <= count, rank, "shard", r);
    next = s.end;
  }
  expect(next == count, rank, "shards cover", count);
  const Shard own = comm.my_shard(count);

  // reduce_scatter_sum
  std::vector<float> data(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) data[size_t(i)] = float(value(rank, i));
  const std::vector<float> before = data;
  comm.reduce_scatter_sum(data.data(), count);
  for (int64_t i = 0; i < count; ++i) {
    const bool mine = i >= own.begin && i < own.end;
    float want = mine ? float(value(0, i)) : before[size_t(i)];
    if (mine)
      for (int r = 1; r < size; ++r) want += float(value(r, i));
    expect(same_bits(data[size_t(i)], want), rank, "reduce_scatter_sum", i);
  }
  // all_gather: every shard r from rank r
  for (int64_t i = own.begin; i < own.end; ++i) data[size_t(i)] = float(rank * 100000 + i);
  comm.all_gather(data.data(), count);
  for (int r = 0; r < size; ++r) {
    const Shard s = comm.shard(count, r);
    for (int64_t i = s.begin; i < s.end; ++i)
      expect(data[size_t(i)] == float(r * 100000 + i), rank, "all_gather", i);
  }
  // gather_shards to the last rank, scatter_shards back from it
  std::vector<float> mine(size_t(own.size()));
  for (int64_t i = 0; i < own.size(); ++i) mine[size_t(i)] = float(7 * rank + i);
  std::vector<float> full(size_t(count), -1.0f);
  comm.gather_shards(mine.data(), full.data(), count, size - 1);
  if (rank == size - 1) {
    for (int r = 0; r < size; ++r) {
      const Shard s = comm.shard(count, r);
      for (int64_t i = s.begin; i < s.end; ++i)
        expect(full[size_t(i)] == float(7 * r + (i - s.begin)), rank, "gather_shards", i);
    }
    for (int64_t i = 0; i < count; ++i) full[size_t(i)] = float(3 * i);
  }
  std::vector<float> back(size_t(own.size()), -1.0f);
  comm.scatter_shards(full.data(), back.data(), count, size - 1);
  for (int64_t i = 0; i < own.size(); ++i)
    expect(back[size_t(i)] == float(3 * (own.begin + i)), rank, "scatter_shards", i);
}

int timeout_case(Communicator& comm) {
  if (comm.size() != 2) return std::fprintf(stderr, "timeout case: needs 2 ranks\n"), 1;
  if (comm.rank() == 1) {
    sleep(3);
    comm.barrier();  // completes rank 0's barrier, which has given up waiting by now
    return 0;
  }
  comm.set_timeout(1.0);
  const Stopwatch waited;
  try {
    comm.barrier();
  } catch (const Error& e) {
    const std::string msg = e.what();
    const bool clear = msg.find("barrier") != std::string::npos &&
                       msg.find("did not complete within 1 s") != std::string::npos &&
                       msg.find("train.comm_timeout_s") != std::string::npos;
    std::printf("rank 0 after %.1f s: %s\n", waited.seconds(), msg.c_str());
    return clear && waited.seconds() < 2.5 ? 0 : 1;
  }
  std::fprintf(stderr, "rank 0: the barrier completed without rank 1\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Communicator& comm = world();
  const int rank = comm.rank(), size = comm.size();
  if (size < 2 || std::strcmp(comm.transport(), "MPI") != 0) {
    std::fprintf(stderr, "comm_collectives: expected an MPI world of >= 2 ranks, got %d (%s)\n",
                 size, comm.transport());
    return 1;
  }
  if (argc > 1 && std::string(argv[1]) == "timeout") return timeout_case(comm);
  for (int repeat = 0; repeat < 2; ++repeat) {
    // all_reduce_sum
    const int n = 11;
    std::vector<double> v(n);
    for (int i = 0; i < n; ++i) v[size_t(i)] = value(rank, i);
    comm.all_reduce_sum(v.data(), n);
    for (int i = 0; i < n; ++i) {
      double want = value(0, i);
      for (int r = 1; r < size; ++r) want += value(r, i);
      expect(same_bits(v[size_t(i)], want), rank, "all_reduce_sum", i);
    }
    // arrays: even, ragged, smaller than one aligned shard, empty
    for (int64_t count :
         {int64_t(64) * size * 5, int64_t(1000), int64_t(70), int64_t(1), int64_t(0)})
      check_array_collectives(comm, count);
    // broadcast from the last rank, strings, point to point
    std::vector<char> bytes(37, char(rank));
    comm.broadcast(bytes.data(), bytes.size(), size - 1);
    for (size_t i = 0; i < bytes.size(); ++i)
      expect(bytes[i] == char(size - 1), rank, "broadcast", int64_t(i));
    const std::string s = comm.broadcast_string(rank == 1 ? "from rank 1" : "", 1);
    expect(s == "from rank 1", rank, "broadcast_string", 0);
    const auto strings = comm.gather_strings(std::string(size_t(rank), 'x'), 0);
    if (rank == 0)
      for (int r = 0; r < size; ++r)
        expect(strings.at(size_t(r)) == std::string(size_t(r), 'x'), rank, "gather_strings", r);
    // check_on_every_rank: nothing when no rank has a problem; else the same Error everywhere
    check_on_every_rank(comm, "");
    try {
      check_on_every_rank(comm, rank == size - 1 ? "disk full" : "");
      expect(false, rank, "check_on_every_rank did not throw", 0);
    } catch (const Error& e) {
      const std::string want = "rank " + std::to_string(size - 1) + ": disk full";
      expect(std::string(e.what()) == want, rank, "check_on_every_rank message", 0);
    }
    comm.barrier();
  }
  if (failures > 0) std::fprintf(stderr, "rank %d: %d failures\n", rank, failures);
  if (rank == 0 && failures == 0)
    std::printf("comm_collectives: %d ranks (%s), every collective bitwise as in rank order\n",
                size, comm.transport());
  return failures > 0 ? 1 : 0;
}
