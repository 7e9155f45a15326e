// engine/comm.h without a launcher: world() is a single process whose collectives are the
// identity. (The MPI transport is tested under mpirun by tests/mpi/comm_collectives.cpp.)
#include <vector>

#include "base/error.h"
#include "engine/comm.h"
#include "tests/catch.h"

using namespace unipool;

TEST_CASE("a single process: rank 0 of 1, identity collectives", "[comm]") {
  const auto comm = make_single_process_communicator();
  CHECK(comm->rank() == 0);
  CHECK(comm->size() == 1);
  CHECK(comm->local_rank() == 0);
  std::vector<double> v = {1.5, -2.0};
  comm->all_reduce_sum(v.data(), 2);
  CHECK(v == std::vector<double>{1.5, -2.0});
  std::vector<float> f = {1, 2, 3};
  comm->reduce_scatter_sum(f.data(), 3);
  comm->all_gather(f.data(), 3);
  CHECK(f == std::vector<float>{1, 2, 3});
  char b = 'x';
  comm->broadcast(&b, 1, 0);
  CHECK(b == 'x');
  CHECK_THROWS_AS(comm->broadcast(&b, 1, 1), Error);
  comm->barrier();
  // ctest starts the test binary without an MPI launcher: the world is one process.
  CHECK(world().size() == 1);
}
