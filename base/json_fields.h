// Checked reads of JSON that comes from files (state.json, a loader state, a pool-loss state): every
// error names `where` (the file or section) and the field, never a raw library message, and
// integers are range-checked instead of wrapping or truncating (4294967300 is not 4, 1e300 is not
// an integer). Also the one way to print such values: describe_json never throws (invalid UTF-8 is
// replaced) and cuts long values.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace unipool {

// v as compact JSON for a message, at most ~60 characters, invalid UTF-8 replaced by U+FFFD.
std::string describe_json(const nlohmann::json& v);

// v as JSON text for a file (indent as nlohmann's dump); bytes that are not UTF-8 in strings (a
// Latin-1 path) are written as U+FFFD instead of failing.
std::string dump_json(const nlohmann::json& v, int indent = -1);

// obj[key]. Error "<where>: missing \"<key>\"" (or "<where>: not a JSON object").
const nlohmann::json& json_at(const nlohmann::json& obj, const std::string& key,
                              const std::string& where);
// An integer in [lo, hi] (a JSON integer; 2.0 and 1e300 are not). Error naming where.key.
int64_t json_int(const nlohmann::json& obj, const std::string& key, int64_t lo, int64_t hi,
                 const std::string& where);
// Any unsigned 64-bit integer.
uint64_t json_uint64(const nlohmann::json& obj, const std::string& key, const std::string& where);
// A finite number.
double json_number(const nlohmann::json& obj, const std::string& key, const std::string& where);
bool json_bool(const nlohmann::json& obj, const std::string& key, const std::string& where);
std::string json_string(const nlohmann::json& obj, const std::string& key,
                        const std::string& where);

}  // namespace unipool
