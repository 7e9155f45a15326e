#include "model/lock_partition.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <iterator>
#include <numeric>
#include <string>

#include "base/error.h"

#ifdef UNIPOOL_HAVE_CBC
#include <Cbc_C_Interface.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#endif

namespace unipool {

namespace {

// rank_l(e) for every layer: the position of e when the layer's counts are sorted descending (a
// stable sort: ties to the lower id).
std::vector<std::vector<int>> tie_ranks(const std::vector<std::vector<double>>& counts) {
  const int L = int(counts.size()), M = int(counts[0].size());
  std::vector<std::vector<int>> rank(static_cast<size_t>(L),
                                     std::vector<int>(static_cast<size_t>(M)));
  for (int l = 0; l < L; ++l) {
    std::vector<int> order(static_cast<size_t>(M));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return counts[size_t(l)][size_t(a)] > counts[size_t(l)][size_t(b)];
    });
    for (int r = 0; r < M; ++r) rank[size_t(l)][size_t(order[size_t(r)])] = r;
  }
  return rank;
}

// tie(l, e) = rank_l(e) + 1 + (e+1)/(M+1) for every layer.
std::vector<std::vector<double>> tie_breaks(const std::vector<std::vector<double>>& counts) {
  const int L = int(counts.size()), M = int(counts[0].size());
  const auto rank = tie_ranks(counts);
  std::vector<std::vector<double>> tie(static_cast<size_t>(L),
                                       std::vector<double>(static_cast<size_t>(M)));
  for (int l = 0; l < L; ++l)
    for (int e = 0; e < M; ++e)
      tie[size_t(l)][size_t(e)] = rank[size_t(l)][size_t(e)] + 1 + double(e + 1) / double(M + 1);
  return tie;
}

// tieint(l, e) = (M+1)·tie(l, e) = (rank_l(e) + 1)·(M + 1) + e + 1, an integer.
std::vector<std::vector<double>> tie_ints(const std::vector<std::vector<double>>& counts) {
  const int L = int(counts.size()), M = int(counts[0].size());
  const auto rank = tie_ranks(counts);
  std::vector<std::vector<double>> tie(static_cast<size_t>(L),
                                       std::vector<double>(static_cast<size_t>(M)));
  for (int l = 0; l < L; ++l)
    for (int e = 0; e < M; ++e)
      tie[size_t(l)][size_t(e)] =
          double(rank[size_t(l)][size_t(e)] + 1) * double(M + 1) + double(e + 1);
  return tie;
}

double row_sum(const std::vector<double>& row) {
  double s = 0;
  for (double x : row) s += x;
  return s;
}

void check_counts(const std::vector<std::vector<double>>& counts) {
  check(!counts.empty() && !counts[0].empty(), "pool partition: empty count matrix");
  const size_t L = counts.size(), M = counts[0].size();
  check(M % L == 0, "pool partition: " + std::to_string(M) + " experts do not split into " +
                        std::to_string(L) + " equal sets");
  for (const auto& row : counts) {
    check(row.size() == M, "pool partition: the count rows differ in length");
    for (double x : row)
      check(std::isfinite(x) && x >= 0, "pool partition: counts must be finite and >= 0");
  }
}

// Σ_{e ∈ set_l} C̃[l][e] / Σ_e C̃[l][e] for every layer (1 for a zero row).
std::vector<double> set_coverage(const std::vector<std::vector<double>>& counts,
                                 const std::vector<std::vector<int>>& sets) {
  std::vector<double> out;
  for (size_t l = 0; l < sets.size(); ++l) {
    const double total = row_sum(counts[l]);
    double kept = 0;
    for (int e : sets[l]) kept += counts[l][size_t(e)];
    out.push_back(total > 0 ? kept / total : 1.0);
  }
  return out;
}

}  // namespace

