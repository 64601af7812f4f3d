// Errors that reach the user: one line naming the file, the field and what is wrong.
#pragma once

#include <stdexcept>
#include <string>

namespace kvscope {

// Thrown for bad input (a corrupt model file, a malformed prompt, an unsupported
// architecture). what() is "<file>: <field>: <message>", ready to print.
class Error : public std::runtime_error {
public:
    Error(const std::string& file, const std::string& field, const std::string& message)
        : std::runtime_error(file + ": " + field + ": " + message) {}
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

} // namespace kvscope
