#include "app/export_formats.h"

#include "core/error.h"
#include "sessions/export.h"
#include "sessions/report.h"

namespace kvscope {

namespace {

using StreamExport = void (*)(sql::Connection&, const std::vector<int64_t>&, std::ostream&);

// A format written as one stream into the file, all or nothing.
ExportFormat to_file(const char* name, const char* what, StreamExport write) {
    return {name, what, [write](sql::Connection& db, const std::vector<int64_t>& runs, const ReportOptions&,
                                const std::string& out) {
                write_file_atomically(out, [&](std::ostream& stream) { write(db, runs, stream); });
            }};
}

} // namespace

const std::vector<ExportFormat>& export_formats() {
    static const std::vector<ExportFormat> all{
        to_file("json", "everything stored about the runs, in one file that `kvscope sessions import` reads back",
                export_json),
        to_file("csv", "one row per step of every run", export_steps_csv),
        to_file("csv-summary", "one row per run: method, budget, fidelity, KV bytes, speed", export_summary_csv),
        to_file("trace", "Chrome trace JSON (Perfetto, chrome://tracing), one process per run", export_trace),
        {"report", "Markdown (--out PATH.md, PNG plots beside it) and one self-contained HTML page, for a paper",
         [](sql::Connection& db, const std::vector<int64_t>& runs, const ReportOptions& report, const std::string& out) {
             write_report(db, runs, report, out);
         }},
    };
    return all;
}

const ExportFormat& export_format_named(const std::string& name) {
    for (const ExportFormat& f : export_formats())
        if (name == f.name) return f;
    throw Error("export", "--format", "unknown format " + name);
}

} // namespace kvscope
