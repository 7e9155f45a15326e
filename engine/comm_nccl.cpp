// The NCCL transport of engine/comm.h (engine/comm_nccl.h). Compiled to nothing in builds without
// NCCL (CMake defines UNIPOOL_HAVE_NCCL when it finds NCCL next to the CUDA toolkit).
//
// How the collectives stay deterministic: NCCL's reductions (ncclReduceScatter, ncclAllReduce) add
// in an order that depends on the algorithm NCCL picks (ring, tree, NVLS, ...), the topology and
// the message size. So NCCL is only asked to move bytes — grouped ncclSend/ncclRecv and
// ncclAllGather — and every sum is taken here, in rank order: on the device by
// cuda::sum_in_rank_order for the reduce-scatter, on the host for all_reduce_sum's doubles.
//
// How no collective hangs: the communicator is non-blocking (ncclConfig_t::blocking = 0), so no
// NCCL call waits for other ranks; a call that answers ncclInProgress is polled with
// ncclCommGetAsyncError until it has been enqueued. Then the stream is polled (cudaStreamQuery)
// until the collective has completed. Past timeout() seconds the NCCL communicator is aborted
// (which also ends its kernels still waiting for data on the stream) and Error is thrown.
#ifdef UNIPOOL_HAVE_NCCL

#include "engine/comm_nccl.h"

#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "kernels/cuda/comm_sum.h"
#include "kernels/cuda/runtime.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "engine/comm_nccl.cpp needs NCCL 2.14 or newer (non-blocking communicators)"
#endif

