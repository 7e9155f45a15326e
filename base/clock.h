// Wall-clock timing for progress lines and reports: a stopwatch and a short duration format.
#pragma once
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace unipool {

// Seconds since construction (or the last restart()), on the monotonic clock.
class Stopwatch {
 public:
  Stopwatch() : t0_(std::chrono::steady_clock::now()) {}
  void restart() { t0_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

// The wall clock: seconds since the Unix epoch (metrics.jsonl's "time").
inline double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "1h05m" from an hour on, else "4m07s".
inline std::string format_duration(double seconds) {
  char buf[64];
  const long total = std::lround(seconds);
  if (total >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", total / 3600, (total / 60) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", total / 60, total % 60);
  }
  return buf;
}

}  // namespace unipool
