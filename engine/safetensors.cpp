// safetensors reader/writer (F32 only). The format is described in safetensors.h.
#include "engine/safetensors.h"
#include "base/json_depth.h"
#include "base/json_fields.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"

namespace unipool {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian data; this code copies host floats as-is");
static_assert(sizeof(float) == 4, "F32 is 4 bytes");

using ojson = nlohmann::ordered_json;  // keeps header keys in file order

static std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Bytes of an F32 tensor of this shape; false on a negative dim or int64 overflow.
static bool f32_nbytes(const std::vector<int64_t>& shape, uint64_t* nbytes) {
  uint64_t n = 4;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, uint64_t(d), &n)) return false;
  }
  if (n > uint64_t(INT64_MAX)) return false;
  *nbytes = n;
  return true;
}

// ----------------------------------------------------------------------------------------------
// writing

void write_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string where = "write_safetensors " + path + ": ";

  // 1) the header: __metadata__ first, then the tensors in the order given, offsets back to back
  ojson header = ojson::object();
  if (!metadata.empty()) {
    ojson meta = ojson::object();
    for (const auto& kv : metadata) meta[kv.first] = kv.second;
    header["__metadata__"] = meta;
  }
  std::vector<uint64_t> nbytes(tensors.size());
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); i++) {
    const TensorRef& t = tensors[i];
    check(!t.name.empty(), where + "tensor #" + std::to_string(i) + " has an empty name");
    check(t.name != "__metadata__", where + "'__metadata__' is reserved and cannot name a tensor");
    check(seen.insert(t.name).second, where + "duplicate tensor name '" + t.name + "'");
    check(f32_nbytes(t.shape, &nbytes[i]), where + "tensor '" + t.name + "' has an invalid shape " +
                                               shape_str(t.shape) + " (negative dim or too large)");
    check(t.data != nullptr || nbytes[i] == 0, where + "tensor '" + t.name + "' has null data");
    ojson entry = ojson::object();
    entry["dtype"] = "F32";
    entry["shape"] = t.shape;
    entry["data_offsets"] = ojson::array({offset, offset + nbytes[i]});
    header[t.name] = entry;
    offset += nbytes[i];
  }
  std::string text;
  try {
    text = header.dump();  // compact; throws on invalid UTF-8 in a name or metadata string
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + "cannot encode the header as JSON: " + e.what());
  }
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // data buffer starts 8-aligned

  // 2) stream: length, header, then each tensor's bytes straight from the caller's memory
  uint64_t n = text.size();
  unsigned char len_le[8];
  for (int i = 0; i < 8; i++) len_le[i] = (unsigned char)(n >> (8 * i));
  AtomicFile f(path);
  f.write(len_le, 8);
  f.write(text.data(), text.size());
  for (size_t i = 0; i < tensors.size(); i++)
    if (nbytes[i] > 0) f.write(tensors[i].data, nbytes[i]);
  f.commit();
}

// ----------------------------------------------------------------------------------------------
// reading

// Closes an fd on scope exit.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Reads exactly n bytes at offset; Error on I/O failure or EOF (the file shrank under us).
static void pread_exact(int fd, void* dst, uint64_t n, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(dst);
  while (n > 0) {
    size_t chunk = n < (uint64_t(1) << 30) ? size_t(n) : (size_t(1) << 30);
    ssize_t got = ::pread(fd, p, chunk, off_t(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot read " + path + ": " + std::strerror(errno));
    }
    if (got == 0) throw Error(path + ": unexpected end of file at byte " + std::to_string(offset));
    p += got;
    n -= uint64_t(got);
    offset += uint64_t(got);
  }
}

// A non-negative JSON integer as uint64; false for floats, negatives, strings, ...
static bool json_u64(const ojson& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = uint64_t(j.get<int64_t>());
    return true;
  }
  return false;
}

// One validated header entry.
struct Entry {
  std::string name;
  std::vector<int64_t> shape;
  uint64_t begin, end;
  size_t header_index;  // tie-break for zero-byte tensors sharing an offset
};

