// The transports of engine/comm.h: a single process and MPI (NCCL is in engine/comm_nccl.*), and
// the helpers every transport shares (shards, gather/scatter of shards, strings, checks).
#include "engine/comm.h"

#include <time.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "base/clock.h"
#include "base/error.h"

#ifdef UNIPOOL_HAVE_MPI
#include <mpi.h>
#endif

namespace unipool {

// ---- helpers of every transport
// --------------------------------------------------------------------

Shard Communicator::shard(int64_t count, int r) const {
  const int64_t per = (count + size_ - 1) / size_;
  const int64_t chunk = (per + kShardAlign - 1) / kShardAlign * kShardAlign;
  Shard s;
  s.begin = std::min(count, chunk * r);
  s.end = std::min(count, chunk * (r + 1));
  return s;
}

void Communicator::gather_shards(const float* mine, float* full, int64_t count, int root) {
  if (rank_ == root) {
    const Shard own = my_shard(count);
    if (mine != full + own.begin) std::copy(mine, mine + own.size(), full + own.begin);
    for (int r = 0; r < size_; ++r) {
      if (r == root) continue;
      const Shard s = shard(count, r);
      recv(full + s.begin, size_t(s.size()) * sizeof(float), r);
    }
  } else {
    send(mine, size_t(my_shard(count).size()) * sizeof(float), root);
  }
}

void Communicator::scatter_shards(const float* full, float* mine, int64_t count, int root) {
  if (rank_ == root) {
    for (int r = 0; r < size_; ++r) {
      if (r == root) continue;
      const Shard s = shard(count, r);
      send(full + s.begin, size_t(s.size()) * sizeof(float), r);
    }
    const Shard own = my_shard(count);
    if (mine != full + own.begin) std::copy(full + own.begin, full + own.end, mine);
  } else {
    recv(mine, size_t(my_shard(count).size()) * sizeof(float), root);
  }
}

std::vector<std::string> Communicator::gather_strings(const std::string& mine, int root) {
  std::vector<double> lengths(size_t(size_), 0.0);
  lengths[size_t(rank_)] = double(mine.size());
  all_reduce_sum(lengths.data(), size_);
  std::vector<std::string> all;
  if (rank_ == root) {
    all.resize(size_t(size_));
    for (int r = 0; r < size_; ++r) {
      if (r == root) {
        all[size_t(r)] = mine;
        continue;
      }
      all[size_t(r)].resize(size_t(lengths[size_t(r)]));
      recv(all[size_t(r)].data(), all[size_t(r)].size(), r);
    }
  } else {
    send(mine.data(), mine.size(), root);
  }
  return all;
}

std::string Communicator::broadcast_string(const std::string& s, int root) {
  double length = rank_ == root ? double(s.size()) : 0.0;
  broadcast(&length, sizeof length, root);
  std::string out = rank_ == root ? s : std::string(size_t(length), '\0');
  broadcast(out.data(), out.size(), root);
  return out;
}

void check_on_every_rank(Communicator& comm, const std::string& problem) {
  std::vector<double> failed(size_t(comm.size()), 0.0);
  failed[size_t(comm.rank())] = problem.empty() ? 0.0 : 1.0;
  comm.all_reduce_sum(failed.data(), comm.size());
  if (std::none_of(failed.begin(), failed.end(), [](double f) { return f != 0; })) return;
  const std::vector<std::string> all = comm.gather_strings(problem, 0);
  std::string message;
  if (comm.rank() == 0) {
    for (int r = 0; r < comm.size(); ++r) {
      if (all[size_t(r)].empty()) continue;
      if (!message.empty()) message += "; ";
      message +=
          comm.size() > 1 ? "rank " + std::to_string(r) + ": " + all[size_t(r)] : all[size_t(r)];
    }
  }
  throw Error(comm.broadcast_string(message, 0));
}

namespace {

// ---- one process --------------------------------------------------------------------------------
class SingleProcess final : public Communicator {
 public:
  const char* transport() const override { return "single process"; }
  void reduce_scatter_sum(float*, int64_t) override {}
  void all_gather(float*, int64_t) override {}
  void all_reduce_sum(double*, int) override {}
  void broadcast(void*, size_t, int root) override { check_root(root); }
  void barrier() override {}
  void send(const void*, size_t, int to) override { no_peer(to); }
  void recv(void*, size_t, int from) override { no_peer(from); }
  void abort(int) override {}

