// A thin layer over SQLite for the sessions library: one connection, prepared statements
// with bound parameters only (text from prompts and plugins never becomes SQL), and every
// failure turned into a kvscope::Error naming the database file, what was being done and
// what SQLite (and the OS, when it says) reported.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

struct sqlite3;
struct sqlite3_stmt;

namespace kvscope {
class Error;
}

namespace kvscope::sql {

class Statement;

class Connection {
public:
    enum class Access { read_write, read_only };

    // read_write creates the file when missing (not its folder) and refuses a file it
    // could only open read-only; read_only needs the file to exist.
    Connection(const std::string& path, Access access);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    const std::string& path() const { return path_; }
    // SQL without parameters (schema, pragmas); `doing` says what for, in errors.
    void exec(const std::string& sql, const std::string& doing);
    // As exec(), but false when the database is busy past the busy timeout or at once (SQLite
    // does not wait where waiting could deadlock), for a caller that can retry.
    bool try_exec(const std::string& sql, const std::string& doing);
    Statement prepare(const std::string& sql, const std::string& doing);
    int64_t last_insert_id() const;
    int64_t changes() const;
    // The Error for SQLite result `code` while `doing`, to throw.
    Error error(int code, const std::string& doing) const;

private:
    std::string path_;
    sqlite3* db_ = nullptr;
};

// A prepared statement. Parameters are numbered from 1, columns from 0, as in SQLite.
class Statement {
public:
    Statement(Connection& db, sqlite3_stmt* stmt, std::string doing) : db_(&db), stmt_(stmt), doing_(std::move(doing)) {}
    ~Statement();
    Statement(Statement&& other) noexcept;
    Statement& operator=(Statement&&) = delete;
    Statement(const Statement&) = delete;

    Statement& bind_int(int i, int64_t value);
    Statement& bind_real(int i, double value);
    Statement& bind_text(int i, std::string_view text);
    Statement& bind_blob(int i, std::string_view bytes);
    Statement& bind_null(int i);

    bool step();    // true while there is a row to read
    void execute(); // steps to the end and resets, for statements without rows
    void reset();   // ready to bind and run again

    bool is_null(int column) const;
    int64_t int64(int column) const;
    double real(int column) const;
    std::string text(int column) const; // also reads a BLOB's bytes

private:
    Statement& checked(int rc); // throws unless SQLITE_OK

    Connection* db_;
    sqlite3_stmt* stmt_;
    std::string doing_;
};

// BEGIN IMMEDIATE (takes the write lock up front, so two writers queue instead of
// failing mid-transaction) ... commit(); rolled back if destroyed before commit().
class Transaction {
public:
    Transaction(Connection& db, const std::string& doing);
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit();

private:
    Connection& db_;
    std::string doing_;
    bool open_ = true;
};

} // namespace kvscope::sql
