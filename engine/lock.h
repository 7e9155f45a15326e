// UniPool-lock's curriculum (docs/model.md §UniPool-lock; the reference is the progressive
// curriculum of Centaurus-Alpha/UniPool): the schedule read from the step, and the state that
// changes at validations (the count snapshots, the candidate sets, the lock, the fail-stop).
//
//   steps 1 .. freeze          explore: the whole pool; the entropy term's β ramps up
//   validation after freeze    the candidate sets: a partition of the pool solved from the
//                              EMA of the validations' routing counts (model/lock_partition.h)
//   steps freeze+1 .. lock     anneal: the other experts' scores fade by 1 − α, α a cosine 0 → 1
//   validation after lock      lock: the sets become every layer's own experts for good
//   steps lock+1 ..            locked: each layer routes inside its K experts (compact path)
//
// The training step that follows `done` completed steps uses routing(done) and entropy_coeff(done)
// (the reference's iteration = done). Every validation before the end of training passes its
// counts and loss to after_evaluation(); after the freeze a validation loss above the freeze's by
// more than lock.max_val_loss_excess, lock.loss_excess_consecutive times in a row, stops the run.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "model/model.h"

namespace unipool {

class LockCurriculum {
 public:
  enum class Phase { explore, anneal, locked };

  explicit LockCurriculum(const Config& config);  // config.model.lock.enabled

  const LockSchedule& schedule() const { return schedule_; }
  Phase phase() const { return phase_; }
  const std::vector<std::vector<int>>& sets() const { return sets_; }

  // The routing and the entropy coefficient β of the training step after `done` steps:
  //   α = ½(1 − cos(π·x)), x = (done − freeze)/(lock − freeze) clamped to [0, 1], on the
  //   candidate sets; once locked, α = 1 and the sets are locked;
  //   β = lock.entropy_coeff · min(1, done / warmup) (0 at done = 0).
  LockRouting routing(int done) const;
  double entropy_coeff(int done) const;

  struct Decision {
    nlohmann::json metrics;  // the evaluation line's "lock" object
    std::string stop;        // non-empty: the fail-stop's message (the run must stop)
  };
  // The validation after step `step` with loss val_loss and, per layer, the tokens routed to each
  // expert of the pool (counts [L][M], summed over ranks). Records the snapshot, checks the
  // fail-stop, then freezes or locks at the boundaries. A validation at the last step or later
  // changes nothing (the reference ignores those after training). Error when the routing broke
  // the lock (a route outside a locked set) or the state misses a boundary.
  Decision after_evaluation(int step, double val_loss,
                            const std::vector<std::vector<double>>& counts);

  // The locked phase with these sets, as after the lock's validation (`unipool bench` times the
  // steady state of a lock run this way). Error when the sets are not a partition into K each.
  void install_locked(const std::vector<std::vector<int>>& sets);

  // The checkpoint's "lock" object (docs/run-directory.md §state.json), and its reading back at
  // step `step` (Error naming the key when it does not fit this config or this step).
  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j, int step);

 private:
  nlohmann::json settings() const;  // what must not change during the run
  void check_partition(const std::vector<std::vector<int>>& sets, const std::string& where) const;
  nlohmann::json observe(const std::vector<std::vector<double>>& counts) const;

  LockConfig config_;
  int steps_ = 0, L_ = 0, M_ = 0, K_ = 0;
  LockSchedule schedule_;
  Phase phase_ = Phase::explore;
  std::vector<std::vector<std::vector<double>>> history_;  // count snapshots before the freeze
  std::vector<std::vector<int>> sets_;                     // [L][K] from the freeze on
  std::string partition_status_;                           // how the sets were found
  std::vector<double> partition_coverage_;                 // [L] at the freeze
  bool has_reference_ = false;
  double reference_val_loss_ = 0;  // the validation loss at the freeze
  int excess_ = 0;                 // validations in a row above reference + margin
};

const char* name_of(LockCurriculum::Phase phase);

// The routing a checkpoint's weights were trained and evaluated with (that of its last step), from
// its state.json; no sets when the config has no lock. Error when the state does not fit.
LockRouting checkpoint_lock_routing(const Config& config, const nlohmann::json& state);

}  // namespace unipool
