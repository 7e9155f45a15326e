// `unipool probe`: where a checkpoint's tokens go (docs/analysis.md). The model runs in evaluation
// mode (ĝ never moves) over the first `batches` validation micro-batches and the routing measures
// of engine/routing_analysis.h are taken from its choices: per layer the tokens per expert,
// entropy, top-16 share, effective experts; over layers the dead experts, the Jaccard of the top-16
// sets, the union coverage of the top-K sets; per token the distinct-expert reuse U(x)/L and its
// path of top-1 experts. Then the perturbations: each deep-half layer's routing replaced by uniform
// random experts (the UniPool paper's probe: among the layer's own experts, or for a pool among the
// layer's most used experts measured on the next `batches` micro-batches, "matched", and among the
// whole pool, "full_pool"), and every layer's chosen ids permuted at random (the PathMoE paper's
// shuffling), each with its validation loss (and, given a task file, its zero-shot accuracy and the
// change, engine/zero_shot.h). Seeded: the same seed gives the same numbers, on any
// thread count. Writes the JSON to `out` (default DIR/probe.json, DIR as given: a run directory or
// a checkpoint's) and prints a summary.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace unipool {

struct ProbeOptions {
  std::string checkpoint;              // a ckpt-STEP directory, or a run directory (its newest)
  std::vector<std::string> overrides;  // "key=value" over the checkpoint's config
  int batches = 4;       // validation micro-batches probed (and as many for "matched")
  uint64_t seed = 1234;  // the random routing and the shuffles
  std::string out;       // default: <checkpoint dir>/probe.json
  // With a task (engine/tasks.h): its zero-shot accuracy with the checkpoint's routing, and under
  // each random-routing perturbation its accuracy and the change (the paper's Table 4).
  std::string task;  // "": none
  std::string data;  // the task's file
  int limit = 0;     // its first N examples (0: all)
};

// Runs the probe and writes the file; returns its JSON. Error for a dense model, a missing or
// invalid checkpoint, missing data.
nlohmann::json run_probe(const ProbeOptions& options);

}  // namespace unipool
