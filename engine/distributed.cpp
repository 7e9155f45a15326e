#include "engine/distributed.h"

#include <cstdlib>
#include <memory>

#include "base/error.h"
#include "base/json_fields.h"
#include "base/sha256.h"

#ifdef UNIPOOL_HAVE_NCCL
#include "engine/comm_nccl.h"
#endif

namespace unipool {

namespace {

// srun started several tasks but no MPI environment: the ranks come from Slurm's variables.
bool slurm_without_mpi(int* rank, int* size, int* local_rank) {
  if (launched_by_mpi()) return false;
  // SLURM_STEP_NUM_TASKS is set for the tasks srun starts (SLURM_NTASKS also in the batch script).
  const char* ntasks = std::getenv("SLURM_STEP_NUM_TASKS");
  const char* procid = std::getenv("SLURM_PROCID");
  const char* localid = std::getenv("SLURM_LOCALID");
  if (ntasks == nullptr || procid == nullptr || std::atoi(ntasks) <= 1) return false;
  *size = std::atoi(ntasks);
  *rank = std::atoi(procid);
  *local_rank = localid != nullptr ? std::atoi(localid) : 0;
  return true;
}

}  // namespace

Communicator& training_communicator(BackendKind backend, const Config& c) {
  static std::unique_ptr<Communicator> gpu_ranks;  // NCCL, when the run has several GPU ranks
  Communicator* comm = nullptr;
  if (backend == BackendKind::cuda) {
    int rank = 0, size = 1, local_rank = 0;
    if (slurm_without_mpi(&rank, &size, &local_rank)) {
#ifdef UNIPOOL_HAVE_NCCL
      const char* job = std::getenv("SLURM_JOB_ID");
      const char* step = std::getenv("SLURM_STEP_ID");
      gpu_ranks = make_nccl_communicator_from_file(
          rank, size, local_rank, c.train.out_dir,
          std::string(job != nullptr ? job : "job") + "." + (step != nullptr ? step : "0"),
          c.train.comm_timeout_s);
#else
      throw Error("srun started " + std::to_string(size) +
                  " GPU ranks but this build has no NCCL (CUDA toolkit without nccl.h)");
#endif
    } else if (world().size() > 1) {
      world().set_timeout(c.train.comm_timeout_s);
#ifdef UNIPOOL_HAVE_NCCL
      gpu_ranks = make_nccl_communicator(world());
#else
      throw Error("this run has " + std::to_string(world().size()) +
                  " GPU ranks but this build has no NCCL (CUDA toolkit without nccl.h)");
#endif
    }
    comm = gpu_ranks ? gpu_ranks.get() : &world();
  } else {
    comm = &world();
  }
  comm->set_timeout(c.train.comm_timeout_s);
  return *comm;
}

void check_same_config_on_every_rank(Communicator& comm, const Config& c) {
  if (comm.size() == 1) return;
  const std::string text = dump_json(c.to_json());
  const std::string mine = sha256_hex(text.data(), text.size());
  const std::string rank0 = comm.broadcast_string(mine, 0);
  check_on_every_rank(
      comm, mine == rank0 ? std::string()
                          : "its config differs from rank 0's (config sha256 " +
                                mine.substr(0, 12) + " vs " + rank0.substr(0, 12) +
                                "): every rank must be started with the same --config and --set");
}

}  // namespace unipool
