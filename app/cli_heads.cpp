// kvscope heads: the role of every attention head (core/head_roles.h) from the probe suite
// (core/probes.h): the top heads per role and each layer's preference, stored with the
// model's hash in the sessions database and written as CSV or JSON on request.
#include "app/cli_common.h"

#include "core/error.h"
#include "core/head_roles.h"
#include "core/model.h"
#include "sessions/csv.h"
#include "sessions/export.h"
#include "sessions/model_hash.h"
#include "sessions/queries.h"
#include "sessions/schema.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

namespace kvscope {

namespace {

struct HeadsArgs {
    ModelOptions model;
    ProbeOptions probes;
    int top = 5;
    std::string csv, json, write_probes;
    StoreOptions store;
};

std::string head_name(int64_t layer, int64_t head) { return "L" + std::to_string(layer) + ".H" + std::to_string(head); }

void print_roles(const HeadRoles& r, int top) {
    std::printf("%-15s  top %d heads (layer.head score)\n", "role", top);
    for (size_t role = 0; role < r.roles.size(); ++role) {
        const std::vector<double>& s = r.scores[role];
        std::vector<int64_t> order(s.size());
        std::iota(order.begin(), order.end(), 0);
        const size_t n = std::min(order.size(), size_t(top));
        std::partial_sort(order.begin(), order.begin() + int64_t(n), order.end(),
                          [&](int64_t a, int64_t b) { return s[size_t(a)] > s[size_t(b)]; });
        std::printf("%-15s ", r.roles[role].c_str());
        for (size_t i = 0; i < n; ++i)
            std::printf(" %7s %.3f", head_name(order[i] / r.n_head, order[i] % r.n_head).c_str(), s[size_t(order[i])]);
        std::printf("\n");
    }
    const double retrieval_heads = double(std::count_if(r.role("retrieval").begin(), r.role("retrieval").end(),
                                                         [](double x) { return x > 0.1; }));
    std::printf("\nretrieval > 0.1: %.0f of %lld heads (%.1f%%)\n", retrieval_heads, (long long)(r.n_layer * r.n_head),
                100 * retrieval_heads / double(r.n_layer * r.n_head));
    std::printf("layer preference (CAKE): ");
    for (double p : r.layer_preference) std::printf(" %.3g", p);
    std::printf("\n");
}

void write_csv(const HeadRoles& r, const std::string& path) {
    std::ofstream out(path, std::ios::binary);
    if (!out) throw Error(path, "csv", "cannot be written");
    CsvWriter csv(out);
    csv.header({"layer", "head", "kv_head", "role", "score"});
    for (size_t role = 0; role < r.roles.size(); ++role)
        for (int64_t i = 0; i < r.n_layer * r.n_head; ++i) {
            const int64_t head = i % r.n_head;
            csv.integer(i / r.n_head).integer(head).integer(head / (r.n_head / r.n_head_kv)).text(r.roles[role]);
            csv.real(r.scores[role][size_t(i)]).end_row();
        }
    for (int64_t l = 0; l < r.n_layer; ++l)
        csv.integer(l).empty().empty().text("layer_preference").real(r.layer_preference[size_t(l)]).end_row();
    if (!out.flush()) throw Error(path, "csv", "write failed (disk full?)");
}

void write_json(const HeadRoles& r, const std::string& model, const std::string& hash, const std::string& probes,
                const std::string& path) {
    nlohmann::ordered_json j{{"model", model}, {"model_hash", hash}, {"probes", probes}, {"n_layer", r.n_layer},
                             {"n_head", r.n_head}, {"n_head_kv", r.n_head_kv}};
    for (size_t role = 0; role < r.roles.size(); ++role) {
        nlohmann::ordered_json layers = nlohmann::ordered_json::array();
        for (int64_t l = 0; l < r.n_layer; ++l)
            layers.push_back(std::vector<double>(r.scores[role].begin() + l * r.n_head,
                                                 r.scores[role].begin() + (l + 1) * r.n_head));
        j["roles"][r.roles[role]] = layers; // [layer][query head]
    }
    for (const std::string& role : r.roles) { // each KV head: the mean of its query heads
        const std::vector<double> kv = r.per_kv_head(role);
        nlohmann::ordered_json layers = nlohmann::ordered_json::array();
        for (int64_t l = 0; l < r.n_layer; ++l)
            layers.push_back(std::vector<double>(kv.begin() + l * r.n_head_kv, kv.begin() + (l + 1) * r.n_head_kv));
        j["kv_head_roles"][role] = layers; // [layer][KV head]
    }
    j["layer_preference"] = r.layer_preference;
    std::ofstream out(path, std::ios::binary);
    if (!out || !(out << j.dump(1) << '\n') || !out.flush()) throw Error(path, "json", "cannot be written");
}

// Each probe as JSON: its tokens and text, and where each role should look.
void write_probes(const std::vector<Probe>& probes, const Tokenizer& tok, const std::string& dir) {
    std::filesystem::create_directories(dir);
    for (size_t i = 0; i < probes.size(); ++i) {
        const Probe& p = probes[i];
        const char* kind = p.kind == Probe::Kind::repeat ? "repeat" : p.kind == Probe::Kind::needle ? "needle" : "text";
        nlohmann::ordered_json j{{"name", p.name}, {"kind", kind}, {"tokens", p.tokens},
                                 {"text", valid_utf8(tok.decode(p.tokens, /*skip_special=*/false))}};
        if (p.kind == Probe::Kind::repeat) {
            j["period"] = p.period;
            j["second_copy"] = p.second_copy;
        }
        if (p.kind == Probe::Kind::needle) j["copies"] = p.copies; // [query, source] pairs
        const std::string path = dir + "/" + std::to_string(i) + "-" + kind + ".json";
        std::ofstream out(path, std::ios::binary);
        if (!out || !(out << j.dump(1) << '\n') || !out.flush()) throw Error(path, "probe", "cannot be written");
    }
}

void heads(HeadsArgs args) {
    args.probes.text = probe_text();
    std::unique_ptr<sql::Connection> db;
    if (!args.store.no_db) db = open_session_db(session_db_path(args.store.db), SessionAccess::write); // fails first
    std::unique_ptr<Model> model = load_model(args.model);
    const std::vector<Probe> probes = make_probes(model->tokenizer(), args.probes);
    if (!args.write_probes.empty()) write_probes(probes, model->tokenizer(), args.write_probes);
    const HeadRoles roles = analyze_heads(*model, probes, [&](const Probe& p) {
        std::fprintf(stderr, "\rprobe %-20s (%zu tokens)        ", p.name.c_str(), p.tokens.size());
    });
    std::fprintf(stderr, "\n");
    print_roles(roles, args.top);
    const std::string path = model_path(args.model), hash = model_hash(path), described = args.probes.describe();
    if (db) {
        store_head_roles(*db, hash, described, roles);
        std::fprintf(stderr, "stored in %s under probes \"%s\"\n", db->path().c_str(), described.c_str());
    }
    if (!args.csv.empty()) write_csv(roles, args.csv);
    if (!args.json.empty()) write_json(roles, path, hash, described, args.json);
}

} // namespace

void add_heads_command(CLI::App& app) {
    auto args = std::make_shared<HeadsArgs>();
    CLI::App* cmd = app.add_subcommand("heads", "Score every attention head's role (sink, locality, previous token, "
                                                "entropy, induction, echo, retrieval) and each layer's preference on "
                                                "the probe suite; print the top heads per role and store the scores");
    add_model_options(*cmd, args->model);
    ProbeOptions& p = args->probes;
    cmd->add_option("--seed", p.seed, "seed of the probes (random tokens, pass keys)")->capture_default_str();
    cmd->add_option("--repeats", p.repeats, "repeat probes")->capture_default_str()->check(CLI::Range(0, 100));
    cmd->add_option("--repeat-length", p.repeat_length, "tokens in each copy of the repeat probe")
        ->capture_default_str()->check(CLI::Range(2, 1 << 20));
    cmd->add_option("--needle-length", p.needle_length, "filler tokens of each needle probe")
        ->capture_default_str()->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--needles", p.needles, "needle probes (depths spread evenly)")->capture_default_str()->check(CLI::Range(0, 100));
    cmd->add_option("--multi-key", p.multi_key, "needle probes with four named keys, one asked")
        ->capture_default_str()->check(CLI::Range(0, 100));
    cmd->add_option("--text-length", p.text_length, "tokens of the natural-text probe")
        ->capture_default_str()->check(CLI::Range(33, 1 << 20));
    cmd->add_option("--top", args->top, "heads shown per role")->capture_default_str()->check(CLI::Range(1, 1000));
    cmd->add_option("--csv", args->csv, "also write every score as CSV (layer, head, kv_head, role, score)");
    cmd->add_option("--json", args->json, "also write every score as JSON (roles: [layer][query head]; "
                                          "kv_head_roles: [layer][KV head], the mean of its query heads)");
    cmd->add_option("--write-probes", args->write_probes, "also write the probes as JSON files into this folder");
    add_store_options(*cmd, args->store);
    cmd->callback([args] { heads(*args); });
}

} // namespace kvscope
