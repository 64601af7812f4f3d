// Run setup: the model (an HF folder or a GGUF file, with the recent ones), the prompt (free
// text or a task preset), the method builder (widgets from each parameter's schema), budget,
// seed, reference, and Run / Pause / Step / Stop; the session's runs.
#include "views/plot.h"
#include "views/views.h"

#include <imgui_stdlib.h> // InputText on std::string (in Debian's libimgui)

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace kvscope {

namespace {

const char* const kSourceNames[] = {"Chat prompt", "Plain text prompt", "Passkey (find the key in ~400 tokens)",
                                    "Natural text (teacher-forced)"};

// The loaded model goes first in the recent list, once it is ready.
void RememberModel(const ModelInfo& m, RunSetupState& setup) {
    auto& recent = setup.recent_models;
    if (!m.ready || m.path.empty() || (!recent.empty() && recent.front() == m.path)) return;
    recent.erase(std::remove(recent.begin(), recent.end(), m.path), recent.end());
    recent.insert(recent.begin(), m.path);
    if (recent.size() > kRecentModels) recent.resize(kRecentModels);
    if (setup.model_path.empty()) setup.model_path = m.path;
}

void ModelPicker(ViewContext& ctx, bool busy) {
    RunSetupState& setup = ctx.setup;
    RememberModel(ctx.snapshot.model, setup);
    if (!ImGui::TreeNode("Change model")) return;
    const float button = ImGui::CalcTextSize("Load").x + ImGui::GetStyle().FramePadding.x * 2;
    ImGui::SetNextItemWidth(-button - ImGui::GetStyle().ItemSpacing.x);
    ImGui::InputTextWithHint("##model", "HF model folder or .gguf file", &setup.model_path);
    ImGui::SameLine();
    const ModelInfo& m = ctx.snapshot.model;
    const bool loading = !m.ready && m.load_stage != "failed";
    ImGui::BeginDisabled(busy || loading || setup.model_path.empty());
    if (ImGui::Button("Load")) ctx.commands.load_model = setup.model_path;
    ImGui::EndDisabled();
    ImGui::SetNextItemWidth(-1);
    if (ImGui::BeginCombo("##recent", "recent models")) {
        for (const std::string& path : setup.recent_models)
            if (ImGui::Selectable(path.c_str(), path == setup.model_path)) setup.model_path = path;
        ImGui::EndCombo();
    }
    ImGui::TreePop();
}

void PromptEditor(RunSetupState& setup) {
    int source = int(setup.source);
    ImGui::SetNextItemWidth(-1);
    if (ImGui::Combo("##source", &source, kSourceNames, IM_ARRAYSIZE(kSourceNames)))
        setup.source = PromptSource(source);
    if (setup.source == PromptSource::Passkey) {
        ImGui::TextWrapped("A five-digit key hidden in filler text, then asked for; the run passes when its answer "
                           "holds the key.");
        return;
    }
    if (setup.source == PromptSource::NaturalText) {
        ImGui::TextWrapped("The bundled natural text: 256 prompt tokens, then the rest teacher-forced so that KL is "
                           "measured on a real continuation.");
        return;
    }
    ImGui::InputTextMultiline("##prompt", &setup.prompt, {-1, ImGui::GetTextLineHeight() * 5});
}

void ResetValues(const MethodSchema& schema, MethodStage& stage) {
    stage.values.clear();
    for (const ParamSchema& p : schema.params) stage.values.push_back(p.default_value);
}

// One parameter's widget, from its schema: a slider within the range, or a checkbox.
void ParamWidget(const ParamSchema& p, double& value) {
    const bool wide = p.max_value - p.min_value > 4096;
    if (p.type == ParamSchema::Bool) {
        bool b = value != 0;
        if (ImGui::Checkbox(p.name.c_str(), &b)) value = b;
    } else if (p.type == ParamSchema::Int) {
        int v = int(value);
        const int lo = int(std::max(-1e9, p.min_value)), hi = int(std::min(1e9, p.max_value));
        if (wide ? ImGui::DragInt(p.name.c_str(), &v, 1.0f, lo, hi) : ImGui::SliderInt(p.name.c_str(), &v, lo, hi))
            value = std::clamp(v, lo, hi);
    } else {
        float v = float(value);
        const float lo = float(std::max(-1e9, p.min_value)), hi = float(std::min(1e9, p.max_value));
        if (wide ? ImGui::DragFloat(p.name.c_str(), &v, 0.01f, lo, hi) : ImGui::SliderFloat(p.name.c_str(), &v, lo, hi))
            value = std::clamp(double(v), double(lo), double(hi));
    }
    if (!p.help.empty()) HelpMarker(p.help.c_str());
}

// The stage's method, found by name when a plugin load moved it; null when it is gone.
const MethodSchema* StageSchema(const std::vector<MethodSchema>& methods, const MethodStage& stage) {
    if (stage.method >= 0 && size_t(stage.method) < methods.size() && methods[size_t(stage.method)].name == stage.name)
        return &methods[size_t(stage.method)];
    for (const MethodSchema& m : methods)
        if (m.name == stage.name) return &m;
    return nullptr;
}

// Each stage follows its method through a plugin load; a stage whose method went away, or
// whose parameters changed, starts over.
void FollowMethods(const std::vector<MethodSchema>& methods, std::vector<MethodStage>& stages) {
    for (MethodStage& stage : stages) {
        const MethodSchema* m = StageSchema(methods, stage);
        stage.method = m ? int(m - methods.data()) : -1;
        if (!m) stage.values.clear();
        else if (stage.values.size() != m->params.size()) ResetValues(*m, stage);
    }
}

// A combo of the methods of one family; returns true when the choice changed.
bool MethodCombo(const char* id, const std::vector<MethodSchema>& methods, const char* family, MethodStage& stage) {
    const char* preview = stage.method >= 0 ? methods[size_t(stage.method)].name.c_str() : "(none)";
    bool changed = false;
    ImGui::SetNextItemWidth(-ImGui::GetFrameHeight() * 1.5f);
    if (ImGui::BeginCombo(id, preview)) {
        for (size_t i = 0; i < methods.size(); ++i) {
            if (methods[i].family != family) continue;
            if (ImGui::Selectable(methods[i].name.c_str(), int(i) == stage.method)) {
                stage.method = int(i);
                stage.name = methods[i].name;
                ResetValues(methods[i], stage);
                changed = true;
            }
            if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s (%s)", methods[i].help.c_str(), methods[i].plugin.c_str());
        }
        ImGui::EndCombo();
    }
    return changed;
}

void MethodBuilder(const Snapshot& snap, RunSetupState& setup) {
    if (setup.stages.empty() && !SelectMethod(snap, setup, "snapkv")) SelectMethod(snap, setup, "full");
    FollowMethods(snap.methods, setup.stages);
    for (size_t s = 0; s < setup.stages.size(); ++s) {
        ImGui::PushID(int(s));
        MethodStage& stage = setup.stages[s];
        MethodCombo("##method", snap.methods, s == 0 ? "scorer" : "allocator", stage);
        if (s > 0) {
            ImGui::SameLine();
            if (ImGui::SmallButton("x")) {
                setup.stages.erase(setup.stages.begin() + std::ptrdiff_t(s));
                ImGui::PopID();
                break;
            }
        }
        if (stage.method >= 0) {
            const MethodSchema& m = snap.methods[size_t(stage.method)];
            ImGui::Indent();
            for (size_t p = 0; p < m.params.size() && p < stage.values.size(); ++p) ParamWidget(m.params[p], stage.values[p]);
            ImGui::Unindent();
        }
        ImGui::PopID();
    }
    if (ImGui::SmallButton("+ allocator")) setup.stages.push_back({});
    HelpMarker("Add a budget allocator (per layer or per head) on top of the scorer.");
    ImGui::TextDisabled("spec: %s", MethodSpecText(snap.methods, setup.stages).c_str());
}

void RunControls(ViewContext& ctx) {
    RunSetupState& setup = ctx.setup;
    ImGui::Checkbox("budget as % of context", &setup.budget_fraction);
    if (setup.budget_fraction) ImGui::SliderInt("budget", &setup.budget, 1, 100, "%d%%");
    else ImGui::SliderInt("budget", &setup.budget, 4, 1024, "%d tokens", ImGuiSliderFlags_Logarithmic);
    HelpMarker("Slots each layer and KV head keeps, protected sinks and window included.");
    ImGui::SliderInt("steps", &setup.n_predict, 1, 512, "%d", ImGuiSliderFlags_Logarithmic);
    HelpMarker("Tokens to generate at most (a task's own length wins).");
    ImGui::InputInt("seed", &setup.seed);
    HelpMarker("Seed for randomised methods; runs are deterministic for a seed.");
    ImGui::Checkbox("reference", &setup.reference);
    ImGui::SameLine();
    ImGui::Checkbox("stop at end of text", &setup.stop_at_end);
    if (ImGui::IsItemHovered())
        ImGui::SetTooltip("End the run at the model's end-of-generation token; off: always take all the steps.");
    HelpMarker("Also run the full cache, to measure token match, KL and memory against it.");

    const bool busy = !ctx.snapshot.runs.empty() && ctx.snapshot.runs.back().live();
    const bool can_run = ctx.snapshot.model.ready && !busy;
    ImGui::BeginDisabled(!can_run);
    if (ImGui::Button("Run")) {
        ctx.commands.run = true;
        ctx.commands.request = MakeRunRequest(ctx.snapshot, setup);
    }
    ImGui::EndDisabled();
    ImGui::SameLine();
    ImGui::BeginDisabled(!busy);
    if (ImGui::Button(ctx.snapshot.paused ? "Resume" : "Pause")) ctx.commands.pause = true;
    if (ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled))
        ImGui::SetTooltip("Hold the run before its next decode step (Space).");
    ImGui::SameLine();
    ImGui::BeginDisabled(!ctx.snapshot.paused);
    if (ImGui::Button("Step")) ctx.commands.step = true;
    if (ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled))
        ImGui::SetTooltip("One decode step while paused (.).");
    ImGui::EndDisabled();
    ImGui::SameLine();
    if (ImGui::Button("Stop")) ctx.commands.stop = true;
    ImGui::EndDisabled();
    if (!ctx.snapshot.model.ready) {
        ImGui::SameLine();
        ImGui::TextDisabled("model loading...");
    }
}

