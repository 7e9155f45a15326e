// Checkpoints (docs/run-directory.md): out_dir/ckpt-STEP/ holding
//   model.safetensors      fp32 master weights under the tensor names of docs/run-directory.md
//   optimizer.safetensors  AdamW moments: exp_avg.<name>, exp_avg_sq.<name>
//   state.json             step, config, data position, RNG, pool-loss counts ĝ
// A checkpoint is built in a temporary directory, every file fsynced, then renamed into place and
// the parent fsynced: a crash leaves either the complete checkpoint or none. Older ones beyond
// train.ckpt_keep are removed only after the new one is in place.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "model/layout.h"

namespace unipool {

// The version of the state.json schema this build writes and reads. Reading a checkpoint whose
// state.json has another version is an Error (docs/run-directory.md §state.json).
constexpr int kStateFormatVersion = 1;

// state.json of a checkpoint at `step` (the schema lives here): format_version, step, tokens, the
// resolved config, the data position, the RNG note, and the model's own state (model_state's keys,
// e.g. "pool_loss", at the top level).
nlohmann::json make_checkpoint_state(int step, int64_t tokens, const Config& config,
                                     const nlohmann::json& train_data_position,
                                     const nlohmann::json& model_state);

// The checkpoint's config, completed with today's defaults for keys it does not have (so a key
// added later never makes an older checkpoint unusable), `overrides` applied. Error naming the
// checkpoint when its config does not load.
Config checkpoint_config(const std::string& dir, const nlohmann::json& state,
                         const std::vector<std::string>& overrides, bool check_data);

// Writes ckpt-STEP and prunes to the newest `keep`. Returns the checkpoint directory.
std::string save_checkpoint(const std::string& out_dir, int step, int keep, const Layout& layout,
                            const float* params, const float* exp_avg, const float* exp_avg_sq,
                            const nlohmann::json& state);

// Reads DIR/state.json; Error when it is missing, not JSON, has another format_version, or lacks
// an integer "step" and an object "config" (the rest is read by whoever needs it).
nlohmann::json read_checkpoint_state(const std::string& dir);

// Loads the weights and AdamW moments of a checkpoint directory into the arenas. Errors name the
// file and the tensor on any missing, extra or mis-shaped tensor.
void load_checkpoint(const std::string& dir, const Layout& layout, float* params, float* exp_avg,
                     float* exp_avg_sq);

// Loads model weights (the names and shapes of docs/run-directory.md, all present, none extra) from
// a safetensors file.
void load_weights(const std::string& path, const Layout& layout, float* params);

// A checkpoint opened for reading (eval, sample, --resume).
struct OpenedCheckpoint {
  std::string dir;       // the ckpt-STEP directory
  int step = -1;         // its optimizer step
  nlohmann::json state;  // its state.json (read_checkpoint_state)
  Config config;         // its config over today's defaults, overrides applied (checkpoint_config)
};

// `path` is a ckpt-STEP directory (holding state.json) or a run directory, whose newest complete
// checkpoint is used. Error when it does not exist, holds no checkpoint, its state.json or config
// is bad, or it has no model.safetensors.
OpenedCheckpoint open_checkpoint(const std::string& path, const std::vector<std::string>& overrides,
                                 bool check_data);

// Error naming the first model.* key whose value differs between the checkpoint's config and
// `config` (`what` starts the message, e.g. "--resume"): a checkpoint of another model is refused
// by name before any tensor is read.
void check_same_model(const OpenedCheckpoint& checkpoint, const Config& config,
                      const std::string& what);

// At the start of a run that holds the run directory's lock (so no other writer is alive): the
// leftovers of interrupted checkpoint writes are cleaned up. ckpt-N.tmp-PID (never published) and
// write_file_atomic's FILE.tmp.PID are removed; ckpt-N.old-PID (a checkpoint moved aside while its
// replacement was published) is moved back to ckpt-N if the replacement never arrived, else
// removed. Returns one line per action, for the console.
std::vector<std::string> recover_run_directory(const std::string& out_dir);

// Resuming from an older checkpoint branches the run: the checkpoints of steps > step move into
// out_dir/abandoned-<UTC time>/ (each rename atomic), so that a later plain --resume cannot
// continue the abandoned branch. Returns that directory ("" when nothing was newer).
std::string abandon_checkpoints_after(const std::string& out_dir, int step);

// A fresh run into out_dir (whose lock the caller holds): an out_dir holding anything but its lock
// file is another run's (or someone's files), refused with an Error naming what it holds unless
// `overwrite`. Then, once the run has its first good step, move_run_aside() moves everything in it
// into out_dir/replaced-<UTC time>/ (renames, nothing is deleted) and returns that directory (""
// when there was nothing to move).
void check_fresh_run_directory(const std::string& out_dir, bool overwrite);
std::string move_run_aside(const std::string& out_dir);

// The newest complete ckpt-STEP directory in out_dir, or "" when there is none.
std::string latest_checkpoint(const std::string& out_dir);

// The step number of a ckpt-STEP directory name (path allowed): STEP is 1 to 10 digits with a value
// of at most INT32_MAX; anything else gives -1.
int checkpoint_step(const std::string& dir);

}  // namespace unipool
