// CSV as RFC 4180 has it, for the exports and `kvscope compare --csv`.
#pragma once

#include "sessions/export.h"

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <string_view>

namespace kvscope {

// RFC 4180: fields separated by commas, records ended by CRLF, a field quoted (its quotes
// doubled) when it holds a comma, a quote or a line break.
class CsvWriter {
public:
    explicit CsvWriter(std::ostream& out) : out_(out) {}

    CsvWriter& text(std::string_view bytes) {
        const std::string utf8 = valid_utf8(bytes);
        separate();
        if (utf8.find_first_of(",\"\r\n") == std::string::npos) {
            out_ << utf8;
            return *this;
        }
        out_ << '"';
        for (char c : utf8) out_ << (c == '"' ? "\"\"" : std::string(1, c));
        out_ << '"';
        return *this;
    }
    CsvWriter& integer(int64_t value) {
        separate();
        out_ << value;
        return *this;
    }
    CsvWriter& real(double value) { // the shortest text that reads back as the same double
        char buf[32];
        const auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;
        separate();
        out_.write(buf, end - buf);
        return *this;
    }
    CsvWriter& empty() { // not measured
        separate();
        return *this;
    }
    CsvWriter& real_if(bool measured, double value) { return measured ? real(value) : empty(); }
    CsvWriter& integer_if(bool measured, int64_t value) { return measured ? integer(value) : empty(); }

    void header(std::initializer_list<const char*> names) {
        for (const char* name : names) text(name);
        end_row();
    }
    void end_row() {
        out_ << "\r\n";
        first_ = true;
    }

private:
    void separate() {
        if (!first_) out_ << ',';
        first_ = false;
    }

    std::ostream& out_;
    bool first_ = true;
};

} // namespace kvscope
