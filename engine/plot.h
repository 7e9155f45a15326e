// `unipool plot RUN_DIR... [--out DIR] [--format png|svg]`: the pictures of runs (loss curves, the
// layer × expert utilisation heatmap, entropy per layer, path coverage) drawn by tools/plot_runs.py
// with Debian's python3-matplotlib (docs/analysis.md §Pictures).
#pragma once
#include <string>
#include <vector>

namespace unipool {

struct PlotOptions {
  std::vector<std::string> runs;  // run directories
  std::string out;                // default: <first run>/plots
  std::string format = "png";     // png | svg
};

// Runs the script (Error when it is missing or fails, with its exit status).
void run_plot(const PlotOptions& options);

}  // namespace unipool
