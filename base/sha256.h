// SHA-256 of a byte string (FIPS 180-4), as 64 lowercase hex digits.
#pragma once
#include <cstddef>
#include <string>

namespace unipool {

std::string sha256_hex(const void* data, size_t n);

}  // namespace unipool