namespace unipool {

namespace {

// The host collectives move their bytes through a device staging buffer, in pieces of this size.
constexpr size_t kStagingBytes = size_t(64) << 20;
// reduce_scatter_sum receives every rank's copy of a piece of its shard into a scratch buffer of at
// most this size (size() rows): bigger shards go in pieces.
constexpr size_t kReceiveBytes = size_t(256) << 20;

// "600" / "2.5": seconds as the user wrote them in train.comm_timeout_s.
std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

// Elements [p0, p0 + piece) of a shard, clipped to it: how many of them rank's shard has.
int64_t piece_length(const Shard& s, int64_t p0, int64_t piece) {
  return std::clamp<int64_t>(s.size() - p0, 0, piece);
}

// Waits between two polls: spins (yielding) for the first milliseconds, where small collectives
// complete, then sleeps a little so a long wait does not burn a core.
void pause_after(const Stopwatch& waited) {
  if (waited.seconds() < 0.005) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

class Nccl final : public Communicator {
 public:
  // Joins the NCCL communicator `id` as rank `rank` of `size` on the current device (selected by
  // the factory). `bootstrap`: the communicator that carried the id (its abort() ends every rank),
  // or null.
  Nccl(int rank, int size, int local_rank, const ncclUniqueId& id, double timeout_s,
       Communicator* bootstrap)
      : bootstrap_(bootstrap) {
    rank_ = rank;
    size_ = size;
    local_rank_ = local_rank;
    timeout_s_ = timeout_s;
    stream_ = cuda::stream();  // creates the backend's context on the selected device
    check_stream_device();

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // no call waits for the other ranks: we poll, with a timeout
    const ncclResult_t rc = ncclCommInitRankConfig(&comm_, size, id, rank, &config);
    if (rc != ncclSuccess && rc != ncclInProgress) {
      const std::string text = error_text(rc);
      if (comm_ != nullptr) ncclCommAbort(comm_);
      comm_ = nullptr;
      throw Error("rank " + std::to_string(rank_) + ": NCCL init failed: " + text);
    }
    clock_.restart();
    wait("init", /*for_stream=*/false);
  }

  // Every collective has completed before it returned, so the communicator is quiescent here
  // unless an exception cut one short: either way ncclCommAbort frees it without waiting for the
  // other ranks (ncclCommFinalize + ncclCommDestroy may wait for them, and at exit the CUDA runtime
  // may already be shutting down).
  ~Nccl() override {
    if (comm_ != nullptr) ncclCommAbort(comm_);
  }

  Nccl(const Nccl&) = delete;
  Nccl& operator=(const Nccl&) = delete;

  const char* transport() const override { return "NCCL"; }
  bool on_device() const override { return true; }

  // An all-to-all: each rank sends its copy of shard r to rank r and receives every rank's copy of
  // its own shard, side by side in received_ (row q: rank q's copy; its own row is a device copy),
  // then adds the rows in rank order into its shard of data. Shards are ragged (the last ones
  // shorter or empty): a rank sends rank r only the elements of r's shard, and every rank walks the
  // pieces of the largest shard (rank 0's), so all of them post the same groups. Sends read other
  // ranks' shards only and the sum writes this rank's, so data serves as the send buffer in place.
  void reduce_scatter_sum(float* data, int64_t count) override {
    const char* op = "reduce_scatter_sum";
    begin(op);
    if (count <= 0) return;
    const Shard mine = my_shard(count);
    const int64_t largest = shard(count, 0).size();
    // Elements per row of a piece: a multiple of kShardAlign, received_ at most kReceiveBytes.
    const int64_t piece =
        std::max<int64_t>(kShardAlign, int64_t(kReceiveBytes / sizeof(float) / size_t(size_)) /
                                           kShardAlign * kShardAlign);
    const int64_t my_rows = std::min(piece, mine.size());
    float* received =
        received_.get_as<float>(size_t(size_) * size_t(std::max<int64_t>(my_rows, 1)));
    for (int64_t p0 = 0; p0 < largest; p0 += piece) {
      const int64_t n = piece_length(mine, p0, piece);  // this rank's row length in this piece
      cuda::memcpy_device(received + rank_ * n, data + mine.begin + p0, size_t(n) * sizeof(float));
      grouped(op, [&] {
        for (int r = 0; r < size_; ++r) {
          if (r == rank_) continue;
          const Shard theirs = shard(count, r);
          const int64_t n_theirs = piece_length(theirs, p0, piece);
          if (n_theirs > 0) {
            call(ncclSend(data + theirs.begin + p0, size_t(n_theirs), ncclFloat32, r, comm_,
                          stream_),
                 op);
          }
          if (n > 0) {
            call(ncclRecv(received + r * n, size_t(n), ncclFloat32, r, comm_, stream_), op);
          }
        }
      });
      cuda::sum_in_rank_order(data + mine.begin + p0, received, size_, n);
    }
    wait(op, /*for_stream=*/true);
  }

  // Grouped sends and receives in place: this rank's shard to every other rank, rank r's shard
  // from rank r straight into its place in data. ncclAllGather would need equal counts (ragged
  // shards would have to be padded through a scratch copy); point to point needs neither the
  // scratch nor the copies, and only moves bytes, so it is exact.
  void all_gather(float* data, int64_t count) override {
    const char* op = "all_gather";
    begin(op);
    if (count <= 0 || size_ == 1) return;
    const Shard mine = my_shard(count);
    grouped(op, [&] {
      for (int r = 0; r < size_; ++r) {
        if (r == rank_) continue;
        const Shard theirs = shard(count, r);
        if (mine.size() > 0) {
          call(ncclSend(data + mine.begin, size_t(mine.size()), ncclFloat32, r, comm_, stream_),
               op);
        }
        if (theirs.size() > 0) {
          call(ncclRecv(data + theirs.begin, size_t(theirs.size()), ncclFloat32, r, comm_, stream_),
               op);
        }
      }
    });
    wait(op, /*for_stream=*/true);
  }

  // Every rank's values gathered to every rank (ncclAllGather in place in the staging buffer: row
  // r is rank r's), then added in rank order on the host: every rank computes the same bits.
  void all_reduce_sum(double* values, int n) override {
    const char* op = "all_reduce_sum";
    begin(op);
    if (n <= 0) return;
    const int64_t piece =
        std::max<int64_t>(1, int64_t(kStagingBytes / sizeof(double) / size_t(size_)));
    const int64_t rows = std::min<int64_t>(piece, n);
    double* staging = staging_.get_as<double>(size_t(size_) * size_t(rows));
    std::vector<double> all(size_t(size_) * size_t(rows));
    for (int64_t p0 = 0; p0 < n; p0 += piece) {
      const int64_t len = std::min<int64_t>(piece, n - p0);
      to_device(staging + rank_ * len, values + p0, size_t(len) * sizeof(double));
      call(ncclAllGather(staging + rank_ * len, staging, size_t(len), ncclFloat64, comm_, stream_),
           op);
      wait(op, /*for_stream=*/true);
      cuda::memcpy_to_host(all.data(), staging, size_t(size_) * size_t(len) * sizeof(double));
      for (int64_t i = 0; i < len; ++i) {
        double sum = all[size_t(i)];
        for (int r = 1; r < size_; ++r) sum += all[size_t(r) * size_t(len) + size_t(i)];
        values[p0 + i] = sum;
      }
    }
  }

  void broadcast(void* bytes, size_t n, int root) override {
    const char* op = "broadcast";
    check(root >= 0 && root < size_,
          "broadcast: root " + std::to_string(root) + " of " + std::to_string(size_) + " ranks");
    begin(op);
    if (n == 0) return;
    auto* host = static_cast<char*>(bytes);
    char* staging = staging_.get_as<char>(std::min(n, kStagingBytes));
    for (size_t p0 = 0; p0 < n; p0 += kStagingBytes) {
      const size_t len = std::min(kStagingBytes, n - p0);
      if (rank_ == root) to_device(staging, host + p0, len);
      call(ncclBroadcast(staging, staging, len, ncclUint8, root, comm_, stream_), op);
      wait(op, /*for_stream=*/true);
      if (rank_ != root) cuda::memcpy_to_host(host + p0, staging, len);
    }
  }

  // A sum of one int over all ranks: no rank's sum completes before every rank has contributed.
  void barrier() override {
    const char* op = "barrier";
    begin(op);
    int32_t* flag = staging_.get_as<int32_t>(1);
    cuda::memset_zero(flag, sizeof(int32_t));
    call(ncclAllReduce(flag, flag, 1, ncclInt32, ncclSum, comm_, stream_), op);
    wait(op, /*for_stream=*/true);
  }

  // Point to point through the staging buffer, in pieces of kStagingBytes on both sides.
  void send(const void* bytes, size_t n, int to) override {
    const char* op = "send";
    check_peer(to, "send to");
    begin(op);
    const auto* host = static_cast<const char*>(bytes);
    char* staging = n > 0 ? staging_.get_as<char>(std::min(n, kStagingBytes)) : nullptr;
    for (size_t p0 = 0; p0 < n; p0 += kStagingBytes) {
      const size_t len = std::min(kStagingBytes, n - p0);
      to_device(staging, host + p0, len);
      call(ncclSend(staging, len, ncclUint8, to, comm_, stream_), op);
      wait(op, /*for_stream=*/true);
    }
  }

  void recv(void* bytes, size_t n, int from) override {
    const char* op = "recv";
    check_peer(from, "receive from");
    begin(op);
    auto* host = static_cast<char*>(bytes);
    char* staging = n > 0 ? staging_.get_as<char>(std::min(n, kStagingBytes)) : nullptr;
    for (size_t p0 = 0; p0 < n; p0 += kStagingBytes) {
      const size_t len = std::min(kStagingBytes, n - p0);
      call(ncclRecv(staging, len, ncclUint8, from, comm_, stream_), op);
      wait(op, /*for_stream=*/true);
      cuda::memcpy_to_host(host + p0, staging, len);
    }
  }

  // Aborts the NCCL communicator (its kernels stop waiting), then ends every rank through the
  // bootstrap (MPI_Abort) when there is one, else this process. Prints nothing: the engine has
  // reported the error already.
  void abort(int code) override {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    if (bootstrap_ != nullptr) bootstrap_->abort(code);  // returns for a single process
    std::_Exit(code);
  }

 private:
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;      // the CUDA backend's stream (cuda::stream())
  Communicator* bootstrap_ = nullptr;  // the MPI world that carried the id, or null
  Stopwatch clock_;                    // since the start of the current collective
  bool in_group_ = false;              // between ncclGroupStart and ncclGroupEnd
  cuda::Scratch received_{"NCCL reduce_scatter_sum: every rank's copy of this rank's shard"};
  cuda::Scratch staging_{"NCCL host collectives' staging buffer (64 MiB at most)"};

  // The backend's stream must be on the device this rank selected: NCCL enqueues its kernels on
  // it, for the communicator's device. (It is not when a CUDA op ran before the communicator was
  // made.)
  void check_stream_device() const {
#if CUDART_VERSION >= 12080
    int current = -1, of_stream = -1;
    CUDA_CHECK(cudaGetDevice(&current));
    CUDA_CHECK(cudaStreamGetDevice(stream_, &of_stream));
    check(current == of_stream,
          "rank " + std::to_string(rank_) + ": the CUDA backend's stream is on device " +
              std::to_string(of_stream) + " but this rank's GPU is device " +
              std::to_string(current) +
              ": make the NCCL communicator before the first CUDA op of the process");
#endif
  }

  void check_peer(int peer, const char* what) const {
    check(peer >= 0 && peer < size_ && peer != rank_,
          "rank " + std::to_string(rank_) + ": cannot " + what + " rank " + std::to_string(peer) +
              " of " + std::to_string(size_) + " ranks");
  }

  // NCCL's name for rc, and its last error message when it has one.
  std::string error_text(ncclResult_t rc) const {
    std::string text = ncclGetErrorString(rc);
    const char* last = ncclGetLastError(comm_);
    if (last != nullptr && last[0] != '\0') text += " (" + std::string(last) + ")";
    return text;
  }

  // Starts collective `op`: the communicator must still be alive, and the timeout runs from now.
  void begin(const char* op) {
    check(comm_ != nullptr, "rank " + std::to_string(rank_) + ": NCCL " + op +
                                ": the communicator was aborted after an earlier error");
    clock_.restart();
  }

  // Aborts the communicator (closing an open group first) and throws Error(rank R: message).
  [[noreturn]] void fail(const std::string& message) {
    if (in_group_) {
      in_group_ = false;
      ncclGroupEnd();
    }
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    throw Error("rank " + std::to_string(rank_) + ": " + message);
  }

  // After an NCCL call of `op`: an error fails; ncclInProgress (the non-blocking communicator is
  // still enqueueing) is polled until the call has completed, since no other NCCL call may be
  // made on the communicator before that.
  void call(ncclResult_t rc, const char* op) {
    if (rc == ncclSuccess) return;
    if (rc != ncclInProgress) fail(std::string("NCCL ") + op + " failed: " + error_text(rc));
    if (!in_group_) wait(op, /*for_stream=*/false);
  }

  // ncclGroupStart, the calls enqueue() makes, ncclGroupEnd: NCCL runs the group's sends and
  // receives together (so the all-to-all cannot deadlock on the order of its pairs).
  template <typename Enqueue>
  void grouped(const char* op, Enqueue&& enqueue) {
    call(ncclGroupStart(), op);
    in_group_ = true;
    enqueue();
    in_group_ = false;
    call(ncclGroupEnd(), op);
  }

  // Polls until the communicator has no call in progress and, with for_stream, until the stream
  // has run everything enqueued on it (the collective, and the training kernels before it). An
  // asynchronous NCCL error (a peer's connection closed, ...) or a CUDA error fails at once; past
  // timeout() seconds since begin() the communicator is aborted and Error says a rank is gone.
  void wait(const char* op, bool for_stream) {
    const Stopwatch waited;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t rc = ncclCommGetAsyncError(comm_, &state);
      if (rc != ncclSuccess) fail(std::string("NCCL ") + op + " failed: " + error_text(rc));
      if (state != ncclSuccess && state != ncclInProgress) {
        fail(std::string("NCCL ") + op + " failed: " + error_text(state) +
             ": a rank has failed or its connection was lost");
      }
      if (state == ncclSuccess) {
        if (!for_stream) return;
        const cudaError_t done = cudaStreamQuery(stream_);
        if (done == cudaSuccess) return;
        if (done != cudaErrorNotReady) {
          cudaGetLastError();
          fail(std::string("NCCL ") + op + ": the CUDA stream failed: " + cudaGetErrorString(done));
        }
      }
      if (clock_.seconds() > timeout_s_) {
        fail(std::string("NCCL ") + op + " did not complete within " + seconds_text(timeout_s_) +
             " s: a rank has failed, stopped or is stuck (train.comm_timeout_s)");
      }
      pause_after(waited);
    }
  }

  // host → staging, asynchronous on the stream (from pageable memory CUDA copies the bytes out
  // before it returns, so the host buffer may change afterwards). The way back is
  // cuda::memcpy_to_host, once wait() has seen the collective complete: a copy to pageable memory
  // blocks until the stream reaches it, and must not wait on a collective that may never end.
  void to_device(void* staging, const void* host, size_t bytes) {
    if (bytes > 0) {
      CUDA_CHECK(cudaMemcpyAsync(staging, host, bytes, cudaMemcpyHostToDevice, stream_));
    }
  }
};

void check_nccl(ncclResult_t rc, const std::string& what) {
  if (rc != ncclSuccess) throw Error(what + " failed: " + ncclGetErrorString(rc));
}

// Polls for rank 0's id file: it appears complete or not at all (written to a temp file and
// renamed). Touches neither NCCL nor the GPU.
ncclUniqueId wait_for_id_file(const std::string& path, int rank, double timeout_s) {
  const Stopwatch waited;
  for (;;) {
    if (path_exists(path)) {
      const std::string bytes = read_file(path);
      check(bytes.size() == sizeof(ncclUniqueId),
            "rank " + std::to_string(rank) + ": the NCCL id file " + path + " holds " +
                std::to_string(bytes.size()) + " bytes, not " +
                std::to_string(sizeof(ncclUniqueId)) + ": not written by unipool's rank 0");
      ncclUniqueId id;
      std::memcpy(&id, bytes.data(), sizeof id);
      return id;
    }
    if (waited.seconds() >= timeout_s) {
      throw Error("rank " + std::to_string(rank) + ": the NCCL id file " + path +
                  " did not appear within " + seconds_text(timeout_s) +
                  " s: rank 0 has not started, has failed, or writes it elsewhere (every rank "
                  "must be given the same directory and tag)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

std::string nccl_id_file(const std::string& directory, const std::string& tag) {
  check(!directory.empty(), "NCCL id file: no directory given");
  check(!tag.empty() && tag.find('/') == std::string::npos,
        "NCCL id file: the tag \"" + tag + "\" must be a non-empty file name part (no '/')");
  return directory + "/nccl-id-" + tag;
}

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap) {
  const int rank = bootstrap.rank();
  // A node with more ranks than GPUs stops every rank, with the failing ranks' messages.
  std::string problem;
  try {
    cuda::select_device(bootstrap.local_rank());
  } catch (const Error& e) {
    problem = e.what();
  }
  check_on_every_rank(bootstrap, problem);

  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank == 0) {
    const ncclResult_t rc = ncclGetUniqueId(&id);
    if (rc != ncclSuccess)
      problem = std::string("ncclGetUniqueId failed: ") + ncclGetErrorString(rc);
  }
  check_on_every_rank(bootstrap, problem);
  bootstrap.broadcast(&id, sizeof id, 0);
  return std::make_unique<Nccl>(rank, bootstrap.size(), bootstrap.local_rank(), id,
                                bootstrap.timeout(), &bootstrap);
}

std::unique_ptr<Communicator> make_nccl_communicator_from_file(int rank, int size, int local_rank,
                                                               const std::string& directory,
                                                               const std::string& tag,
                                                               double timeout_s) {
  check(size >= 1 && rank >= 0 && rank < size && local_rank >= 0,
        "NCCL communicator: rank " + std::to_string(rank) + " of " + std::to_string(size) +
            " ranks, local rank " + std::to_string(local_rank));
  check(timeout_s > 0, "NCCL communicator: timeout " + seconds_text(timeout_s) + " s");
  const std::string path = nccl_id_file(directory, tag);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank == 0) {
    cuda::select_device(local_rank);
    check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    make_dirs(directory);
    write_file_atomic(path, std::string(reinterpret_cast<const char*>(&id), sizeof id));
  } else {
    id = wait_for_id_file(path, rank, timeout_s);  // first: no GPU is touched before it
    cuda::select_device(local_rank);
  }
  auto comm = std::make_unique<Nccl>(rank, size, local_rank, id, timeout_s, nullptr);
  // The init completed on rank 0 only once every rank had joined, i.e. had read the file.
  if (rank == 0) std::remove(path.c_str());
  return comm;
}

}  // namespace unipool

#endif  // UNIPOOL_HAVE_NCCL
