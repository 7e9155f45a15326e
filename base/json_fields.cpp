#include "base/json_fields.h"

#include <cmath>

#include "base/error.h"

namespace unipool {

using json = nlohmann::json;

std::string describe_json(const json& v) {
  const std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

std::string dump_json(const json& v, int indent) {
  return v.dump(indent, ' ', false, json::error_handler_t::replace);
}

const json& json_at(const json& obj, const std::string& key, const std::string& where) {
  check(obj.is_object(), where + ": not a JSON object (" + describe_json(obj) + ")");
  const auto it = obj.find(key);
  check(it != obj.end(), where + ": missing \"" + key + "\"");
  return *it;
}

int64_t json_int(const json& obj, const std::string& key, int64_t lo, int64_t hi,
                 const std::string& where) {
  const json& v = json_at(obj, key, where);
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  bool ok = false;
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    ok = u <= uint64_t(INT64_MAX);
    x = ok ? int64_t(u) : 0;
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
    ok = true;
  }
  check(ok && x >= lo && x <= hi, where + ": \"" + key + "\" must be an integer in " + range +
                                      ", got " + describe_json(v));
  return x;
}

uint64_t json_uint64(const json& obj, const std::string& key, const std::string& where) {
  const json& v = json_at(obj, key, where);
  check(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0),
        where + ": \"" + key + "\" must be a non-negative integer, got " + describe_json(v));
  return v.get<uint64_t>();
}

double json_number(const json& obj, const std::string& key, const std::string& where) {
  const json& v = json_at(obj, key, where);
  check(v.is_number() && std::isfinite(v.get<double>()),
        where + ": \"" + key + "\" must be a finite number, got " + describe_json(v));
  return v.get<double>();
}

bool json_bool(const json& obj, const std::string& key, const std::string& where) {
  const json& v = json_at(obj, key, where);
  check(v.is_boolean(), where + ": \"" + key + "\" must be true or false, got " + describe_json(v));
  return v.get<bool>();
}

std::string json_string(const json& obj, const std::string& key, const std::string& where) {
  const json& v = json_at(obj, key, where);
  check(v.is_string(), where + ": \"" + key + "\" must be a string, got " + describe_json(v));
  return v.get<std::string>();
}

}  // namespace unipool
