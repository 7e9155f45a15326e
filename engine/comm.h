// The ranks of a data-parallel run and the collectives training needs (issue 13, in progress: the
// trainer does not use them yet). One interface, several transports: a single process (size 1,
// every collective the identity) and MPI for CPU ranks (Debian's OpenMPI, launched by mpirun or
// srun); NCCL for GPU ranks is to come behind the same interface.
//
// Every collective is deterministic: its result depends on the inputs and the number of ranks only,
// never on the transport's algorithm, the network or timing. Sums in particular are taken in rank
// order, ((x_0 + x_1) + x_2) + …, by the rank that owns the result, so the same seed, config and
// number of ranks give bitwise identical training on any allocation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace unipool {

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // the rank's index on its node (its GPU)
  virtual const char* transport() const = 0;

  // values[0..n) ← Σ over ranks of every rank's values, in rank order (losses, norms, counts).
  virtual void all_reduce_sum(double* values, int n) = 0;
  // data: size() chunks of `chunk` floats. Afterwards this rank's chunk (data + rank()·chunk)
  // holds the sum over ranks of their copies of it, in rank order; the other chunks are left as
  // they were. (The gradients of ZeRO-1: each rank owns one chunk of the arena.)
  virtual void reduce_scatter_sum(float* data, int64_t chunk) = 0;
  // data: size() chunks of `chunk` floats; afterwards every chunk r holds rank r's chunk r.
  virtual void all_gather(float* data, int64_t chunk) = 0;
  // bytes[0..n) ← root's bytes.
  virtual void broadcast(void* bytes, size_t n, int root) = 0;
  virtual void barrier() = 0;

 protected:
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

// The communicator of this process: MPI when this build has it and the process was started by an
// MPI launcher (mpirun, srun with PMI/PMIx: the launcher's environment says so), else a single
// process. MPI is initialised on the first call and finalised at exit.
Communicator& world();

// A single process (size 1), whatever the launcher: the identity collectives.
std::unique_ptr<Communicator> make_single_process_communicator();

}  // namespace unipool
