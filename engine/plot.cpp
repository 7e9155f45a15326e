// `unipool plot` (engine/plot.h): runs tools/plot_runs.py with Debian's Python.
#include "engine/plot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "base/error.h"
#include "base/fsutil.h"

namespace unipool {

namespace {

// tools/plot_runs.py of the working directory's checkout, else of the source tree this binary was
// built from (next to its configs/).
std::string plot_script() {
  for (const std::string& path : {std::string("tools/plot_runs.py"),
                                  std::string(UNIPOOL_CONFIG_DIR "/../tools/plot_runs.py")})
    if (path_exists(path)) return path;
  throw Error("unipool plot: tools/plot_runs.py not found (run it from the source tree)");
}

}  // namespace

void run_plot(const PlotOptions& o) {
  check(!o.runs.empty(), "unipool plot: name at least one run directory");
  check(o.format == "png" || o.format == "svg", "--format: png or svg, got '" + o.format + "'");
  // Debian's python3 first: its matplotlib is what scripts/setup.sh installs (a python3 earlier
  // on PATH, a pyenv one for example, may not have it).
  const std::string python = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  std::vector<std::string> args = {python, plot_script()};
  args.insert(args.end(), o.runs.begin(), o.runs.end());
  args.insert(args.end(), {"--format", o.format});
  if (!o.out.empty()) args.insert(args.end(), {"--out", o.out});
  std::fflush(stdout);
  const pid_t pid = ::fork();
  check(pid >= 0, "unipool plot: cannot start " + python);
  if (pid == 0) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::perror(("unipool plot: cannot run " + python).c_str());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "unipool plot: " + args[1] + " failed (exit status " +
            std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")");
}

}  // namespace unipool
