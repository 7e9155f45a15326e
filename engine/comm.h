// The ranks of a data-parallel run and the collectives training needs (docs/distributed.md). One
// interface, three transports: a single process (size 1, every collective the identity), MPI for
// CPU ranks (Debian's OpenMPI, launched by mpirun or srun) and NCCL for GPU ranks (one rank per
// GPU, engine/comm_nccl.*). The trainer sees only this interface.
//
// Every collective is deterministic: its result depends on the inputs and the number of ranks only,
// never on the transport's algorithm, the network or timing. Sums in particular are taken in rank
// order, ((x_0 + x_1) + x_2) + …, by the rank that owns the result, so the same seed, config and
// number of ranks give bitwise identical training on any allocation.
//
// No collective hangs: one that has not completed after timeout() seconds (a rank failed, stopped
// or is stuck) throws Error saying so. After an Error on any rank, call abort(): the other ranks
// may be waiting in a collective that will never complete.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace unipool {

// The part [begin, end) of an array that one rank owns (ZeRO-1's optimizer shards, the chunks of
// a reduce-scatter).
struct Shard {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // the rank's index on its node (its GPU)
  virtual const char* transport() const = 0;

  // Rank `r`'s part of an array of `count` elements: the ranks' parts are contiguous and in rank
  // order, each ⌈count/size⌉ rounded up to kShardAlign elements (the last ones shorter or empty).
  static constexpr int64_t kShardAlign = 64;
  Shard shard(int64_t count, int r) const;
  Shard my_shard(int64_t count) const { return shard(count, rank_); }

  // ---- bulk collectives, on arrays in the training backend's memory
  // ------------------------------ (host memory for the single process and MPI, device memory for
  // NCCL: see on_device()).
  virtual bool on_device() const { return false; }
  // data[0..count): afterwards this rank's shard holds, for each element, the sum over ranks of
  // their copies of it, added in rank order; the rest of data is left as it was.
  virtual void reduce_scatter_sum(float* data, int64_t count) = 0;
  // data[0..count): afterwards every shard r holds rank r's values of it.
  virtual void all_gather(float* data, int64_t count) = 0;

  // ---- small collectives, on host memory
  // --------------------------------------------------------- values[0..n) ← Σ over ranks of every
  // rank's values, in rank order (losses, norms, counts).
  virtual void all_reduce_sum(double* values, int n) = 0;
  // bytes[0..n) ← root's bytes.
  virtual void broadcast(void* bytes, size_t n, int root) = 0;
  virtual void barrier() = 0;
  // Point to point: n bytes to rank `to` / from rank `from` (a rank may not send to itself).
  virtual void send(const void* bytes, size_t n, int to) = 0;
  virtual void recv(void* bytes, size_t n, int from) = 0;

  // ---- built from the above (host memory; checkpoints and start-up checks)
  // ------------------------- Root's full[0..count) ← every rank's shard of it (mine: this rank's
  // shard, my_shard(count)).
  void gather_shards(const float* mine, float* full, int64_t count, int root);
  // mine ← root's full[my_shard(count)].
  void scatter_shards(const float* full, float* mine, int64_t count, int root);
  // On root: every rank's string, in rank order; elsewhere: empty.
  std::vector<std::string> gather_strings(const std::string& mine, int root);
  // root's string on every rank.
  std::string broadcast_string(const std::string& s, int root);

  // Seconds a collective may wait before it throws (default 600).
  double timeout() const { return timeout_s_; }
  void set_timeout(double seconds) { timeout_s_ = seconds; }

  // Ends every rank of the run with exit status `code` (MPI_Abort); the single process returns.
  virtual void abort(int code) = 0;

 protected:
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  double timeout_s_ = 600;
};

// The communicator of this process: MPI when this build has it and the process was started by an
// MPI launcher (mpirun, srun with PMI/PMIx: the launcher's environment says so), else a single
// process. MPI is initialised on the first call and finalised at exit. Error when the environment
// says this process is one of several ranks (SLURM_STEP_NUM_TASKS > 1, ...) that this build cannot
// join.
Communicator& world();

// Whether an MPI launcher started this process: OpenMPI's mpirun, or a PMI/PMIx launcher (srun
// with --mpi, MPICH's hydra), as its environment says.
bool launched_by_mpi();

// After an Error: when world() was started and has more than one rank, ends them all (the others
// may be waiting for this one); otherwise returns.
void abort_world_after_error(int code);

// A single process (size 1), whatever the launcher: the identity collectives.
std::unique_ptr<Communicator> make_single_process_communicator();

// Throws Error on every rank when any rank's `problem` is non-empty, the message listing each
// failing rank's problem (so a check that fails on one rank stops all of them, clearly).
void check_on_every_rank(Communicator& comm, const std::string& problem);

}  // namespace unipool
