// The export formats of stored runs, as `kvscope export --format` and the workbench's export
// dialog both offer them: one table, so the two write the same bytes for the same runs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kvscope {

namespace sql {
class Connection;
}
struct ReportOptions;

struct ExportFormat {
    const char* name; // --format's value
    const char* what; // what the file holds, one line
    std::function<void(sql::Connection& db, const std::vector<int64_t>& runs, const ReportOptions& report,
                       const std::string& out)>
        write; // all or nothing: `out` is replaced only once complete
};

// Every format; adding one is one more entry here.
const std::vector<ExportFormat>& export_formats();
// Throws Error for a name not in export_formats().
const ExportFormat& export_format_named(const std::string& name);

} // namespace kvscope
