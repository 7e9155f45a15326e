// The ranks of a training run (docs/distributed.md): which transport joins them, and the checks
// every rank makes at start-up so that a mismatch is a clear error on every rank, never a hang.
#pragma once
#include <string>

#include "base/error.h"
#include "engine/comm.h"
#include "engine/config.h"

namespace unipool {

// The communicator that joins this process to the other ranks of its run, for training on
// `backend`: the MPI world (or a single process) for CPU ranks; for GPU ranks NCCL, its unique id
// shared through MPI, or (srun without MPI: SLURM_STEP_NUM_TASKS > 1, SLURM_PROCID,
// SLURM_LOCALID) through a file in train.out_dir. Each GPU rank uses
// the device numbered by its local rank. Its timeout is train.comm_timeout_s. Lives until exit.
Communicator& training_communicator(BackendKind backend, const Config& config);

// Error on every rank when the ranks do not run the same config (its canonical JSON is compared
// by sha256): the message names the ranks that differ from rank 0.
void check_same_config_on_every_rank(Communicator& comm, const Config& config);

// Runs fn on this rank; an Error it throws on any rank becomes an Error on every rank naming the
// ranks that failed and why (check_on_every_rank). For start-up work such as opening data.
template <class Fn>
void on_every_rank(Communicator& comm, Fn&& fn) {
  std::string problem;
  try {
    fn();
  } catch (const Error& e) {
    problem = e.what();
    if (problem.empty()) problem = "failed";
  }
  check_on_every_rank(comm, problem);
}

}  // namespace unipool