 private:
  static void check_root(int root) {
    check(root == 0, "broadcast: root " + std::to_string(root) + " of a single process");
  }
  [[noreturn]] static void no_peer(int r) {
    throw Error("send/recv: rank " + std::to_string(r) + " of a single process");
  }
};

// The launcher's environment says this process is one of several ranks (mpirun, a PMI launcher,
// Slurm's srun) even when this build has no MPI. (SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: the
// latter is also set in a batch script, where a plain command is one process.)
int ranks_in_environment() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    const char* v = std::getenv(var);
    if (v != nullptr) return std::max(1, std::atoi(v));
  }
  return 1;
}

#ifdef UNIPOOL_HAVE_MPI
// ---- MPI
// ------------------------------------------------------------------------------------------
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(text, size_t(len)));
}

// MPI counts are ints: transfers go in pieces of at most 2^30 elements (bytes for send/recv).
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
    check_mpi(
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
        "comm_split_type");
    check_mpi(MPI_Comm_rank(node, &local_rank_), "comm_rank (node)");
    MPI_Comm_free(&node);
  }
  const char* transport() const override { return "MPI"; }

  // Every rank sends its copy of shard j to rank j; rank j adds the size() contributions in rank
  // order (its own included, at its place in the order).
  void reduce_scatter_sum(float* data, int64_t count) override {
    const Shard own = my_shard(count);
    const int64_t piece = std::min(kPiece, std::max<int64_t>(own.size(), 1));
    std::vector<float> received(size_t(size_) * size_t(piece));
    const int64_t longest = shard(count, 0).size();  // shard 0 is never shorter than another
    for (int64_t p0 = 0; p0 < longest; p0 += kPiece) {
      std::vector<MPI_Request> requests;
      const int n_mine = int(std::clamp<int64_t>(own.size() - p0, 0, kPiece));
      for (int r = 0; r < size_; ++r) {
        if (n_mine > 0 && r != rank_)
          post(MPI_Irecv(received.data() + size_t(r) * size_t(piece), n_mine, MPI_FLOAT, r,
                         kTagData, MPI_COMM_WORLD, &push(requests)),
               "irecv (reduce_scatter_sum)");
        const Shard s = shard(count, r);
        const int n = int(std::clamp<int64_t>(s.size() - p0, 0, kPiece));
        if (n > 0 && r != rank_)
          post(MPI_Isend(data + s.begin + p0, n, MPI_FLOAT, r, kTagData, MPI_COMM_WORLD,
                         &push(requests)),
               "isend (reduce_scatter_sum)");
      }
      wait(requests, "reduce_scatter_sum");
      if (n_mine == 0) continue;
      float* mine = data + own.begin + p0;
      std::copy(mine, mine + n_mine, received.data() + size_t(rank_) * size_t(piece));
      for (int i = 0; i < n_mine; ++i) {
        float sum = received[size_t(i)];
        for (int r = 1; r < size_; ++r) sum += received[size_t(r) * size_t(piece) + size_t(i)];
        mine[i] = sum;
      }
    }
  }

  void all_gather(float* data, int64_t count) override {
    const Shard own = my_shard(count);
    const int64_t longest = shard(count, 0).size();
    for (int64_t p0 = 0; p0 < longest; p0 += kPiece) {
      std::vector<MPI_Request> requests;
      const int n_mine = int(std::clamp<int64_t>(own.size() - p0, 0, kPiece));
      for (int r = 0; r < size_; ++r) {
        if (r == rank_) continue;
        const Shard s = shard(count, r);
        const int n = int(std::clamp<int64_t>(s.size() - p0, 0, kPiece));
        if (n > 0)
          post(MPI_Irecv(data + s.begin + p0, n, MPI_FLOAT, r, kTagData, MPI_COMM_WORLD,
                         &push(requests)),
               "irecv (all_gather)");
        if (n_mine > 0)
          post(MPI_Isend(data + own.begin + p0, n_mine, MPI_FLOAT, r, kTagData, MPI_COMM_WORLD,
                         &push(requests)),
               "isend (all_gather)");
      }
      wait(requests, "all_gather");
    }
  }

  // Gathered to every rank, summed by each in rank order: every rank computes the same bits.
  void all_reduce_sum(double* values, int n) override {
    if (n <= 0) return;
    std::vector<double> all(size_t(size_) * size_t(n));
    std::vector<MPI_Request> requests;
    post(MPI_Iallgather(values, n, MPI_DOUBLE, all.data(), n, MPI_DOUBLE, MPI_COMM_WORLD,
                        &push(requests)),
         "iallgather (all_reduce_sum)");
    wait(requests, "all_reduce_sum");
    for (int i = 0; i < n; ++i) {
      double sum = all[size_t(i)];
      for (int r = 1; r < size_; ++r) sum += all[size_t(r) * size_t(n) + size_t(i)];
      values[i] = sum;
    }
  }

  void broadcast(void* bytes, size_t n, int root) override {
    check(root >= 0 && root < size_,
          "broadcast: root " + std::to_string(root) + " of " + std::to_string(size_) + " ranks");
    for (size_t p0 = 0; p0 < n; p0 += size_t(kPiece)) {
      const int len = int(std::min<size_t>(size_t(kPiece), n - p0));
      std::vector<MPI_Request> requests;
      post(MPI_Ibcast(static_cast<char*>(bytes) + p0, len, MPI_BYTE, root, MPI_COMM_WORLD,
                      &push(requests)),
           "ibcast");
      wait(requests, "broadcast");
    }
  }

  void barrier() override {
    std::vector<MPI_Request> requests;
    post(MPI_Ibarrier(MPI_COMM_WORLD, &push(requests)), "ibarrier");
    wait(requests, "barrier");
  }

  void send(const void* bytes, size_t n, int to) override {
    check(to != rank_ && to >= 0 && to < size_, "send: bad destination rank " + std::to_string(to));
    for (size_t p0 = 0; p0 < n; p0 += size_t(kPiece)) {
      std::vector<MPI_Request> requests;
      post(MPI_Isend(static_cast<const char*>(bytes) + p0, int(std::min<size_t>(kPiece, n - p0)),
                     MPI_BYTE, to, kTagPointToPoint, MPI_COMM_WORLD, &push(requests)),
           "isend");
      wait(requests, "send");
    }
  }

  void recv(void* bytes, size_t n, int from) override {
    check(from != rank_ && from >= 0 && from < size_,
          "recv: bad source rank " + std::to_string(from));
    for (size_t p0 = 0; p0 < n; p0 += size_t(kPiece)) {
      std::vector<MPI_Request> requests;
      post(MPI_Irecv(static_cast<char*>(bytes) + p0, int(std::min<size_t>(kPiece, n - p0)),
                     MPI_BYTE, from, kTagPointToPoint, MPI_COMM_WORLD, &push(requests)),
           "irecv");
      wait(requests, "recv");
    }
  }

  void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }

 private:
  static constexpr int kTagData = 1, kTagPointToPoint = 2;

  static MPI_Request& push(std::vector<MPI_Request>& requests) {
    requests.push_back(MPI_REQUEST_NULL);
    return requests.back();
  }
  static void post(int rc, const char* what) { check_mpi(rc, what); }

  // Waits for every request, polling, at most timeout() seconds: a collective that cannot complete
  // (a rank died, stopped or hangs) becomes an Error instead of a hang. The poll sleeps a little
  // more each round (up to 1 ms) so that waiting ranks leave the cores to the working ones.
  void wait(std::vector<MPI_Request>& requests, const char* what) {
    if (requests.empty()) return;
    const Stopwatch waited;
    long sleep_ns = 0;
    for (;;) {
      int done = 0;
      check_mpi(MPI_Testall(int(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE),
                what);
      if (done) return;
      if (waited.seconds() > timeout_s_) {
        char msg[256];
        std::snprintf(msg, sizeof msg,
                      "rank %d: MPI %s did not complete within %g s: a rank has failed, stopped or "
                      "is stuck (train.comm_timeout_s sets the limit)",
                      rank_, what, timeout_s_);
        throw Error(msg);
      }
      sleep_ns = std::min(1000000L, sleep_ns + 2000);
      const struct timespec pause = {0, sleep_ns};
      nanosleep(&pause, nullptr);
    }
  }
};

