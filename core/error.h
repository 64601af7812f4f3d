// Errors that reach the user: one line naming the file, the field and what is wrong.
#pragma once

#include <stdexcept>
#include <string>

namespace kvscope {

// Thrown for bad input (a corrupt model file, a malformed prompt, an unsupported
// architecture). what() is "<file>: <field>: <message>", ready to print: one line, since
// control bytes (a key or tensor name read from a hostile file may hold newlines or
// terminal escapes) are written as \xNN.
class Error : public std::runtime_error {
public:
    Error(const std::string& file, const std::string& field, const std::string& message)
        : std::runtime_error(one_line(file + ": " + field + ": " + message)) {}
    explicit Error(const std::string& message) : std::runtime_error(one_line(message)) {}

    static std::string one_line(const std::string& text) {
        std::string out;
        out.reserve(text.size());
        for (unsigned char c : text) {
            if (c >= 0x20 && c != 0x7f) {
                out += char(c);
            } else {
                const char* hex = "0123456789abcdef";
                out += {'\\', 'x', hex[c >> 4], hex[c & 15]};
            }
        }
        return out;
    }
};

} // namespace kvscope
