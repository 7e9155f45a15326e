// UniPool-lock's curriculum (engine/lock.h, docs/model.md §UniPool-lock).
#include "engine/lock.h"

#include <cmath>
#include <cstdio>

#include "base/error.h"
#include "base/json_fields.h"
#include "model/lock_partition.h"

namespace unipool {

const char* name_of(LockCurriculum::Phase phase) {
  switch (phase) {
    case LockCurriculum::Phase::explore:
      return "explore";
    case LockCurriculum::Phase::anneal:
      return "anneal";
    case LockCurriculum::Phase::locked:
      return "locked";
  }
  return "?";
}

LockCurriculum::LockCurriculum(const Config& c)
    : config_(c.model.lock),
      steps_(c.train.steps),
      L_(c.model.n_layer),
      M_(c.model.pool_size),
      K_(c.model.lock_set_size()),
      schedule_(lock_schedule(c)) {
  check(config_.enabled, "LockCurriculum: lock.enabled is false");
}

LockRouting LockCurriculum::routing(int done) const {
  LockRouting r;
  if (phase_ == Phase::explore) return r;
  r.sets = sets_;
  if (phase_ == Phase::locked && done >= schedule_.lock) {
    r.alpha = 1;
    r.locked = true;
    return r;
  }
  const double x =
      std::min(1.0, std::max(0.0, double(done - schedule_.freeze) / schedule_.anneal_steps));
  r.alpha = x <= 0 ? 0.0 : x >= 1 ? 1.0 : 0.5 * (1.0 - std::cos(M_PI * x));
  return r;
}

double LockCurriculum::entropy_coeff(int done) const {
  if (done <= 0) return 0;
  if (done >= schedule_.warmup) return config_.entropy_coeff;
  return config_.entropy_coeff * (double(done) / schedule_.warmup);
}

// Per layer: the share of its routed tokens inside its set (1 before the freeze: every expert is
// visible), the tokens outside the sets, the (layer, expert) pairs of a set that got no token,
// and the effective number of experts exp(entropy of the layer's counts) (the reference's
// compute_progressive_metrics).
nlohmann::json LockCurriculum::observe(const std::vector<std::vector<double>>& counts) const {
  std::vector<std::vector<char>> visible(size_t(L_), std::vector<char>(size_t(M_), 1));
  if (!sets_.empty()) {
    for (auto& row : visible) std::fill(row.begin(), row.end(), 0);
    for (int l = 0; l < L_; ++l)
      for (int e : sets_[size_t(l)]) visible[size_t(l)][size_t(e)] = 1;
  }
  nlohmann::json coverage = nlohmann::json::array(), effective_k = nlohmann::json::array();
  double off_mask = 0;
  int dead_in_mask = 0;
  for (int l = 0; l < L_; ++l) {
    double total = 0, inside = 0;
    for (int e = 0; e < M_; ++e) total += counts[size_t(l)][size_t(e)];
    double entropy = 0;
    for (int e = 0; e < M_; ++e) {
      const double n = counts[size_t(l)][size_t(e)];
      if (visible[size_t(l)][size_t(e)]) {
        inside += n;
        dead_in_mask += n <= 0 ? 1 : 0;
      } else {
        off_mask += n;
      }
      if (n > 0) entropy -= n / total * std::log(n / total);
    }
    coverage.push_back(total > 0 ? inside / total : 0.0);
    effective_k.push_back(total > 0 ? std::exp(entropy) : 0.0);
  }
  return {{"coverage", coverage},
          {"off_mask_routes", off_mask},
          {"dead_in_mask", dead_in_mask},
          {"effective_k", effective_k}};
}

LockCurriculum::Decision LockCurriculum::after_evaluation(
    int step, double val_loss, const std::vector<std::vector<double>>& counts) {
  check(int(counts.size()) == L_, "lock: the validation counts must have one row per layer");
  for (const auto& row : counts)
    check(int(row.size()) == M_, "lock: the validation counts must have pool_size columns");
  // The routing that produced these counts (that of step `step`) and what was seen with it.
  const LockRouting before = routing(step - 1);
  Decision d;
  d.metrics = observe(counts);
  d.metrics["phase"] = name_of(phase_);
  d.metrics["alpha"] = before.alpha;
  d.metrics["entropy_coeff"] = entropy_coeff(step - 1);
  if (phase_ == Phase::locked && d.metrics["off_mask_routes"].get<double>() > 0)
    throw Error("lock: step " + std::to_string(step) + ": the validation routed " +
                dump_json(d.metrics["off_mask_routes"]) +
                " tokens outside the locked sets (a bug: the lock must hold)");
  if (step >= steps_) return d;  // after training: observed, nothing decided

  if (phase_ == Phase::explore) {
    history_.push_back(counts);
    if (int(history_.size()) > config_.ema_lookback) history_.erase(history_.begin());
  }
  if (has_reference_) {  // the fail-stop, from the first validation after the freeze on
    excess_ = val_loss > reference_val_loss_ + config_.max_val_loss_excess ? excess_ + 1 : 0;
    d.metrics["reference_val_loss"] = reference_val_loss_;
    d.metrics["loss_excess_consecutive"] = excess_;
    if (excess_ >= config_.loss_excess_consecutive) {
      char msg[400];
      std::snprintf(msg, sizeof msg,
                    "UniPool-lock fail-stop at step %d: the validation loss %.6g exceeded the "
                    "freeze's %.6g (step %d) by more than lock.max_val_loss_excess = %g at %d "
                    "validations in a row",
                    step, val_loss, reference_val_loss_, schedule_.freeze,
                    config_.max_val_loss_excess, excess_);
      d.stop = msg;
    }
  }
  if (step == schedule_.lock) {
    check(phase_ == Phase::anneal, "lock: step " + std::to_string(step) +
                                       " should lock the candidate sets, but there are "
                                       "none (the freeze at step " +
                                       std::to_string(schedule_.freeze) + " did not happen)");
    phase_ = Phase::locked;
    d.metrics["event"] = "lock";
  }
  if (step == schedule_.freeze) {
    check(phase_ == Phase::explore, "lock: the candidate sets were chosen twice");
    const auto smoothed = ema_smoothed_counts(history_, config_.ema_lookback, config_.ema_alpha);
    const CoveragePartition p = coverage_partition(smoothed, config_.coverage);
    sets_ = p.partition.sets;
    partition_status_ =
        p.status == PartitionStatus::optimal
            ? (p.proven ? "optimal" : "meets lock.coverage, tie-break not proven optimal")
            : (p.proven ? "best effort (no partition reaches lock.coverage)"
                        : "best effort (none reaching lock.coverage found, none proven absent)");
    partition_coverage_ = p.partition.coverage;
    history_.clear();  // the sets are chosen: the snapshots have served
    has_reference_ = true;
    reference_val_loss_ = val_loss;
    excess_ = 0;
    phase_ = Phase::anneal;
    d.metrics["event"] = "freeze";
    d.metrics["partition"] = {
        {"status", partition_status_}, {"coverage", partition_coverage_}, {"sets", sets_}};
  }
  check(!(step > schedule_.freeze && step < schedule_.lock && phase_ != Phase::anneal),
        "lock: step " + std::to_string(step) + " lies in the anneal, but no candidate sets exist");
  return d;
}

// L sets of K expert ids each, every id in the pool and in one set only; `where` names them.
void LockCurriculum::check_partition(const std::vector<std::vector<int>>& sets,
                                     const std::string& where) const {
  check(int(sets.size()) == L_,
        where + ": expected " + std::to_string(L_) + " lists of expert ids (one per layer)");
  std::vector<int> owner(size_t(M_), -1);
  for (int l = 0; l < L_; ++l) {
    check(int(sets[size_t(l)].size()) == K_, where + "[" + std::to_string(l) + "]: expected K = " +
                                                 std::to_string(K_) + " expert ids");
    for (int e : sets[size_t(l)]) {
      check(
          e >= 0 && e < M_ && owner[size_t(e)] < 0,
          where + ": " + std::to_string(e) + " is not an expert id of the pool, or is in two sets");
      owner[size_t(e)] = l;
    }
  }
}

void LockCurriculum::install_locked(const std::vector<std::vector<int>>& sets) {
  check_partition(sets, "lock: install_locked's sets");
  sets_ = sets;
  phase_ = Phase::locked;
  history_.clear();
  partition_status_ = "installed";
  partition_coverage_.assign(size_t(L_), 0.0);
  has_reference_ = false;
  excess_ = 0;
}

nlohmann::json LockCurriculum::settings() const {
  return {{"steps", steps_},
          {"lock_fraction", config_.lock_fraction},
          {"anneal_fraction", config_.anneal_fraction},
          {"entropy_warmup_fraction", config_.entropy_warmup_fraction},
          {"entropy_coeff", config_.entropy_coeff},
          {"entropy_target", config_.entropy_target},
          {"coverage", config_.coverage},
          {"max_val_loss_excess", config_.max_val_loss_excess},
          {"loss_excess_consecutive", config_.loss_excess_consecutive},
          {"ema_lookback", config_.ema_lookback},
          {"ema_alpha", config_.ema_alpha}};
}

nlohmann::json LockCurriculum::to_json() const {
  nlohmann::json j = {{"phase", name_of(phase_)},    {"freeze_step", schedule_.freeze},
                      {"lock_step", schedule_.lock}, {"settings", settings()},
                      {"history", history_},         {"loss_excess_consecutive", excess_}};
  j["reference_val_loss"] = has_reference_ ? nlohmann::json(reference_val_loss_) : nullptr;
  if (!sets_.empty()) {
    j["partition"] = sets_;
    j["partition_status"] = partition_status_;
    j["partition_coverage"] = partition_coverage_;
  }
  return j;
}

void LockCurriculum::from_json(const nlohmann::json& j, int step) {
  const std::string where = "checkpoint state: lock";
  check(j.is_object(), where + " must be an object, got " + describe_json(j));
  const nlohmann::json& saved = json_at(j, "settings", where);
  if (saved != settings()) {
    std::string changed;
    const nlohmann::json now = settings();
    for (auto it = now.begin(); it != now.end(); ++it)
      if (!saved.contains(it.key()) || saved[it.key()] != it.value())
        changed += (changed.empty() ? "" : ", ") +
                   (it.key() == "steps" ? std::string("train.steps") : "lock." + it.key());
    throw Error(where + ": the run was trained with other UniPool-lock settings (" + changed +
                " changed); resume with the original values");
  }
  const std::string phase = json_string(j, "phase", where);
  Phase p = Phase::explore;
  if (phase == "anneal") {
    p = Phase::anneal;
  } else if (phase == "locked") {
    p = Phase::locked;
  } else {
    check(phase == "explore", where + ".phase: unknown phase '" + phase + "'");
  }
  // The phase a checkpoint at this step must be in: its validation has run.
  const Phase expected = step < schedule_.freeze ? Phase::explore
                         : step < schedule_.lock ? Phase::anneal
                                                 : Phase::locked;
  check(p == expected, where + ".phase: '" + phase + "' at step " + std::to_string(step) +
                           ", where the schedule has '" + name_of(expected) + "'");

  std::vector<std::vector<std::vector<double>>> history;
  const nlohmann::json& h = json_at(j, "history", where);
  check(h.is_array() && int(h.size()) <= config_.ema_lookback,
        where + ".history: expected at most lock.ema_lookback count snapshots");
  for (const nlohmann::json& snap : h) {
    check(snap.is_array() && int(snap.size()) == L_,
          where + ".history: each snapshot holds one row per layer");
    std::vector<std::vector<double>> rows;
    for (const nlohmann::json& row : snap) {
      check(row.is_array() && int(row.size()) == M_,
            where + ".history: each row holds pool_size counts");
      std::vector<double> r;
      for (const nlohmann::json& x : row) {
        check(x.is_number() && x.get<double>() >= 0 && std::isfinite(x.get<double>()),
              where + ".history: counts must be finite and >= 0");
        r.push_back(x.get<double>());
      }
      rows.push_back(std::move(r));
    }
    history.push_back(std::move(rows));
  }

  std::vector<std::vector<int>> sets;
  std::string status;
  std::vector<double> coverage;
  if (p != Phase::explore) {
    const nlohmann::json& part = json_at(j, "partition", where);
    check(part.is_array(),
          where + ".partition: expected lists of expert ids, got " + describe_json(part));
    for (const nlohmann::json& row : part) {
      check(row.is_array(),
            where + ".partition: expected lists of expert ids, got " + describe_json(row));
      std::vector<int> set;
      for (const nlohmann::json& x : row) {
        check(x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() < M_,
              where + ".partition: " + describe_json(x) + " is not an expert id of the pool");
        set.push_back(int(x.get<int64_t>()));
      }
      sets.push_back(std::move(set));
    }
    check_partition(sets, where + ".partition");
    status = json_string(j, "partition_status", where);
    const nlohmann::json& cov = json_at(j, "partition_coverage", where);
    check(cov.is_array() && int(cov.size()) == L_,
          where + ".partition_coverage: expected one share per layer");
    for (const nlohmann::json& x : cov) {
      check(x.is_number(), where + ".partition_coverage: expected numbers");
      coverage.push_back(x.get<double>());
    }
  }
  const nlohmann::json& ref = json_at(j, "reference_val_loss", where);
  check(p == Phase::explore ? ref.is_null() : ref.is_number(),
        where + ".reference_val_loss: expected " +
            (p == Phase::explore ? "null before the freeze" : "the freeze's validation loss"));
  const int excess =
      int(json_int(j, "loss_excess_consecutive", 0, config_.loss_excess_consecutive - 1, where));

  phase_ = p;
  history_ = std::move(history);
  sets_ = std::move(sets);
  partition_status_ = status;
  partition_coverage_ = std::move(coverage);
  has_reference_ = p != Phase::explore;
  reference_val_loss_ = has_reference_ ? ref.get<double>() : 0.0;
  excess_ = excess;
}

LockRouting checkpoint_lock_routing(const Config& config, const nlohmann::json& state) {
  if (!config.model.lock.enabled) {
    check(!state.contains("lock"),
          "checkpoint state: the run was trained with UniPool-lock; evaluate it with "
          "lock.enabled = true");
    return {};
  }
  check(state.contains("lock"), "checkpoint state: missing lock (lock.enabled is true)");
  LockCurriculum curriculum(config);
  const int step = int(json_int(state, "step", 0, config.train.steps, "checkpoint state"));
  curriculum.from_json(state["lock"], step);
  return curriculum.routing(step - 1);
}

}  // namespace unipool
