// Checkpoints (SPEC.md §4): out_dir/ckpt-STEP/ holding
//   model.safetensors      fp32 master weights under the SPEC tensor names
//   optimizer.safetensors  AdamW moments: exp_avg.<name>, exp_avg_sq.<name>
//   state.json             step, config, data position, RNG, pool-loss counts ĝ
// A checkpoint is built in a temporary directory, every file fsynced, then renamed into place and
// the parent fsynced: a crash leaves either the complete checkpoint or none. Older ones beyond
// train.ckpt_keep are removed only after the new one is in place.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "model/layout.h"

namespace unipool {

// Writes ckpt-STEP and prunes to the newest `keep`. Returns the checkpoint directory.
std::string save_checkpoint(const std::string& out_dir, int step, int keep, const Layout& layout,
                            const float* params, const float* exp_avg, const float* exp_avg_sq,
                            const nlohmann::json& state);

// Reads DIR/state.json; Error when it is missing, not JSON, or lacks an integer "step" and an
// object "config" (the rest is read by whoever needs it).
nlohmann::json read_checkpoint_state(const std::string& dir);

// Loads the weights and AdamW moments of a checkpoint directory into the arenas. Errors name the
// file and the tensor on any missing, extra or mis-shaped tensor.
void load_checkpoint(const std::string& dir, const Layout& layout, float* params, float* exp_avg,
                     float* exp_avg_sq);

// Loads model weights (SPEC names and shapes, all present, none extra) from a safetensors file.
void load_weights(const std::string& path, const Layout& layout, float* params);

// The newest complete ckpt-STEP directory in out_dir, or "" when there is none.
std::string latest_checkpoint(const std::string& out_dir);

// The step number of a ckpt-STEP directory name (path allowed), or -1.
int checkpoint_step(const std::string& dir);

}  // namespace unipool
