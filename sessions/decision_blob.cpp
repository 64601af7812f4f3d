#include "sessions/decision_blob.h"

#include "core/error.h"
#include "core/policy.h"
#include "sessions/zlib_bytes.h"

#include <limits>

namespace kvscope {

namespace {

constexpr uint64_t kFormat = 1;

void put_varint(std::string& out, uint64_t value) {
    while (value >= 0x80) {
        out += char(uint8_t(value) | 0x80);
        value >>= 7;
    }
    out += char(value);
}

void put_positions(std::string& out, const std::vector<int32_t>& positions) {
    put_varint(out, positions.size());
    int64_t previous = -1;
    for (int32_t p : positions) {
        put_varint(out, uint64_t(p - previous - 1));
        previous = p;
    }
}

// Reads varints from the inflated bytes, refusing anything that runs past the end.
class Reader {
public:
    Reader(std::string_view bytes, const std::string& where) : bytes_(bytes), where_(where) {}

    uint64_t varint() {
        uint64_t value = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (at_ == bytes_.size()) fail("ends inside a number");
            const uint8_t byte = uint8_t(bytes_[at_++]);
            value |= uint64_t(byte & 0x7f) << shift;
            if (!(byte & 0x80)) return value;
        }
        fail("holds a number longer than 64 bits");
    }

    // A count of items that take at least one byte each: never more than the bytes left,
    // so a hostile count cannot make us allocate.
    size_t count() {
        const uint64_t n = varint();
        if (n > bytes_.size() - at_) fail("claims more entries than it holds");
        return size_t(n);
    }

    std::vector<int32_t> positions() {
        std::vector<int32_t> out(count());
        int64_t previous = -1;
        for (int32_t& p : out) {
            const uint64_t gap = varint();
            if (gap > uint64_t(std::numeric_limits<int32_t>::max()) ||
                previous + 1 + int64_t(gap) > std::numeric_limits<int32_t>::max())
                fail("holds a position beyond the int32 range");
            previous += 1 + int64_t(gap);
            p = int32_t(previous);
        }
        return out;
    }

    int64_t index() { // a layer or a head
        const uint64_t value = varint();
        if (value > uint64_t(std::numeric_limits<int32_t>::max())) fail("holds an index beyond the int32 range");
        return int64_t(value);
    }

    bool done() const { return at_ == bytes_.size(); }
    [[noreturn]] void fail(const std::string& what) const { throw Error(where_, "decisions", "blob " + what); }

private:
    std::string_view bytes_;
    size_t at_ = 0;
    const std::string& where_;
};

} // namespace

DecisionBlob encode_decisions(const std::vector<Decision>& decisions) {
    std::string raw;
    put_varint(raw, kFormat);
    put_varint(raw, decisions.size());
    for (const Decision& d : decisions) {
        put_varint(raw, uint64_t(d.layer));
        put_varint(raw, uint64_t(d.head));
        put_positions(raw, d.kept);
        put_positions(raw, d.evicted);
    }
    return {deflate_bytes(raw, "decisions"), int64_t(raw.size())};
}

std::vector<Decision> decode_decisions(std::string_view data, int64_t size, const std::string& where) {
    const std::string raw = inflate_bytes(data, size, where, "decisions");
    Reader in(raw, where);
    if (const uint64_t format = in.varint(); format != kFormat)
        in.fail("has format " + std::to_string(format) + ", this build reads " + std::to_string(kFormat));
    std::vector<Decision> out(in.count());
    for (Decision& d : out) {
        d.layer = in.index();
        d.head = in.index();
        d.kept = in.positions();
        d.evicted = in.positions();
    }
    if (!in.done()) in.fail("has bytes after its last entry");
    return out;
}

} // namespace kvscope
