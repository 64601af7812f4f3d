#include "core/npy.h"

#include "core/error.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace kvscope {

namespace {

const char kMagic[] = "\x93NUMPY";

void write_raw(const std::string& path, const char* dtype, const void* values, size_t elem_size,
               const std::vector<int64_t>& shape) {
    std::ostringstream dims;
    int64_t count = 1;
    for (int64_t d : shape) {
        dims << d << ",";
        count *= d;
    }
    std::string shape_text = dims.str();
    if (shape.size() > 1) shape_text.pop_back(); // (3,) for one dim, (3,4) otherwise
    std::string header = std::string("{'descr': '") + dtype + "', 'fortran_order': False, 'shape': (" +
                         shape_text + "), }";
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a
    // multiple of 64 and ended by a newline.
    size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header.push_back('\n');
    std::ofstream out(path, std::ios::binary);
    if (!out) throw Error(path, "open", "cannot write");
    out.write(kMagic, 6);
    out.put(1).put(0);
    uint16_t len = uint16_t(header.size());
    out.put(char(len & 0xFF)).put(char(len >> 8));
    out.write(header.data(), std::streamsize(header.size()));
    out.write(static_cast<const char*>(values), std::streamsize(size_t(count) * elem_size));
    if (!out) throw Error(path, "write", "failed (disk full?)");
}

// The value after `key':` in the header dict, up to the next `,` at depth 0 or `}`.
std::string header_field(const std::string& header, const std::string& key, const std::string& path) {
    size_t at = header.find("'" + key + "'");
    if (at == std::string::npos) throw Error(path, "header", "no '" + key + "'");
    at = header.find(':', at);
    if (at == std::string::npos) throw Error(path, "header", "malformed '" + key + "'");
    size_t end = at + 1;
    int depth = 0;
    for (; end < header.size(); ++end) {
        char ch = header[end];
        if (ch == '(') ++depth;
        if (ch == ')') --depth;
        if (depth == 0 && (ch == ',' || ch == '}')) break;
    }
    return header.substr(at + 1, end - at - 1);
}

} // namespace

int64_t NpyArray::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

void write_npy(const std::string& path, const float* values, const std::vector<int64_t>& shape) {
    write_raw(path, "<f4", values, sizeof(float), shape);
}

void write_npy(const std::string& path, const int32_t* values, const std::vector<int64_t>& shape) {
    write_raw(path, "<i4", values, sizeof(int32_t), shape);
}

NpyArray read_npy(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, "open", "cannot read");
    char prefix[10];
    if (!in.read(prefix, 10) || std::memcmp(prefix, kMagic, 6) != 0) throw Error(path, "magic", "not a .npy file");
    if (prefix[6] != 1) throw Error(path, "version", "only .npy version 1.0 is read");
    size_t len = uint8_t(prefix[8]) | (size_t(uint8_t(prefix[9])) << 8);
    std::string header(len, '\0');
    if (!in.read(header.data(), std::streamsize(len))) throw Error(path, "header", "truncated");

    NpyArray array;
    std::string descr = header_field(header, "descr", path);
    if (descr.find("<f4") != std::string::npos) array.dtype = "<f4";
    else if (descr.find("<i4") != std::string::npos) array.dtype = "<i4";
    else throw Error(path, "descr", "unsupported dtype " + descr + " (float32 and int32 are read)");
    if (header_field(header, "fortran_order", path).find("False") == std::string::npos)
        throw Error(path, "fortran_order", "only C order is read");
    std::string shape = header_field(header, "shape", path);
    std::istringstream dims(shape.substr(shape.find('(') + 1));
    int64_t d;
    char sep;
    while (dims >> d) {
        if (d < 0 || d > (int64_t(1) << 40)) throw Error(path, "shape", "dimension out of range");
        array.shape.push_back(d);
        if (!(dims >> sep) || sep == ')') break;
    }
    const int64_t bytes = array.numel() * 4;
    if (bytes > (int64_t(1) << 40)) throw Error(path, "shape", "too large");
    array.data.resize(size_t(bytes));
    if (!in.read(reinterpret_cast<char*>(array.data.data()), bytes)) throw Error(path, "data", "truncated");
    return array;
}

} // namespace kvscope
