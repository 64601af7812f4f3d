#include "sessions/sqlite.h"

#include "core/error.h"

#include <sqlite3.h>

#include <cstring>
#include <utility>

namespace kvscope::sql {

namespace {

// What a failure means for the user, by SQLite's (extended) result code.
const char* plain_meaning(int code) {
    // A failed write: the OS's reason (ENOSPC, EFBIG) does not reliably reach us.
    if (code == SQLITE_IOERR_WRITE || code == SQLITE_IOERR_FSYNC || code == SQLITE_IOERR_TRUNCATE)
        return "could not be written, the disk may be full or the file over a size limit";
    switch (code & 0xff) {
    case SQLITE_NOTADB: return "is not a SQLite database";
    case SQLITE_FULL: return "the disk (or the database's size limit) is full";
    case SQLITE_READONLY: return "cannot be written (read-only file, folder or file system)";
    case SQLITE_CANTOPEN: return "cannot be opened (missing folder or no permission)";
    case SQLITE_CORRUPT: return "is damaged";
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return "is locked by another process";
    case SQLITE_IOERR: return "could not be read or written";
    default: return nullptr;
    }
}

// "<meaning> (<SQLite's message>: <the OS's message>)"
std::string describe(sqlite3* db, int code) {
    std::string detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(code);
    if (const int os = db ? sqlite3_system_errno(db) : 0; os != 0) detail += std::string(": ") + std::strerror(os);
    const char* meaning = plain_meaning(code);
    return meaning ? std::string(meaning) + " (" + detail + ")" : detail;
}

} // namespace

Connection::Connection(const std::string& path, Access access) : path_(path) {
    const int flags = access == Access::read_write ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    const int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
        Error e(path, "opening the sessions database", describe(db_, rc));
        sqlite3_close(db_);
        throw e;
    }
    sqlite3_extended_result_codes(db_, 1);
    // SQLite quietly opens a write-protected file read-only; a writer must know now.
    if (access == Access::read_write && sqlite3_db_readonly(db_, "main") == 1) {
        sqlite3_close(db_);
        throw Error(path, "opening the sessions database", plain_meaning(SQLITE_READONLY));
    }
    // A reader (the GUI) and a writer (a run) may share the file: wait for the lock.
    sqlite3_busy_timeout(db_, 5000);
}

Connection::~Connection() { sqlite3_close(db_); }

Error Connection::error(int code, const std::string& doing) const { return Error(path_, doing, describe(db_, code)); }

void Connection::exec(const std::string& sql, const std::string& doing) {
    if (const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr); rc != SQLITE_OK) throw error(rc, doing);
}

bool Connection::try_exec(const std::string& sql, const std::string& doing) {
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
    if ((rc & 0xff) == SQLITE_BUSY) return false;
    if (rc != SQLITE_OK) throw error(rc, doing);
    return true;
}

Statement Connection::prepare(const std::string& sql, const std::string& doing) {
    sqlite3_stmt* stmt = nullptr;
    if (const int rc = sqlite3_prepare_v2(db_, sql.c_str(), int(sql.size()), &stmt, nullptr); rc != SQLITE_OK)
        throw error(rc, doing);
    return Statement(*this, stmt, doing);
}

int64_t Connection::last_insert_id() const { return sqlite3_last_insert_rowid(db_); }
int64_t Connection::changes() const { return sqlite3_changes(db_); }

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), doing_(std::move(other.doing_)) {}

Statement& Statement::checked(int rc) {
    if (rc != SQLITE_OK) throw db_->error(rc, doing_);
    return *this;
}

Statement& Statement::bind_int(int i, int64_t value) { return checked(sqlite3_bind_int64(stmt_, i, value)); }
Statement& Statement::bind_real(int i, double value) { return checked(sqlite3_bind_double(stmt_, i, value)); }
Statement& Statement::bind_null(int i) { return checked(sqlite3_bind_null(stmt_, i)); }

Statement& Statement::bind_text(int i, std::string_view text) {
    return checked(sqlite3_bind_text64(stmt_, i, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
}

Statement& Statement::bind_blob(int i, std::string_view bytes) {
    // A zero-length blob needs a non-null pointer, or SQLite stores NULL.
    return checked(sqlite3_bind_blob64(stmt_, i, bytes.empty() ? "" : bytes.data(), bytes.size(), SQLITE_TRANSIENT));
}

bool Statement::step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    Error e = db_->error(rc, doing_);
    sqlite3_reset(stmt_); // usable again, should the caller retry
    throw e;
}

void Statement::execute() {
    while (step()) {}
    reset();
}

void Statement::reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

bool Statement::is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
int64_t Statement::int64(int column) const { return sqlite3_column_int64(stmt_, column); }
double Statement::real(int column) const { return sqlite3_column_double(stmt_, column); }

std::string Statement::text(int column) const {
    const void* data = sqlite3_column_blob(stmt_, column); // the bytes of a TEXT or a BLOB; null for NULL
    return data ? std::string(static_cast<const char*>(data), size_t(sqlite3_column_bytes(stmt_, column))) : "";
}

Transaction::Transaction(Connection& db, const std::string& doing) : db_(db), doing_(doing) {
    db_.exec("BEGIN IMMEDIATE", doing_);
}

Transaction::~Transaction() {
    if (!open_) return;
    try {
        db_.exec("ROLLBACK", doing_);
    } catch (const Error&) {
        // SQLite already rolled back (it does after some errors): nothing is left to undo.
    }
}

void Transaction::commit() {
    db_.exec("COMMIT", doing_);
    open_ = false;
}

} // namespace kvscope::sql
