// Stand-in for CUB (gen.py replaces `#include <cub/...>` with this header): the device-wide
// algorithms the project calls, as host reference code with CUB's interface and semantics.
//
// What it emulates: cub::DeviceRadixSort::SortPairs (stable, ascending, keys compared as CUB
// does: by the bits [begin_bit, end_bit) of the key with the sign bit of signed keys flipped),
// including the two-phase temp-storage protocol (a call with d_temp_storage == nullptr only
// reports the bytes needed; the second call must pass at least that many).
//
// What it checks: keys/values in and out are device memory of num_items elements, the temp
// storage is device memory of the size passed and at least the size reported, outputs do not
// overlap inputs, the stream was created by cudaStreamCreate*.
//
// What it does NOT model: CUB's kernels, their launch configurations, their speed. Add other
// CUB algorithms here when a kernel file starts using them.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

namespace cub {

struct DeviceRadixSort {
  template <typename KeyT, typename ValueT, typename NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes,
                               const KeyT* d_keys_in, KeyT* d_keys_out, const ValueT* d_values_in,
                               ValueT* d_values_out, NumItemsT num_items, int begin_bit = 0,
                               int end_bit = int(sizeof(KeyT) * 8), cudaStream_t stream = 0) {
    static_assert(std::is_integral<KeyT>::value, "the emulated SortPairs sorts integer keys");
    const size_t n = num_items > 0 ? size_t(num_items) : 0;
    const size_t needed = 256 + 2 * n * (sizeof(KeyT) + sizeof(ValueT));  // like CUB: double buffers
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = needed;
      return cudaSuccess;
    }
    ::emu::check_stream(stream, "cub::DeviceRadixSort::SortPairs");
    if (begin_bit < 0 || end_bit > int(sizeof(KeyT) * 8) || begin_bit >= end_bit)
      ::emu::fail("cub::DeviceRadixSort::SortPairs: bit range [%d, %d) is invalid", begin_bit, end_bit);
    if (temp_storage_bytes < needed)
      ::emu::fail("cub::DeviceRadixSort::SortPairs: %zu bytes of temp storage, %zu reported",
                  temp_storage_bytes, needed);
    ::emu::check_device_range(d_temp_storage, temp_storage_bytes, "SortPairs temp storage");
    ::emu::note_stream_work(stream);
    if (n == 0) return cudaSuccess;
    ::emu::check_device_range(d_keys_in, n * sizeof(KeyT), "SortPairs keys in");
    ::emu::check_device_range(d_keys_out, n * sizeof(KeyT), "SortPairs keys out");
    ::emu::check_device_range(d_values_in, n * sizeof(ValueT), "SortPairs values in");
    ::emu::check_device_range(d_values_out, n * sizeof(ValueT), "SortPairs values out");
    auto overlaps = [n](const void* a, size_t ea, const void* b, size_t eb) {
      const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
      return x < y + n * eb && y < x + n * ea;
    };
    if (overlaps(d_keys_out, sizeof(KeyT), d_keys_in, sizeof(KeyT)) ||
        overlaps(d_keys_out, sizeof(KeyT), d_values_in, sizeof(ValueT)) ||
        overlaps(d_values_out, sizeof(ValueT), d_keys_in, sizeof(KeyT)) ||
        overlaps(d_values_out, sizeof(ValueT), d_values_in, sizeof(ValueT)))
      ::emu::fail("cub::DeviceRadixSort::SortPairs: an output overlaps an input");
    std::memset(d_temp_storage, 0xAB, temp_storage_bytes);  // contents are CUB's business
    using U = std::make_unsigned_t<KeyT>;
    const int bits = end_bit - begin_bit;
    const U mask = bits >= int(sizeof(U) * 8) ? U(~U(0)) : U((U(1) << bits) - 1);
    auto radix = [&](KeyT k) {
      U u = U(k);
      if (std::is_signed<KeyT>::value) u ^= U(U(1) << (sizeof(U) * 8 - 1));  // signed order
      return U((u >> begin_bit) & mask);
    };
    std::vector<size_t> idx(n);
    std::iota(idx.begin(), idx.end(), size_t(0));
    std::stable_sort(idx.begin(), idx.end(),
                     [&](size_t a, size_t b) { return radix(d_keys_in[a]) < radix(d_keys_in[b]); });
    for (size_t i = 0; i < n; ++i) {
      d_keys_out[i] = d_keys_in[idx[i]];
      d_values_out[i] = d_values_in[idx[i]];
    }
    return cudaSuccess;
  }
};

}  // namespace cub