std::vector<int> min_cost_assignment(const std::vector<double>& cost, int n) {
  check(n >= 0 && cost.size() == size_t(n) * size_t(n), "min_cost_assignment: need an n×n matrix");
  // Rows and columns 1-based; u, v the potentials, p[j] the row matched to column j, way[j] the
  // previous column on the shortest augmenting path. For each row, a Dijkstra-like search over
  // reduced costs adds it to the matching (the classic e-maxx formulation).
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(size_t(n) + 1, 0.0), v(size_t(n) + 1, 0.0);
  std::vector<int> p(size_t(n) + 1, 0), way(size_t(n) + 1, 0);
  for (int i = 1; i <= n; ++i) {
    p[0] = i;
    int j0 = 0;
    std::vector<double> minv(size_t(n) + 1, inf);
    std::vector<char> used(size_t(n) + 1, 0);
    do {
      used[size_t(j0)] = 1;
      const int i0 = p[size_t(j0)];
      double delta = inf;
      int j1 = 0;
      for (int j = 1; j <= n; ++j) {
        if (used[size_t(j)]) continue;
        const double cur =
            cost[size_t(i0 - 1) * size_t(n) + size_t(j - 1)] - u[size_t(i0)] - v[size_t(j)];
        if (cur < minv[size_t(j)]) {
          minv[size_t(j)] = cur;
          way[size_t(j)] = j0;
        }
        if (minv[size_t(j)] < delta) {
          delta = minv[size_t(j)];
          j1 = j;
        }
      }
      for (int j = 0; j <= n; ++j) {
        if (used[size_t(j)]) {
          u[size_t(p[size_t(j)])] += delta;
          v[size_t(j)] -= delta;
        } else {
          minv[size_t(j)] -= delta;
        }
      }
      j0 = j1;
    } while (p[size_t(j0)] != 0);
    do {
      const int j1 = way[size_t(j0)];
      p[size_t(j0)] = p[size_t(j1)];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int> assignment(size_t(n), -1);
  for (int j = 1; j <= n; ++j) assignment[size_t(p[size_t(j)] - 1)] = j - 1;
  return assignment;
}

double best_effort_objective(const std::vector<std::vector<double>>& counts,
                             const std::vector<std::vector<int>>& sets) {
  check_counts(counts);
  const auto tie = tie_breaks(counts);
  double value = 0;
  for (size_t l = 0; l < sets.size(); ++l) {
    const double scale = std::max(1.0, row_sum(counts[l]));
    for (int e : sets[l]) value += counts[l][size_t(e)] / scale - 1e-7 * tie[l][size_t(e)];
  }
  return value;
}

std::vector<std::vector<double>> ema_smoothed_counts(
    const std::vector<std::vector<std::vector<double>>>& history, int lookback, double alpha) {
  check(!history.empty(), "ema_smoothed_counts: no validation counts yet");
  check(lookback >= 1 && alpha > 0 && alpha <= 1,
        "ema_smoothed_counts: need lookback >= 1 and 0 < alpha <= 1");
  const int n = std::min<int>(lookback, int(history.size()));
  const auto& newest = history.back();
  std::vector<double> w(static_cast<size_t>(n));
  double total = 0;
  for (int a = 0; a < n; ++a) total += w[size_t(a)] = alpha * std::pow(1.0 - alpha, a);
  std::vector<std::vector<double>> out(newest.size());
  for (size_t l = 0; l < newest.size(); ++l) out[l].assign(newest[l].size(), 0.0);
  for (int a = 0; a < n; ++a) {
    const auto& snap = history[history.size() - 1 - size_t(a)];
    check(snap.size() == newest.size(), "ema_smoothed_counts: snapshots of different shapes");
    for (size_t l = 0; l < snap.size(); ++l) {
      check(snap[l].size() == newest[l].size(),
            "ema_smoothed_counts: snapshots of different shapes");
      for (size_t e = 0; e < snap[l].size(); ++e) out[l][e] += w[size_t(a)] / total * snap[l][e];
    }
  }
  return out;
}

PoolPartition best_effort_partition(const std::vector<std::vector<double>>& counts) {
  check_counts(counts);
  const int L = int(counts.size()), M = int(counts[0].size()), K = M / L;
  const auto tie = tie_breaks(counts);
  // Row r = l·K + j (slot j of layer l) against expert e.
  std::vector<double> cost(size_t(M) * size_t(M));
  for (int l = 0; l < L; ++l) {
    const double scale = std::max(1.0, row_sum(counts[size_t(l)]));
    for (int j = 0; j < K; ++j)
      for (int e = 0; e < M; ++e)
        cost[size_t(l * K + j) * size_t(M) + size_t(e)] =
            -counts[size_t(l)][size_t(e)] / scale + 1e-7 * tie[size_t(l)][size_t(e)];
  }
  const std::vector<int> assignment = min_cost_assignment(cost, M);
  PoolPartition out;
  out.sets.assign(size_t(L), {});
  for (int r = 0; r < M; ++r) out.sets[size_t(r / K)].push_back(assignment[size_t(r)]);
  for (auto& set : out.sets) std::sort(set.begin(), set.end());
  out.coverage = set_coverage(counts, out.sets);
  out.objective = best_effort_objective(counts, out.sets);
  return out;
}

double coverage_tie_objective(const std::vector<std::vector<double>>& counts,
                              const std::vector<std::vector<int>>& sets) {
  check_counts(counts);
  const auto tie = tie_ints(counts);
  double value = 0;
  for (size_t l = 0; l < sets.size(); ++l)
    for (int e : sets[l]) value += tie[l][size_t(e)];
  return value;
}

#ifdef UNIPOOL_HAVE_CBC

bool have_milp_solver() {
  return true;
}

namespace {

// The coverage rows are normalised by the layer's total, so tolerances are relative to it. CBC
// keeps Clp's default primal feasibility tolerance, 1e-7 (with a tighter one, 1e-9 or 1e-10, Clp
// fails its assertions far more often: see kAttempts). So CBC may accept a layer up to ~1e-7
// below its row's bound; the result is checked against coverage − kCoverageSlack, and when a layer
// falls short of that the solve is repeated with every coverage row raised by kCoverageRetry.
constexpr double kCoverageSlack = 1e-9;
constexpr double kCoverageRetry = 1e-6;

struct CbcDeleter {
  void operator()(Cbc_Model* m) const { Cbc_deleteModel(m); }
};

// Throws unless p is a partition into sets of K, and, when check_coverage, every layer meets the
// coverage threshold.
void check_partition(const std::vector<std::vector<double>>& counts, const PoolPartition& p,
                     double coverage, bool check_coverage) {
  const size_t L = counts.size(), M = counts[0].size(), K = M / L;
  std::vector<int> owners(M, 0);
  check(p.sets.size() == L, "coverage_partition: the solver returned the wrong number of sets");
  for (size_t l = 0; l < L; ++l) {
    check(p.sets[l].size() == K, "coverage_partition: layer " + std::to_string(l) + " got " +
                                     std::to_string(p.sets[l].size()) + " experts, not " +
                                     std::to_string(K));
    for (int e : p.sets[l]) {
      check(e >= 0 && size_t(e) < M, "coverage_partition: expert id out of range");
      ++owners[size_t(e)];
    }
    if (check_coverage)
      check(p.coverage[l] >= coverage - kCoverageSlack,
            "coverage_partition: layer " + std::to_string(l) + " keeps " +
                std::to_string(p.coverage[l]) + " of its counts, below the threshold " +
                std::to_string(coverage));
  }
  for (size_t e = 0; e < M; ++e)
    check(owners[e] == 1, "coverage_partition: expert " + std::to_string(e) + " has " +
                              std::to_string(owners[e]) + " owners, not 1");
}

// One CBC solve of the MILP with the coverage rows' bound at `bound`. found: a partition meeting
// the rows (sets filled); proven: the search finished (optimum proven, or no partition exists).
struct MilpResult {
  bool found = false, proven = false;
  std::vector<std::vector<int>> sets;
};

using Settings = std::vector<std::pair<const char*, const char*>>;

MilpResult solve_milp(const std::vector<std::vector<double>>& counts, double bound, int node_limit,
                      const Settings& extra) {
  const int L = int(counts.size()), M = int(counts[0].size()), K = M / L;
  const auto tie = tie_ints(counts);
  // Column j = l·M + e is x[l][e]. Rows: 0..L-1 the cardinality of layer l (= K); L..L+M-1 the
  // owner count of expert e (= 1); then one coverage row per layer with a non-zero total,
  // Σ_e (C̃[l][e] / total_l)·x[l][e] ≥ bound (normalised, so the tolerance is relative).
  std::vector<int> coverage_row(size_t(L), -1);
  std::vector<double> total(static_cast<size_t>(L));
  int rows = L + M;
  for (int l = 0; l < L; ++l) {
    total[size_t(l)] = row_sum(counts[size_t(l)]);
    if (total[size_t(l)] > 0) coverage_row[size_t(l)] = rows++;
  }
  const int cols = L * M;
  std::vector<CoinBigIndex> start{0};
  std::vector<int> index;
  std::vector<double> value, obj(static_cast<size_t>(cols));
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < M; ++e) {
      index.push_back(l);
      value.push_back(1.0);
      index.push_back(L + e);
      value.push_back(1.0);
      const double c = counts[size_t(l)][size_t(e)];
      if (coverage_row[size_t(l)] >= 0 && c > 0) {
        index.push_back(coverage_row[size_t(l)]);
        value.push_back(c / total[size_t(l)]);
      }
      start.push_back(CoinBigIndex(index.size()));
      obj[size_t(l * M + e)] = tie[size_t(l)][size_t(e)];
    }
  }
  const std::vector<double> col_lb(static_cast<size_t>(cols), 0.0),
      col_ub(static_cast<size_t>(cols), 1.0);
  std::vector<double> row_lb(static_cast<size_t>(rows)), row_ub(static_cast<size_t>(rows));
  for (int l = 0; l < L; ++l) row_lb[size_t(l)] = row_ub[size_t(l)] = K;
  for (int e = 0; e < M; ++e) row_lb[size_t(L + e)] = row_ub[size_t(L + e)] = 1;
  for (int l = 0; l < L; ++l) {
    if (coverage_row[size_t(l)] < 0) continue;
    row_lb[size_t(coverage_row[size_t(l)])] = bound;
    row_ub[size_t(coverage_row[size_t(l)])] = DBL_MAX;  // COIN_DBL_MAX: no upper bound
  }

  std::unique_ptr<Cbc_Model, CbcDeleter> model(Cbc_newModel());
  check(model != nullptr, "coverage_partition: CBC could not create a model");
  Cbc_Model* m = model.get();
  Cbc_loadProblem(m, cols, rows, start.data(), index.data(), value.data(), col_lb.data(),
                  col_ub.data(), obj.data(), row_lb.data(), row_ub.data());
  for (int j = 0; j < cols; ++j) Cbc_setInteger(m, j);
  Cbc_setObjSense(m, 1);  // minimise
  // Quiet, one thread, exact: the objective is integer, so a gap below 1 proves the optimum. The
  // settings go both to the model and to CBC's command-line driver, which Cbc_solve runs.
  const std::string nodes = std::to_string(node_limit);
  Cbc_setLogLevel(m, 0);
  Cbc_setAllowableGap(m, 0.5);
  Cbc_setAllowableFractionGap(m, 0);
  Cbc_setMaximumNodes(m, node_limit);
  const std::pair<const char*, const char*> settings[] = {
      {"log", "0"},     {"slog", "0"},  {"threads", "0"},
      {"allow", "0.5"}, {"ratio", "0"}, {"maxN", nodes.c_str()}};
  for (const auto& [name, setting] : settings) Cbc_setParameter(m, name, setting);
  for (const auto& [name, setting] : extra) Cbc_setParameter(m, name, setting);
  Cbc_solve(m);

  MilpResult out;
  const bool infeasible = Cbc_isProvenInfeasible(m) != 0;
  const double* x = infeasible ? nullptr : Cbc_bestSolution(m);
  const auto status = [&]() {
    return " (CBC status " + std::to_string(Cbc_status(m)) + ", secondary " +
           std::to_string(Cbc_secondaryStatus(m)) + ")";
  };
  if (x == nullptr) {
    check(infeasible || Cbc_isNodeLimitReached(m),
          "coverage_partition: CBC stopped without a result" + status());
    out.proven = infeasible;
    return out;
  }
  out.found = true;
  out.proven = Cbc_isProvenOptimal(m) != 0;
  check(out.proven || Cbc_isNodeLimitReached(m),
        "coverage_partition: CBC returned a partition neither proven optimal nor stopped by the "
        "node limit" +
            status());
  out.sets.assign(size_t(L), {});
  for (int l = 0; l < L; ++l)
    for (int e = 0; e < M; ++e)
      if (x[size_t(l * M + e)] > 0.5) out.sets[size_t(l)].push_back(e);
  return out;
}

// Debian builds CBC and Clp with their assertions on, and on rare inputs one of them fails (seen:
// ClpPrimalColumnSteepest's "reducedCost(bestSequence) < 0.0", about 1 pool in 1,600 random ones):
// abort() would end the training process. So each solve runs in a forked child that sends the
// result back through a pipe; a child that dies is retried with the next settings of kAttempts.
// The child runs only CBC (no threads, no CUDA, no MPI), with the default action for fatal signals
// (not the handlers it inherits: a test framework's, the trainer's) and no core dump, and leaves
// with _exit.
const Settings kAttempts[] = {
    {},                                              // CBC's defaults
    {{"primalP", "dantzig"}, {"dualP", "dantzig"}},  // no steepest-edge pricing
    {{"primalP", "dantzig"}, {"dualP", "dantzig"}, {"scaling", "off"}, {"presolve", "off"}},
};

bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

// The child's message: int32 words [0, found, proven, L·K expert ids] or [1, message bytes...].
std::vector<char> read_all(int fd) {
  std::vector<char> out;
  char buf[4096];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    out.insert(out.end(), buf, buf + r);
  }
  return out;
}