void RunList(ViewContext& ctx) {
    const auto& runs = ctx.snapshot.runs;
    for (size_t i = 0; i < runs.size(); ++i) {
        const RunView& r = runs[i];
        char label[256];
        std::snprintf(label, sizeof label, "#%zu %s @ %s  %s %zu steps%s", i + 1, r.method.c_str(), r.budget.c_str(),
                      StatusName(r.status), r.steps.size(), r.opened ? "  (stored)" : "");
        ImGui::PushStyleColor(ImGuiCol_Text, RunColor(int(i)));
        if (ImGui::Selectable(label, ctx.selection.run == int(i))) ctx.selection.run = int(i);
        ImGui::PopStyleColor();
        if (ImGui::IsItemHovered())
            ImGui::SetTooltip("%s%s%s", r.error.c_str(), r.error.empty() ? "" : "\n",
                              r.stored_id >= 0 ? ("run " + std::to_string(r.stored_id) + " in the session database").c_str()
                                               : "not in the session database");
    }
}

} // namespace

std::string MethodSpecText(const std::vector<MethodSchema>& methods, const std::vector<MethodStage>& stages) {
    std::string spec;
    for (const MethodStage& stage : stages) {
        const MethodSchema* schema = StageSchema(methods, stage);
        if (!schema) continue;
        const MethodSchema& m = *schema;
        std::string args;
        for (size_t p = 0; p < m.params.size() && p < stage.values.size(); ++p) {
            if (stage.values[p] == m.params[p].default_value) continue;
            char value[48];
            std::snprintf(value, sizeof value, "%.6g", stage.values[p]);
            args += (args.empty() ? "" : ",") + m.params[p].name + "=" + value;
        }
        spec += (spec.empty() ? "" : "+") + m.name + (args.empty() ? "" : "(" + args + ")");
    }
    return spec.empty() ? "full" : spec;
}

