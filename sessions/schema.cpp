#include "sessions/schema.h"

#include "core/error.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <thread>

namespace kvscope {

namespace {

// Version 1: runs, their steps and decisions, the tables other issues fill, comparisons.
const char* const kVersion1 = R"sql(
PRAGMA application_id = 1263948611; -- 0x4B565343, "KVSC"

-- One row per run of a method. status is 'unfinished' until the run ends, so a run whose
-- process died keeps saying so.
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    model_path    TEXT NOT NULL,
    model_hash    TEXT NOT NULL,    -- "sha256:<hex>" (sessions/model_hash.h)
    method        TEXT NOT NULL,    -- the run spec with its parameters (canonical once the run ends)
    budget        TEXT NOT NULL,
    prompt_text   TEXT NOT NULL,
    prompt_tokens BLOB NOT NULL,    -- int32 little-endian ids
    seed          INTEGER NOT NULL, -- the uint64 seed's bits
    device        TEXT NOT NULL,
    dtype         TEXT NOT NULL,
    build_version TEXT NOT NULL,
    started_at    TEXT NOT NULL,    -- UTC, ISO 8601 with milliseconds
    ended_at      TEXT,
    status        TEXT NOT NULL DEFAULT 'unfinished' CHECK (status IN ('unfinished', 'ok', 'failed')),
    error         TEXT
);

-- One row per step (StepEvent, core/engine.h); step 0 is the token the prefill predicts.
-- The reference columns are NULL for a run without a reference.
CREATE TABLE steps (
    run_id            INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step              INTEGER NOT NULL CHECK (step >= 0),
    token             INTEGER NOT NULL,
    text              BLOB NOT NULL,  -- the token's bytes: a byte-level token may split a UTF-8 character
    logprob           REAL NOT NULL,
    reference_token   INTEGER,
    reference_logprob REAL,
    kl                REAL,
    top1              INTEGER,
    match             INTEGER,        -- token = reference_token
    kv_bytes          INTEGER NOT NULL,
    kv_slots          INTEGER NOT NULL,
    step_seconds      REAL NOT NULL,
    policy_seconds    REAL NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;

-- What the method kept and evicted at a step, for each (layer, KV head) that lost slots:
-- one zlib blob per step, laid out as sessions/decision_blob.h describes.
CREATE TABLE decisions (
    run_id  INTEGER NOT NULL,
    step    INTEGER NOT NULL,
    n_heads INTEGER NOT NULL, -- (layer, KV head) entries in the blob
    size    INTEGER NOT NULL, -- bytes before compression
    data    BLOB NOT NULL,
    PRIMARY KEY (run_id, step),
    FOREIGN KEY (run_id, step) REFERENCES steps(run_id, step) ON DELETE CASCADE
) WITHOUT ROWID;

-- Sampled attention (query rows x keys, downsampled for long contexts) for the heatmap
-- views. No producer yet: the GUI issue (7) fills it once the engine streams samples.
CREATE TABLE attention_samples (
    run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step       INTEGER NOT NULL,
    layer      INTEGER NOT NULL,
    head       INTEGER NOT NULL, -- query head
    n_queries  INTEGER NOT NULL,
    n_keys     INTEGER NOT NULL, -- columns after downsampling
    key_stride INTEGER NOT NULL, -- key positions per column (1: not downsampled)
    data       BLOB NOT NULL,    -- zlib of float32 little-endian [n_queries, n_keys]
    PRIMARY KEY (run_id, step, layer, head)
) WITHOUT ROWID;

-- Head-role scores. No producer yet: the head-analysis issue (8) fills it. Keyed by the
-- model's hash, so a head-aware method finds the profile of the model it runs on.
CREATE TABLE head_roles (
    model_hash TEXT NOT NULL,
    probes     TEXT NOT NULL, -- the probe set and its seed
    layer      INTEGER NOT NULL,
    head       INTEGER NOT NULL, -- query head
    role       TEXT NOT NULL,    -- retrieval, induction, previous_token, sink, locality, entropy, ...
    score      REAL NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (model_hash, probes, layer, head, role)
) WITHOUT ROWID;

-- Named collections of runs: a `kvscope compare`, a sweep, a set picked in the GUI.
CREATE TABLE comparisons (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE comparison_runs (
    comparison_id INTEGER NOT NULL REFERENCES comparisons(id) ON DELETE CASCADE,
    run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    PRIMARY KEY (comparison_id, run_id)
) WITHOUT ROWID;
CREATE INDEX comparison_runs_by_run ON comparison_runs(run_id);
)sql";

// Version 2: the engine's summary of a run (RunSummary, core/engine.h), NULL until it ends;
// NULL also for "none" (no divergence, token match not measured).
const char* const kVersion2 = R"sql(
ALTER TABLE runs ADD COLUMN has_reference INTEGER;
ALTER TABLE runs ADD COLUMN n_steps INTEGER;
ALTER TABLE runs ADD COLUMN token_match REAL;
ALTER TABLE runs ADD COLUMN first_divergence INTEGER;
ALTER TABLE runs ADD COLUMN mean_kl REAL;
ALTER TABLE runs ADD COLUMN max_kl REAL;
ALTER TABLE runs ADD COLUMN top1 REAL;
ALTER TABLE runs ADD COLUMN ppl_method REAL;
ALTER TABLE runs ADD COLUMN ppl_reference REAL;
ALTER TABLE runs ADD COLUMN kv_bytes INTEGER;
ALTER TABLE runs ADD COLUMN peak_kv_bytes INTEGER;
ALTER TABLE runs ADD COLUMN reference_kv_bytes INTEGER;
ALTER TABLE runs ADD COLUMN final_context INTEGER;
ALTER TABLE runs ADD COLUMN prefill_seconds REAL;
ALTER TABLE runs ADD COLUMN decode_seconds REAL;
ALTER TABLE runs ADD COLUMN policy_seconds REAL;
)sql";

// Version 3: a run keeps one identity in every database it reaches, so `sessions merge`
// copies it once; it names its task and the answer that task checks, so a stored run can be
// scored again; and a `kvscope sweep` records its grid, so a resumed shard skips the cells
// it has and a merge can name the ones still missing.
const char* const kVersion3 = R"sql(
ALTER TABLE runs ADD COLUMN uuid TEXT;   -- 32 hex digits, random, given when the run begins
UPDATE runs SET uuid = lower(hex(randomblob(16)));
CREATE UNIQUE INDEX runs_by_uuid ON runs(uuid);
ALTER TABLE runs ADD COLUMN task TEXT;   -- "passkey", "text", a text file; NULL: a plain prompt
ALTER TABLE runs ADD COLUMN answer TEXT; -- what a correct output contains; NULL: nothing to check
ALTER TABLE runs ADD COLUMN sweep TEXT;  -- the sweep (sweeps.name) the run is a cell of, or NULL
ALTER TABLE runs ADD COLUMN cell TEXT;   -- its cell (sweep_cells.cell)
CREATE INDEX runs_by_cell ON runs(sweep, cell);

-- A `kvscope sweep`: its settings, and every cell of its grid (all shards' cells: each
-- shard stores the whole list, so any one shard's database knows what is missing).
CREATE TABLE sweeps (
    name       TEXT PRIMARY KEY,
    grid       TEXT NOT NULL, -- the settings as JSON; a sweep of the same name must match it
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE sweep_cells (
    sweep   TEXT NOT NULL REFERENCES sweeps(name) ON DELETE CASCADE,
    cell    TEXT NOT NULL,    -- "task=passkey seed=0 instance=1 method=snapkv budget=128"
    ordinal INTEGER NOT NULL, -- its place in the grid's order
    PRIMARY KEY (sweep, cell)
) WITHOUT ROWID;
)sql";

// Version 4: the reference's KV bytes after each step, so a stored run draws its reference's
// memory line as a live one does (NULL without a reference, and for steps stored before).
// attention_samples has its producer now, unchanged: the GUI's runs, one query per row
// (n_queries 1), its key positions in columns of key_stride positions each, the last
// column possibly partial.
const char* const kVersion4 = R"sql(
ALTER TABLE steps ADD COLUMN reference_kv_bytes INTEGER;
)sql";

int64_t pragma(sql::Connection& db, const std::string& name) {
    sql::Statement q = db.prepare("PRAGMA " + name, "reading the schema version");
    return q.step() ? q.int64(0) : 0;
}

int64_t table_count(sql::Connection& db) {
    sql::Statement q = db.prepare("SELECT count(*) FROM sqlite_master", "reading the schema");
    q.step();
    return q.int64(0);
}

// Refuses a file that is not ours or is newer than this build. The first read is where
// SQLite finds out that a file is not a database at all.
void check_ours(sql::Connection& db) {
    const int64_t version = pragma(db, "user_version");
    const int64_t application = pragma(db, "application_id");
    const std::string what = "sessions database";
    if (application != kSessionApplicationId && (version != 0 || table_count(db) != 0))
        throw Error(db.path(), what, "is a SQLite database, but not a KVScope sessions database");
    if (version > session_schema_version())
        throw Error(db.path(), what,
                    "was written by a newer KVScope (schema version " + std::to_string(version) +
                        "; this build knows up to " + std::to_string(session_schema_version()) +
                        "): use that version, or another --db");
}

void create_folder_of(const std::string& path) {
    const std::filesystem::path folder = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!folder.empty()) std::filesystem::create_directories(folder, ec);
    if (ec) throw Error(path, "creating its folder", ec.message());
}

