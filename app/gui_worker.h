// The workbench's worker thread: loads the model, then runs the engine on requests, and
// publishes what happens into a Snapshot the UI copies without ever waiting (try-lock;
// the worker holds the lock only to append). No torch in this header.
#pragma once

#include "app/cli_common.h"
#include "views/views.h"

#include <memory>
#include <string>
#include <vector>

namespace kvscope {

class GuiWorker {
public:
    // Starts the thread, which loads the model of `model` and the plugins at `plugins`.
    GuiWorker(const ModelOptions& model, const std::vector<std::string>& plugins);
    ~GuiWorker(); // stops a run at its next step and joins
    GuiWorker(const GuiWorker&) = delete;
    GuiWorker& operator=(const GuiWorker&) = delete;

    void Run(const RunRequest& request); // queued behind a run in progress
    void Stop();                         // the run or analysis in progress, at its next step
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
