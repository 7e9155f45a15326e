// Reading and writing checkpoint tensors in the Hugging Face safetensors format.
//
// File layout (all integers little-endian):
//
//   bytes [0, 8)        u64 N: length of the JSON header in bytes
//   bytes [8, 8+N)      UTF-8 JSON object, padded with trailing spaces so that 8+N % 8 == 0:
//                         {"__metadata__": {"key": "value", ...},          (optional, strings only)
//                          "<name>": {"dtype": "F32", "shape": [d0, d1, ...],
//                                     "data_offsets": [begin, end]}, ...}
//   bytes [8+N, EOF)    the data buffer: every tensor's elements, contiguous, row-major,
//                       little-endian. data_offsets are byte offsets relative to the start of the
//                       data buffer (not the file), end exclusive.
//
// A scalar has shape [] and one element; a tensor with a 0 dim has no bytes (begin == end).
// The writer puts tensors in the data buffer in the order given (and lists them in the header in
// that order, after __metadata__). Only F32 is supported, which is all unipool stores (master
// weights and AdamW moments are fp32).
//
// The reader trusts nothing: a short file, a header length past EOF, bad JSON, duplicate keys,
// missing/ill-typed fields, a dtype other than F32, negative dims, offsets that disagree with the
// shape, offsets past the buffer, and tensors that do not exactly tile the data buffer (overlaps,
// gaps, trailing bytes) all throw unipool::Error naming the file and the problem.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace unipool {

// A tensor to write: data points at prod(shape) floats (prod of [] is 1); not owned.
struct TensorRef {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
};

// Streams the file to path + ".tmp.<pid>", fsyncs it and renames it over path (see AtomicFile in
// fsutil.h): path holds either the old file or the complete new one. Nothing is buffered beyond the
// header, so a 3 GB checkpoint costs no extra memory. Error on an empty or duplicate name, the
// reserved name "__metadata__", a negative dim, null data for a non-empty tensor, or any I/O step.
void write_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

struct SafeTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;  // prod(shape) floats
};

struct SafetensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;  // empty when the file has no __metadata__
  std::vector<std::string> order;  // tensor names by data offset (= the order they were written)
};

// Reads and validates the whole file (see above). Peak memory is the tensors plus the header.
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace unipool
