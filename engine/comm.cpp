// The transports of engine/comm.h.
#include "engine/comm.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/error.h"

#ifdef UNIPOOL_HAVE_MPI
#include <mpi.h>
#endif

namespace unipool {

namespace {

// ---- one process --------------------------------------------------------------------------------
class SingleProcess final : public Communicator {
 public:
  const char* transport() const override { return "single process"; }
  void all_reduce_sum(double*, int) override {}
  void reduce_scatter_sum(float*, int64_t) override {}
  void all_gather(float*, int64_t) override {}
  void broadcast(void*, size_t, int root) override {
    check(root == 0, "broadcast: root " + std::to_string(root) + " of a single process");
  }
  void barrier() override {}
};

#ifdef UNIPOOL_HAVE_MPI
// ---- MPI ------------------------------------------------------------------------------------------
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(text, size_t(len)));
}

// MPI counts are ints: transfers go in pieces of at most 2^30 elements.
constexpr int64_t kPiece = int64_t(1) << 30;

class Mpi final : public Communicator {
 public:
  Mpi() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "init");
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);  // errors as return codes
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "comm_size");
    MPI_Comm node;
    check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
              "comm_split_type");
    check_mpi(MPI_Comm_rank(node, &local_rank_), "comm_rank (node)");
    MPI_Comm_free(&node);
  }
  const char* transport() const override { return "MPI"; }

  // Gathered to every rank, summed by each in rank order: every rank computes the same bits.
  void all_reduce_sum(double* values, int n) override {
    if (n <= 0) return;
    std::vector<double> all(size_t(size_) * size_t(n));
    check_mpi(MPI_Allgather(values, n, MPI_DOUBLE, all.data(), n, MPI_DOUBLE, MPI_COMM_WORLD),
              "allgather (all_reduce_sum)");
    for (int i = 0; i < n; ++i) {
      double sum = all[size_t(i)];
      for (int r = 1; r < size_; ++r) sum += all[size_t(r) * size_t(n) + size_t(i)];
      values[i] = sum;
    }
  }

  // Every rank sends its copy of chunk j to rank j (an all-to-all); rank j adds the size()
  // contributions in rank order.
  void reduce_scatter_sum(float* data, int64_t chunk) override {
    std::vector<float> received(size_t(size_) * size_t(std::min(chunk, kPiece)));
    for (int64_t p0 = 0; p0 < chunk; p0 += kPiece) {
      const int n = int(std::min(kPiece, chunk - p0));
      std::vector<float> send(size_t(size_) * size_t(n));
      for (int r = 0; r < size_; ++r)
        std::memcpy(send.data() + size_t(r) * n, data + r * chunk + p0, size_t(n) * sizeof(float));
      check_mpi(MPI_Alltoall(send.data(), n, MPI_FLOAT, received.data(), n, MPI_FLOAT,
                             MPI_COMM_WORLD),
                "alltoall (reduce_scatter_sum)");
      float* mine = data + rank_ * chunk + p0;
      for (int i = 0; i < n; ++i) {
        float sum = received[size_t(i)];
        for (int r = 1; r < size_; ++r) sum += received[size_t(r) * n + size_t(i)];
        mine[i] = sum;
      }
    }
  }

  void all_gather(float* data, int64_t chunk) override {
    for (int64_t p0 = 0; p0 < chunk; p0 += kPiece) {
      const int n = int(std::min(kPiece, chunk - p0));
      std::vector<float> all(size_t(size_) * size_t(n));
      check_mpi(MPI_Allgather(data + rank_ * chunk + p0, n, MPI_FLOAT, all.data(), n, MPI_FLOAT,
                              MPI_COMM_WORLD),
                "allgather");
      for (int r = 0; r < size_; ++r)
        std::memcpy(data + r * chunk + p0, all.data() + size_t(r) * n, size_t(n) * sizeof(float));
    }
  }

  void broadcast(void* bytes, size_t n, int root) override {
    check(root >= 0 && root < size_, "broadcast: root " + std::to_string(root) + " of " +
                                         std::to_string(size_) + " ranks");
    for (size_t p0 = 0; p0 < n; p0 += size_t(kPiece)) {
      const int len = int(std::min<size_t>(size_t(kPiece), n - p0));
      check_mpi(MPI_Bcast(static_cast<char*>(bytes) + p0, len, MPI_BYTE, root, MPI_COMM_WORLD),
                "bcast");
    }
  }

  void barrier() override { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }
};

// Started by an MPI launcher: OpenMPI's mpirun, or a PMI/PMIx launcher (srun, MPICH's hydra).
bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}
#endif

}  // namespace

std::unique_ptr<Communicator> make_single_process_communicator() {
  return std::make_unique<SingleProcess>();
}

Communicator& world() {
  static const std::unique_ptr<Communicator> the_world = []() -> std::unique_ptr<Communicator> {
#ifdef UNIPOOL_HAVE_MPI
    if (launched_by_mpi()) return std::make_unique<Mpi>();
#endif
    return make_single_process_communicator();
  }();
  return *the_world;
}

}  // namespace unipool