RunRequest MakeRunRequest(const Snapshot& snapshot, const RunSetupState& setup) {
    RunRequest r;
    r.source = setup.source;
    r.prompt = setup.prompt;
    r.method = MethodSpecText(snapshot.methods, setup.stages);
    r.budget = setup.budget_fraction ? std::to_string(setup.budget) + "%" : std::to_string(setup.budget);
    r.seed = uint64_t(setup.seed);
    r.reference = setup.reference;
    r.stop_at_end = setup.stop_at_end;
    r.n_predict = setup.n_predict;
    return r;
}

bool SelectMethod(const Snapshot& snapshot, RunSetupState& setup, const std::string& method) {
    for (size_t i = 0; i < snapshot.methods.size(); ++i) {
        if (snapshot.methods[i].name != method) continue;
        MethodStage stage;
        stage.method = int(i);
        stage.name = method;
        ResetValues(snapshot.methods[i], stage);
        setup.stages = {stage};
        return true;
    }
    return false;
}

void DrawRunSetupView(ViewContext& ctx) {
    const ModelInfo& m = ctx.snapshot.model;
    const bool failed = m.load_stage == "failed";
    ImGui::TextWrapped("%s", m.ready ? m.name.c_str() : failed ? "no model: choose one below" : "loading the model...");
    if (!m.ready && !failed) ImGui::ProgressBar(float(m.load_progress), {-1, 0}, m.load_stage.c_str());
    else if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s\n%d layers, %d query heads, %d KV heads, on %s", m.path.c_str(),
                                                       m.n_layer, m.n_head, m.n_head_kv, m.device.c_str());
    ModelPicker(ctx, !ctx.snapshot.runs.empty() && ctx.snapshot.runs.back().live());
    SectionHeading("Prompt");
    PromptEditor(ctx.setup);
    SectionHeading("Method");
    MethodBuilder(ctx.snapshot, ctx.setup);
    SectionHeading("Run");
    RunControls(ctx);
    SectionHeading("Runs in this session");
    RunList(ctx);
}

} // namespace kvscope
