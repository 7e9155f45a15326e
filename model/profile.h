// Where the time of a training step goes (`unipool bench` prints it): the model and the trainer
// mark their phases (attention forward, router, experts, LM head, optimizer, ...) and a
// PhaseProfile adds up the time of each. The backend's Clock says what time is: on the CPU the wall
// clock (its ops run synchronously), on the GPU CUDA events recorded on the stream, read only when
// the totals are collected after a step, so that profiling adds no host synchronisation inside the
// step.
//
// Off by default: a disabled profile records nothing and costs one branch per phase.
#pragma once
#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace unipool {

// The CPU's clock: marks are wall-clock time points.
struct WallClock {
  using Mark = std::chrono::steady_clock::time_point;
  Mark mark() { return std::chrono::steady_clock::now(); }
  double seconds(const Mark& a, const Mark& b) {
    return std::chrono::duration<double>(b - a).count();
  }
  void release(const Mark&) {}
};

template <class Clock>
class PhaseProfile {
 public:
  using Mark = typename Clock::Mark;

  // The time from construction (or the last next()) to destruction (or next()) counts for the
  // current phase.
  class Scope {
   public:
    Scope(PhaseProfile* p, const char* name) : p_(p) { start(name); }
    ~Scope() { stop(); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    // Ends the current phase and starts `name` at the same instant.
    void next(const char* name) {
      stop();
      start(name);
    }

   private:
    void start(const char* name) {
      if (p_ == nullptr) return;
      phase_ = p_->phase_index(name);
      begin_ = p_->clock_.mark();
    }
    void stop() {
      if (p_ == nullptr || phase_ < 0) return;
      p_->pending_.push_back({phase_, begin_, p_->clock_.mark()});
      phase_ = -1;
    }
    PhaseProfile* p_;
    int phase_ = -1;
    Mark begin_{};
  };

  bool enabled = false;

  Scope scope(const char* name) { return Scope(enabled ? this : nullptr, name); }

  // Adds the time of the recorded phases to the totals (on the GPU: waits for their events).
  void collect() {
    for (const Interval& i : pending_) {
      totals_[i.phase].second += clock_.seconds(i.begin, i.end);
      clock_.release(i.begin);
      clock_.release(i.end);
    }
    pending_.clear();
  }
  // Seconds per phase, in the order the phases first appeared.
  const std::vector<std::pair<std::string, double>>& totals() {
    collect();
    return totals_;
  }
  void reset() {
    collect();
    for (auto& t : totals_) t.second = 0;
  }

 private:
  struct Interval {
    int phase;
    Mark begin, end;
  };
  int phase_index(const char* name) {
    for (size_t i = 0; i < totals_.size(); ++i)
      if (totals_[i].first == name) return static_cast<int>(i);
    totals_.emplace_back(name, 0.0);
    return static_cast<int>(totals_.size()) - 1;
  }

  Clock clock_;
  std::vector<Interval> pending_;
  std::vector<std::pair<std::string, double>> totals_;
};

}  // namespace unipool
