// libFuzzer target: a session JSON export as `kvscope sessions import` reads it:
// import_json into a sessions database (in memory, the current schema). Properties: a
// document is stored whole or not at all; what was stored exports to a document that
// imports again as runs already there.
#include "fuzz_util.h"

#include "sessions/export.h"
#include "sessions/schema.h"
#include "sessions/sqlite.h"

#include <sstream>

using namespace kvscope;

namespace {

sql::Connection& database() {
    static sql::Connection* db = [] {
        auto* out = new sql::Connection(":memory:", sql::Connection::Access::read_write);
        migrate_session_db(*out, session_schema_version());
        return out;
    }();
    return *db;
}

int64_t count_runs(sql::Connection& db) {
    sql::Statement q = db.prepare("SELECT count(*) FROM runs", "counting runs");
    return q.step() ? q.int64(0) : -1;
}

// Every input starts from an empty database.
void empty(sql::Connection& db) {
    db.exec("DELETE FROM comparison_runs; DELETE FROM comparisons; DELETE FROM sweep_cells; DELETE FROM sweeps;"
            "DELETE FROM decisions; DELETE FROM steps; DELETE FROM attention_samples; DELETE FROM head_roles;"
            "DELETE FROM runs;",
            "emptying the fuzz database");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    sql::Connection& db = database();
    empty(db);
    const std::string text(reinterpret_cast<const char*>(data), size);
    ImportResult result;
    bool imported = false;
    fuzz::expect_clean_errors([&] {
        result = import_json(db, text, "fuzz.json");
        imported = true;
    });
    if (!imported) {
        if (count_runs(db) != 0) fuzz::fail("a refused document left runs behind");
        return 0;
    }
    if (count_runs(db) != int64_t(result.stored.size())) fuzz::fail("runs stored and runs reported differ");
    if (result.stored.empty()) return 0;
    std::ostringstream out;
    fuzz::expect_clean_errors([&] { export_json(db, result.stored, out); });
    ImportResult again;
    fuzz::expect_clean_errors([&] { again = import_json(db, out.str(), "fuzz re-export"); });
    if (!again.stored.empty() || again.existing.size() != result.stored.size())
        fuzz::fail("the re-exported runs did not import as existing ones");
    return 0;
}