// solve_milp in a child process: the result, an Error the child threw rethrown here, or null
// when the child died. When fork() fails, solve_milp runs in this process.
std::unique_ptr<MilpResult> solve_milp_isolated(const std::vector<std::vector<double>>& counts,
                                                double bound, int node_limit,
                                                const Settings& extra) {
  const size_t L = counts.size(), K = counts[0].size() / L;
  int fds[2];
  check(::pipe(fds) == 0, "coverage_partition: pipe() failed");
  const pid_t pid = ::fork();
  if (pid < 0) {  // no child (no memory for one?): solve here, unprotected
    ::close(fds[0]);
    ::close(fds[1]);
    return std::make_unique<MilpResult>(solve_milp(counts, bound, node_limit, extra));
  }
  if (pid == 0) {  // the child: dies by the default action of a fatal signal, without core dump
    ::close(fds[0]);
    for (int sig : {SIGABRT, SIGSEGV, SIGFPE, SIGILL, SIGBUS}) std::signal(sig, SIG_DFL);
    const rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    std::vector<int32_t> words;
    std::string error;
    try {
      const MilpResult r = solve_milp(counts, bound, node_limit, extra);
      words = {0, r.found, r.proven};
      for (const auto& set : r.sets)
        for (int e : set) words.push_back(e);
    } catch (const std::exception& e) {
      error = e.what();
    }
    bool ok;
    if (error.empty()) {
      ok = write_all(fds[1], words.data(), words.size() * sizeof(int32_t));
    } else {
      const int32_t one = 1;
      ok = write_all(fds[1], &one, sizeof one) && write_all(fds[1], error.data(), error.size());
    }
    ::_exit(ok ? 0 : 3);
  }
  ::close(fds[1]);
  const std::vector<char> msg = read_all(fds[0]);
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || msg.size() < sizeof(int32_t))
    return nullptr;
  int32_t code;
  std::memcpy(&code, msg.data(), sizeof code);
  if (code == 1) throw Error(std::string(msg.begin() + sizeof code, msg.end()));
  std::vector<int32_t> words(msg.size() / sizeof(int32_t));
  std::memcpy(words.data(), msg.data(), words.size() * sizeof(int32_t));
  auto out = std::make_unique<MilpResult>();
  check(words.size() >= 3 && code == 0, "coverage_partition: a garbled reply from the solver");
  out->found = words[1] != 0;
  out->proven = words[2] != 0;
  if (out->found) {
    check(words.size() == 3 + L * K, "coverage_partition: a garbled reply from the solver");
    out->sets.assign(L, {});
    for (size_t l = 0; l < L; ++l)
      out->sets[l].assign(words.begin() + 3 + long(l * K), words.begin() + 3 + long((l + 1) * K));
  }
  return out;
}

