// The decisions of one step (what each (layer, KV head) kept and evicted) as one compact
// blob: the data column of the `decisions` table.
//
// Format 1: zlib (RFC 1950) over a sequence of unsigned LEB128 varints,
//
//     1                                   the format
//     n                                   entries, then n times:
//       layer, head
//       n_kept,    kept positions         delta-coded, see below
//       n_evicted, evicted positions      delta-coded
//
// A list of increasing positions p0 < p1 < ... is written as p0, then p(i) - p(i-1) - 1.
// A run of consecutive positions (the sinks, the recent window, much of any kept set)
// becomes a run of zero bytes, which zlib folds to almost nothing; a scattered position
// costs about one byte before compression.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvscope {

struct Decision; // core/policy.h

struct DecisionBlob {
    std::string data;  // compressed
    int64_t size = 0;  // bytes before compression
};

DecisionBlob encode_decisions(const std::vector<Decision>& decisions);

// Throws Error("<where>", "decisions", ...) for a blob that does not decode to increasing,
// non-negative positions: a damaged or hostile database never crashes the reader.
std::vector<Decision> decode_decisions(std::string_view data, int64_t size, const std::string& where);

} // namespace kvscope