#endif

std::unique_ptr<Communicator>& the_world() {
  static std::unique_ptr<Communicator> world;
  return world;
}

}  // namespace

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

std::unique_ptr<Communicator> make_single_process_communicator() {
  return std::make_unique<SingleProcess>();
}

Communicator& world() {
  std::unique_ptr<Communicator>& w = the_world();
  if (w) return *w;
#ifdef UNIPOOL_HAVE_MPI
  if (launched_by_mpi()) {
    w = std::make_unique<Mpi>();
    return *w;
  }
#endif
  const int ranks = ranks_in_environment();
  check(ranks == 1,
        "this process is one of " + std::to_string(ranks) +
            " ranks (the launcher's environment says so: SLURM_STEP_NUM_TASKS / PMI_SIZE / "
            "OMPI_COMM_WORLD_SIZE), but it was "
            "not started with an MPI environment this build can join" +
#ifdef UNIPOOL_HAVE_MPI
            std::string(": launch with mpirun, or srun --mpi=pmix")
#else
            std::string(": this build has no MPI (install OpenMPI: scripts/setup.sh) ")
#endif
  );
  w = make_single_process_communicator();
  return *w;
}

void abort_world_after_error(int code) {
  const std::unique_ptr<Communicator>& w = the_world();
  if (w && w->size() > 1) w->abort(code);
}

}  // namespace unipool
