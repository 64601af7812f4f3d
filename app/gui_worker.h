// The workbench's worker thread: loads the model and the plugins, runs the engine, keeps
// the session database (stores every run, lists, opens, deletes and exports stored ones),
// and publishes what happens into a Snapshot the UI copies without ever waiting (try-lock;
// the worker holds the lock only to append). Requests are done one at a time, in order, so
// a plugin reload or a delete waits behind a run in progress. No torch in this header.
#pragma once

#include "app/cli_common.h"
#include "views/views.h"

#include <memory>
#include <string>
#include <vector>

namespace kvscope {

class GuiWorker {
public:
    // Starts the thread, which loads the model of `model` and the plugins at `plugins`, and
    // opens the session database at `db` (empty: the default one).
    GuiWorker(const ModelOptions& model, const std::vector<std::string>& plugins, const std::string& db);
    ~GuiWorker(); // stops a run at its next step and joins
    GuiWorker(const GuiWorker&) = delete;
    GuiWorker& operator=(const GuiWorker&) = delete;

    void Run(const RunRequest& request); // queued behind a run in progress
    void Stop();                         // the run or analysis in progress, at its next step (or the reference's end)
    void Pause(bool paused);             // before the run's next decode step
    void Step();                         // one decode step while paused
    void RefreshStoredRuns();
    void OpenStoredRun(int64_t id);      // into Snapshot::runs, as a live run shows it
    void DeleteStoredRuns(const std::vector<int64_t>& ids);
    void Export(const ExportRequest& request);
    void LoadPlugin(const std::string& path); // a path already loaded is reloaded
    void LoadModel(const std::string& path);  // an HF folder or a GGUF file; the current one stays if it fails
    // The head-role analysis (core/head_roles.h) into Snapshot::heads, queued like a run:
    // the scores stored in the sessions database for this model unless `fresh`, else
    // analyzed and stored there.
    void AnalyzeHeads(bool fresh);
    // One query head's attention on the probe that defines the request's role, into
    // Snapshot::heads.map; queued behind the work in progress.
    void ShowHeadAttention(const HeadAttentionRequest& request);
    // Copies what changed into `ui`; false (and `ui` untouched) when the worker holds the lock.
    bool Sync(Snapshot& ui);
    // For the banner: an error found on the UI side (a font, a screenshot).
    void ReportError(const std::string& message);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace kvscope
