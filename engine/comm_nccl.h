// The NCCL transport of engine/comm.h: GPU ranks, one rank per GPU (the rank's local_rank is its
// device). The bulk collectives (reduce_scatter_sum, all_gather) take device pointers and run on
// the CUDA backend's stream, so they are ordered with the training kernels; the small ones (sums of
// doubles, broadcast, barrier, send, recv) take host memory and go through a device staging
// buffer. Sums stay in rank order whatever NCCL's algorithms: NCCL only moves bytes, the additions
// are ours (kernels/cuda/comm_sum.h on the device, a host loop for the doubles).
//
// Every collective waits for its completion by polling, and after timeout() seconds aborts the
// NCCL communicator and throws Error (a rank failed, stopped or is stuck).
//
// Only in builds with NCCL (UNIPOOL_HAVE_NCCL: CMake found nccl.h and libnccl in the CUDA toolkit).
#pragma once
#include <memory>
#include <string>

#include "engine/comm.h"

namespace unipool {

#ifdef UNIPOOL_HAVE_NCCL

// The GPU ranks of an MPI run: rank, size and local rank are `bootstrap`'s (the MPI world), whose
// broadcast carries NCCL's unique id from rank 0 to the others. Selects the GPU local_rank() first
// (Error on every rank when a node has more ranks than GPUs). Call it before the first CUDA op: the
// backend's stream is created on the device current at that time. The NCCL communicator's timeout
// starts as bootstrap's, and its abort() ends every rank through bootstrap.abort(), so `bootstrap`
// must outlive it (world() does).
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap);

// The GPU ranks of a launch without MPI (srun without PMI, a script starting one process per GPU):
// rank 0 writes NCCL's unique id atomically to nccl_id_file(directory, tag) (a directory every rank
// sees, e.g. on the shared file system), the others wait up to timeout_s seconds for it to appear,
// before touching the GPU (Error naming the file when it does not). Rank 0 removes the file once
// every rank has joined. The tag must be unique to the launch (e.g.
// "$SLURM_JOB_ID.$SLURM_STEP_ID"): a file left by an earlier launch that failed would be taken for
// this one's. timeout_s is also the communicator's timeout(). abort() ends this process only (the
// others time out).
std::unique_ptr<Communicator> make_nccl_communicator_from_file(int rank, int size, int local_rank,
                                                               const std::string& directory,
                                                               const std::string& tag,
                                                               double timeout_s);

// directory/"nccl-id-<tag>": where make_nccl_communicator_from_file's rank 0 writes the id.
std::string nccl_id_file(const std::string& directory, const std::string& tag);

#endif  // UNIPOOL_HAVE_NCCL

}  // namespace unipool
