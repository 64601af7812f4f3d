#include "views/views.h"

namespace kvscope {

const std::vector<ViewEntry>& ViewTable() {
    static const std::vector<ViewEntry> table = {
        {"Run setup", "The prompt, the method and its parameters, the budget; starts and stops runs.", DrawRunSetupView},
        {"Token strip", "Each generated token, coloured by whether it matches the reference run's.", DrawTokenStripView},
        {"Eviction raster", "Decode step by token position: when each token left one layer and KV head's cache.",
         DrawEvictionRasterView},
        {"Head grid", "Layer by head: a role score of the head analysis, or the share of the context each KV head "
                      "keeps at the selected step; click a head to select it and see its attention.", DrawHeadGridView},
        {"Memory & latency", "KV-cache bytes and time per decode step, next to the reference run.", DrawMemoryView},
        {"Attention heatmap", "Query by key attention of one layer and head: a run's decode steps, evicted keys "
                              "greyed, or a head's probe.", DrawAttentionHeatmapView},
        {"Compare", "The session's runs side by side: fidelity, KV bytes, KL per step, and two runs' kept sets.",
         DrawCompareView, "Compare"},
        {"Session browser", "The runs the session database keeps: filter, open into the views, export, delete.",
         DrawSessionBrowserView, "Sessions"},
        {"Plugin manager", "Loaded plugins, their methods and parameters; load a .so or reload one.",
         DrawPluginManagerView, "Plugins"},
        {"Export", "Stored runs to JSON, CSV, a Chrome trace or a report, as `kvscope export` writes them.",
         DrawExportView, "Export"},
    };
    return table;
}

} // namespace kvscope