static Entry parse_entry(const std::string& name, const ojson& j, uint64_t data_size,
                         const std::string& where) {
  const std::string t = "tensor '" + name + "'";
  Entry e;
  e.name = name;
  check(j.is_object(), where + t + ": entry is not a JSON object");

  // dtype
  auto it = j.find("dtype");
  check(it != j.end(), where + t + " is missing dtype");
  check(it->is_string(), where + t + ": dtype is not a string");
  const std::string dtype = it->get<std::string>();
  check(dtype == "F32", where + t + " has dtype " + dtype + "; only F32 is supported");

  // shape
  it = j.find("shape");
  check(it != j.end(), where + t + " is missing shape");
  check(it->is_array(), where + t + ": shape is not an array");
  for (const ojson& d : *it) {
    check(d.is_number_integer(), where + t + ": shape holds a non-integer " + d.dump());
    if (d.is_number_unsigned()) {
      uint64_t u = d.get<uint64_t>();
      check(u <= uint64_t(INT64_MAX), where + t + ": dim " + d.dump() + " in shape is too large");
      e.shape.push_back(int64_t(u));
    } else {
      int64_t v = d.get<int64_t>();
      check(v >= 0, where + t + " has a negative dim " + std::to_string(v) + " in shape");
      e.shape.push_back(v);
    }
  }
  uint64_t nbytes = 0;
  check(f32_nbytes(e.shape, &nbytes),
        where + t + ": shape " + shape_str(e.shape) + " is too large");

  // data_offsets
  it = j.find("data_offsets");
  check(it != j.end(), where + t + " is missing data_offsets");
  check(it->is_array() && it->size() == 2 && json_u64((*it)[0], &e.begin) &&
            json_u64((*it)[1], &e.end),
        where + t + ": data_offsets must be [begin, end] with non-negative integers, got " +
            describe_json(*it));
  const std::string offs =
      "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  check(e.begin <= e.end, where + t + ": " + offs + " has begin > end");
  check(e.end - e.begin == nbytes,
        where + t + ": " + offs + " span " + std::to_string(e.end - e.begin) + " bytes but shape " +
            shape_str(e.shape) + " needs " + std::to_string(nbytes) + " bytes of F32");
  check(e.end <= data_size, where + t + ": " + offs + " out of bounds of the data buffer (" +
                                std::to_string(data_size) + " bytes)");
  return e;
}

SafetensorsFile read_safetensors(const std::string& path) {
  const std::string where = "safetensors " + path + ": ";
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(f.fd, &st) != 0) throw Error("cannot stat " + path + ": " + std::strerror(errno));
  check(S_ISREG(st.st_mode), where + "not a regular file");
  const uint64_t file_size = uint64_t(st.st_size);

  // 1) the header length
  check(file_size >= 8, where + "file is " + std::to_string(file_size) +
                            " bytes, shorter than the 8-byte header length");
  unsigned char len_le[8];
  pread_exact(f.fd, len_le, 8, 0, path);
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= uint64_t(len_le[i]) << (8 * i);
  check(n <= file_size - 8, where + "header length " + std::to_string(n) +
                                " is larger than the file (" + std::to_string(file_size) +
                                " bytes)");
  const uint64_t data_start = 8 + n, data_size = file_size - data_start;

  // 2) the JSON header. nlohmann keeps the last of duplicate keys silently, so a parse callback
  // tracks the keys of every open object and records the first duplicate.
  std::string text(size_t(n), '\0');
  pread_exact(f.fd, &text[0], n, 8, path);
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto on_event = [&](int, ojson::parse_event_t ev, ojson& parsed) {
    if (ev == ojson::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (ev == ojson::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (ev == ojson::parse_event_t::key && !open_objects.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  check(json_nesting_depth(text) <= kMaxJsonDepth,
        where + "header nests more than " + std::to_string(kMaxJsonDepth) + " levels deep");
  ojson header;
  try {
    header = ojson::parse(text, on_event);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + "header is not valid JSON: " + e.what());
  }
  check(duplicate.empty(), where + "duplicate key '" + duplicate + "' in the header");
  check(header.is_object(), where + "header is not a JSON object");

  // 3) entries
  SafetensorsFile out;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      check(it->is_object(), where + "__metadata__ is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        check(m->is_string(), where + "metadata '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(it.key(), it.value(), data_size, where));
    entries.back().header_index = entries.size() - 1;
  }

  // 4) the tensors must tile [0, data_size) exactly: no overlap, no gap, nothing after
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.header_index < b.header_index;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    check(e.begin >= pos, where + "tensor '" + e.name + "' overlaps tensor '" +
                              (prev ? prev->name : "") + "' in the data buffer (begins at " +
                              std::to_string(e.begin) + ", previous ends at " +
                              std::to_string(pos) + ")");
    check(e.begin == pos, where + "gap of " + std::to_string(e.begin - pos) +
                              " bytes before tensor '" + e.name +
                              "' in the data buffer (at offset " + std::to_string(pos) + ")");
    pos = e.end;
    prev = &e;
  }
  check(pos == data_size, where + std::to_string(data_size - pos) +
                              " trailing bytes after the last tensor (data buffer is " +
                              std::to_string(data_size) + " bytes, tensors cover " +
                              std::to_string(pos) + ")");

  // 5) the data, read straight into each tensor's storage in file order
  for (const Entry& e : entries) {
    SafeTensor t;
    t.shape = e.shape;
    t.data.resize(size_t((e.end - e.begin) / 4));
    if (e.end > e.begin)
      pread_exact(f.fd, t.data.data(), e.end - e.begin, data_start + e.begin, path);
    out.order.push_back(e.name);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

}  // namespace unipool