std::unique_ptr<sql::Connection> open_for_writing(const std::string& path) {
    create_folder_of(path);
    auto db = std::make_unique<sql::Connection>(path, sql::Connection::Access::read_write);
    check_ours(*db);
    // WAL: a commit is one append, readers (the GUI) never block the writer, and a killed
    // process leaves a database that opens as of its last commit. synchronous=NORMAL does
    // not fsync each commit: a process crash loses nothing committed, a power cut may lose
    // the last commits but never the database.
    // Turning a new file to WAL needs it alone for a moment: a reader opening it just then
    // (`sessions progress`, the GUI) gets SQLite to answer busy without waiting. Retry.
    const char* setup = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON";
    for (int attempt = 0; !db->try_exec(setup, "setting up the sessions database"); ++attempt) {
        if (attempt == 500) throw Error(path, "setting up the sessions database", "is locked by another process (10 s)");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    migrate_session_db(*db, session_schema_version());
    return db;
}

} // namespace

const std::vector<Migration>& session_migrations() {
    static const std::vector<Migration> all{{1, kVersion1}, {2, kVersion2}, {3, kVersion3}, {4, kVersion4}};
    return all;
}

int session_schema_version() { return session_migrations().back().version; }

void migrate_session_db(sql::Connection& db, int version) {
    if (pragma(db, "user_version") >= version) return;
    for (const Migration& m : session_migrations()) {
        if (m.version > version) break;
        const std::string doing = "upgrading to schema version " + std::to_string(m.version);
        sql::Transaction transaction(db, doing);
        if (pragma(db, "user_version") >= m.version) continue; // done already (by another process)
        db.exec(m.sql, doing);
        db.exec("PRAGMA user_version = " + std::to_string(m.version), doing);
        transaction.commit();
    }
}

std::unique_ptr<sql::Connection> open_session_db(const std::string& path, SessionAccess access) {
    if (access == SessionAccess::write) return open_for_writing(path);
    if (!std::filesystem::exists(path)) throw Error(path, "sessions database", "does not exist");
    auto db = std::make_unique<sql::Connection>(path, sql::Connection::Access::read_only);
    check_ours(*db);
    if (pragma(*db, "user_version") == session_schema_version()) return db;
    db.reset();
    return open_for_writing(path); // an older schema: upgrade it, then read
}

std::string default_session_db_path() {
    if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg) return std::string(xdg) + "/kvscope/sessions.db";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : ".") + "/.local/share/kvscope/sessions.db";
}

} // namespace kvscope
