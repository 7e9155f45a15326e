// The one exception type of unipool. Every message names what is wrong and where (the config key,
// the file, the tensor), so a user can act on it without a debugger.
#pragma once
#include <stdexcept>
#include <string>

namespace unipool {

struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// check(cond, msg): throw Error(msg) when cond is false. msg is built only on failure when callers
// pass a lambda-free string; keep it cheap at call sites in hot loops (there are none).
inline void check(bool cond, const std::string& msg) {
  if (!cond) throw Error(msg);
}

}  // namespace unipool
