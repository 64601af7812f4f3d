#include "sessions/export.h"

#include "sessions/build_version.h"
#include "sessions/queries.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <ostream>

namespace kvscope {

namespace {

using Json = nlohmann::ordered_json;

// A run's tracks, one thread id each, in the order Perfetto shows them. A codec track
// joins them once codecs report their time (see step_phases()).
enum Track : int { kRunTrack = 1, kForwardTrack, kPolicyTrack };
struct TrackInfo {
    Track tid;
    const char* name;
};
constexpr TrackInfo kTracks[] = {{kRunTrack, "run"}, {kForwardTrack, "forward"}, {kPolicyTrack, "policy"}};

// What a step spent, in the order it happened: the forward pass, then the policy's hooks,
// selection and compaction (core/engine.cpp).
struct Phase {
    Track tid;
    const char* name;
    double seconds;
};
std::vector<Phase> step_phases(const StepEvent& e) {
    return {{kForwardTrack, e.step == 0 ? "prefill" : "decode", e.step_seconds},
            {kPolicyTrack, "policy", e.policy_seconds}};
}

// Time is kept in whole nanoseconds, so a slice ends exactly where the next begins; the
// format wants microseconds (Perfetto rounds them back to the same nanoseconds).
int64_t nanoseconds(double seconds) { return std::llround(std::max(0.0, seconds) * 1e9); }
double microseconds(int64_t ns) { return double(ns) / 1000.0; }

// Writes the trace one event per line, each as it is made.
class TraceWriter {
public:
    explicit TraceWriter(std::ostream& out) : out_(out) { out_ << "{\"traceEvents\":["; }
    void finish() {
        out_ << "\n],\"displayTimeUnit\":\"ms\",\"otherData\":"
             << Json{{"exported_by", std::string("KVScope ") + kvscope_build_version()}}.dump() << "}\n";
    }

    void metadata(int64_t pid, Track tid, const char* name, Json args) {
        write(Json{{"name", name}, {"ph", "M"}, {"pid", pid}, {"tid", tid}, {"args", std::move(args)}});
    }
    void slice(int64_t pid, Track tid, const std::string& name, int64_t start_ns, int64_t dur_ns, Json args) {
        write(Json{{"name", name}, {"cat", "kvscope"}, {"ph", "X"}, {"ts", microseconds(start_ns)},
                   {"dur", microseconds(dur_ns)}, {"pid", pid}, {"tid", tid}, {"args", std::move(args)}});
    }
    // One series per counter: Perfetto names its track "<name> <key>".
    void counter(int64_t pid, const char* name, int64_t at_ns, const char* key, double value) {
        write(Json{{"name", name}, {"ph", "C"}, {"ts", microseconds(at_ns)}, {"pid", pid}, {"tid", kRunTrack},
                   {"args", Json{{key, value}}}});
    }

private:
    void write(const Json& event) { // text from a damaged database is never a reason to fail
        out_ << separator_ << event.dump(-1, ' ', false, Json::error_handler_t::replace);
        separator_ = ",\n";
    }

    std::ostream& out_;
    const char* separator_ = "\n";
};

Json run_settings(const StoredRun& run) {
    const RunRecord& r = run.record;
    return Json{{"model", r.model_path},         {"model_hash", r.model_hash},
                {"method", r.method},             {"budget", r.budget},
                {"prompt_tokens", r.prompt_tokens.size()}, {"seed", r.seed},
                {"device", r.device},             {"dtype", r.dtype},
                {"build", run.build_version},     {"started_at", run.started_at},
                {"ended_at", run.ended_at},       {"status", run.status},
                {"error", run.error}};
}

std::string run_title(const StoredRun& run) { return run.record.method + " @ " + run.record.budget; }

// The process of a run: its name (with the run's settings as args), labels and tracks.
void describe_process(TraceWriter& trace, const StoredRun& run, int64_t sort_index) {
    Json name{{"name", "run " + std::to_string(run.id) + ": " + run_title(run)}};
    name.update(run_settings(run));
    trace.metadata(run.id, kRunTrack, "process_name", std::move(name));
    trace.metadata(run.id, kRunTrack, "process_labels",
                   {{"labels", run.record.device + " " + run.record.dtype + ", " + run.status}});
    trace.metadata(run.id, kRunTrack, "process_sort_index", {{"sort_index", sort_index}});
    for (const TrackInfo& track : kTracks) {
        trace.metadata(run.id, track.tid, "thread_name", {{"name", track.name}});
        trace.metadata(run.id, track.tid, "thread_sort_index", {{"sort_index", int(track.tid)}});
    }
}

// The counters at the end of a step: what the cache holds after its decisions (and the
// reference's at the same step), fidelity against the reference, and the decode speed the
// step's time amounts to.
void step_counters(TraceWriter& trace, int64_t pid, const StepEvent& e, int64_t end_ns, int64_t step_ns) {
    trace.counter(pid, "KV", end_ns, "bytes", double(e.kv_bytes));
    if (e.reference_kv_bytes >= 0) trace.counter(pid, "reference KV", end_ns, "bytes", double(e.reference_kv_bytes));
    trace.counter(pid, "kept", end_ns, "slots", double(e.kv_slots));
    if (e.reference_token >= 0) {
        trace.counter(pid, "KL", end_ns, "nats", e.kl);
        trace.counter(pid, "top-1", end_ns, "agreement", e.top1 ? 1 : 0);
    }
    if (e.step > 0 && step_ns > 0) trace.counter(pid, "decode", end_ns, "tok/s", 1e9 / double(step_ns));
}

int64_t step_nanoseconds(const StepEvent& e) {
    int64_t total = 0;
    for (const Phase& phase : step_phases(e)) total += nanoseconds(phase.seconds);
    return total;
}

// Lays the run's steps end to end from 0.
void write_steps(TraceWriter& trace, int64_t pid, const std::vector<StoredStep>& steps) {
    int64_t now = 0;
    for (const StoredStep& s : steps) {
        const int64_t step_start = now;
        for (const Phase& phase : step_phases(s.event)) {
            const int64_t dur = nanoseconds(phase.seconds);
            if (dur == 0) continue; // nothing to see (a method that never acts)
            trace.slice(pid, phase.tid, phase.name, now, dur,
                        {{"step", s.event.step}, {"token", s.event.token}, {"text", s.text}});
            now += dur;
        }
        step_counters(trace, pid, s.event, now, now - step_start);
    }
}

void write_run(TraceWriter& trace, const StoredRun& run, const std::vector<StoredStep>& steps, int64_t sort_index) {
    describe_process(trace, run, sort_index);
    int64_t run_ns = 0;
    for (const StoredStep& s : steps) run_ns += step_nanoseconds(s.event);
    if (run_ns > 0) trace.slice(run.id, kRunTrack, run_title(run), 0, run_ns, run_settings(run));
    write_steps(trace, run.id, steps);
}

} // namespace

void export_trace(sql::Connection& db, const std::vector<int64_t>& runs, std::ostream& out) {
    TraceWriter trace(out);
    for (size_t i = 0; i < runs.size(); ++i) {
        const StoredRun run = load_run(db, runs[i]);
        write_run(trace, run, load_steps(db, run.id), int64_t(i));
    }
    trace.finish();
}

} // namespace kvscope
