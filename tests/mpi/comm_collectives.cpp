// The MPI transport of engine/comm.h, run under `mpirun -np N` by ctest (N = 2 and 3): every
// collective gives exactly (bitwise) the result computed locally in rank order, twice in a row.
// Each rank's inputs are a function of (rank, index) that every rank can compute, with magnitudes
// (1e8 and 1) chosen so that another summation order gives other bits. Exit status 0 = pass; a
// failure prints the rank, the collective and the index.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/comm.h"

using namespace unipool;

namespace {

int failures = 0;

void expect(bool ok, int rank, const char* what, int64_t i) {
  if (!ok && failures++ < 10) std::fprintf(stderr, "rank %d: %s differs at %lld\n", rank, what, (long long)i);
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Rank r's value at i: large and small terms whose sum depends on the order of addition.
double value(int r, int64_t i) {
  const double big = (r % 2 == 0 ? 1e8 : -1e8) * double(1 + (i % 3));
  return big + 0.1 * double(r + 1) + 1e-3 * double(i % 7);
}

}  // namespace

int main() {
  Communicator& comm = world();
  const int rank = comm.rank(), size = comm.size();
  if (size < 2 || std::strcmp(comm.transport(), "MPI") != 0) {
    std::fprintf(stderr, "comm_collectives: expected an MPI world of >= 2 ranks, got %d (%s)\n",
                 size, comm.transport());
    return 1;
  }
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
    // reduce_scatter_sum: chunk 1000 floats per rank
    const int64_t chunk = 1000;
    std::vector<float> data(size_t(size * chunk));
    for (int64_t i = 0; i < size * chunk; ++i) data[size_t(i)] = float(value(rank, i));
    const std::vector<float> before = data;
    comm.reduce_scatter_sum(data.data(), chunk);
    for (int64_t i = 0; i < size * chunk; ++i) {
      const bool mine = i / chunk == rank;
      float want = mine ? float(value(0, i)) : before[size_t(i)];
      if (mine)
        for (int r = 1; r < size; ++r) want += float(value(r, i));
      expect(same_bits(data[size_t(i)], want), rank, "reduce_scatter_sum", i);
    }
    // all_gather: every chunk r from rank r
    for (int64_t i = 0; i < chunk; ++i) data[size_t(rank * chunk + i)] = float(rank * 1000 + i);
    comm.all_gather(data.data(), chunk);
    for (int64_t i = 0; i < size * chunk; ++i)
      expect(data[size_t(i)] == float((i / chunk) * 1000 + i % chunk), rank, "all_gather", i);
    // broadcast from the last rank
    std::vector<char> bytes(37, char(rank));
    comm.broadcast(bytes.data(), bytes.size(), size - 1);
    for (size_t i = 0; i < bytes.size(); ++i)
      expect(bytes[i] == char(size - 1), rank, "broadcast", int64_t(i));
    comm.barrier();
  }
  if (failures > 0) std::fprintf(stderr, "rank %d: %d failures\n", rank, failures);
  if (rank == 0 && failures == 0)
    std::printf("comm_collectives: %d ranks (%s), every collective bitwise as in rank order\n", size,
                comm.transport());
  return failures > 0 ? 1 : 0;
}