// solve_milp through kAttempts until a child survives; Error when none does.
MilpResult solve_milp_robust(const std::vector<std::vector<double>>& counts, double bound,
                             int node_limit, int* runs) {
  for (const Settings& extra : kAttempts) {
    ++*runs;
    if (auto r = solve_milp_isolated(counts, bound, node_limit, extra)) return *r;
  }
  throw Error("coverage_partition: CBC died on every attempt (" +
              std::to_string(std::size(kAttempts)) +
              " settings tried; its message, if any, is on stderr)");
}

}  // namespace

CoveragePartition coverage_partition(const std::vector<std::vector<double>>& counts,
                                     double coverage, int node_limit) {
  check_counts(counts);
  check(std::isfinite(coverage) && coverage > 0 && coverage <= 1,
        "coverage_partition: coverage must be in (0, 1], got " + std::to_string(coverage));
  check(node_limit >= 1, "coverage_partition: the node limit must be >= 1");
  CoveragePartition out;
  for (const double raise : {0.0, kCoverageRetry}) {
    const MilpResult r = solve_milp_robust(counts, coverage + raise, node_limit, &out.solver_runs);
    if (!r.found) {
      out.partition = best_effort_partition(counts);
      out.status = PartitionStatus::best_effort;
      out.proven = r.proven;
      check_partition(counts, out.partition, coverage, false);
      return out;
    }
    PoolPartition& p = out.partition;
    p.sets = r.sets;
    p.coverage = set_coverage(counts, p.sets);
    const bool short_of_coverage = std::any_of(p.coverage.begin(), p.coverage.end(), [&](double c) {
      return c < coverage - kCoverageSlack;
    });
    if (short_of_coverage && raise == 0) continue;  // within CBC's tolerance, not ours: again
    check_partition(counts, p, coverage, true);
    p.objective = coverage_tie_objective(counts, p.sets);
    out.status = PartitionStatus::optimal;
    out.proven = r.proven;
    return out;
  }
  throw Error("coverage_partition: unreachable");
}

#else  // no CBC

bool have_milp_solver() {
  return false;
}

CoveragePartition coverage_partition(const std::vector<std::vector<double>>&, double, int) {
  throw Error(
      "coverage_partition: unipool was built without a MILP solver; install COIN-OR CBC "
      "(apt-get install coinor-libcbc-dev) and rebuild (CMake finds it with pkg-config)");
}

#endif  // UNIPOOL_HAVE_CBC

}  // namespace unipool
