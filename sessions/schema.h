// The sessions database: where it lives, its schema, and the forward migrations that create
// and upgrade it. The DDL of every version is in schema.cpp, each as it was first written.
//
// The schema version is PRAGMA user_version; PRAGMA application_id marks the file as ours,
// so another program's SQLite file is refused rather than filled with our tables.
#pragma once

#include "sessions/sqlite.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvscope {

constexpr int32_t kSessionApplicationId = 0x4B565343; // "KVSC"
// The current time in the schema's format (UTC, ISO 8601 with milliseconds), in SQL.
constexpr const char* kSqlNow = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

struct Migration {
    int version;     // the schema version it produces
    const char* sql; // applied to a database of version - 1 (version 1: to an empty one)
};

// Every version in order, from version 1.
const std::vector<Migration>& session_migrations();
// The newest version, the one this build writes.
int session_schema_version();

enum class SessionAccess { write, read };

// Opens a sessions database. `write` creates the file and its folder when missing, switches
// it to WAL mode and migrates it forward; `read` opens an existing one as it is, upgrading
// it first (which needs write access) when it is older than this build. Throws Error naming
// the file when it is not a SQLite database, is another program's, comes from a newer
// KVScope, cannot be written (for `write`) or sits on a full disk.
std::unique_ptr<sql::Connection> open_session_db(const std::string& path, SessionAccess access);

// Applies the migrations up to `version` that `db` lacks, each in its own transaction.
// open_session_db() calls it; the migration test uses it to build older databases.
void migrate_session_db(sql::Connection& db, int version);

// $XDG_DATA_HOME/kvscope/sessions.db, else ~/.local/share/kvscope/sessions.db.
std::string default_session_db_path();

} // namespace kvscope
