#include "core/method_spec.h"

#include "core/error.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace kvscope {

namespace {

struct Parser {
    const std::string& s;
    size_t i = 0;

    [[noreturn]] void fail(const std::string& what) const {
        throw Error("method spec", "column " + std::to_string(i + 1), what + " in \"" + s + "\"");
    }
    void skip_space() {
        while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    }
    bool eat(char c) {
        skip_space();
        if (i < s.size() && s[i] == c) {
            ++i;
            return true;
        }
        return false;
    }
    std::string token(const char* what) { // a name or a value: anything up to a delimiter
        skip_space();
        size_t start = i;
        while (i < s.size() && !std::isspace(static_cast<unsigned char>(s[i])) && std::string("(),=+").find(s[i]) == std::string::npos) ++i;
        if (i == start) fail(std::string("expected ") + what);
        return s.substr(start, i - start);
    }
};

std::string format_value(double v, kvs_param_type type) {
    if (type != KVS_PARAM_FLOAT) return std::to_string(int64_t(v));
    std::ostringstream out;
    out << v;
    // "1e+06" would not parse back: '+' joins methods. Write "1e6".
    std::string text = out.str();
    const size_t e = text.find('e');
    if (e != std::string::npos) {
        size_t digits = e + 1;
        if (digits < text.size() && text[digits] == '+') text.erase(digits, 1);
        else if (digits < text.size() && text[digits] == '-') ++digits;
        while (digits + 1 < text.size() && text[digits] == '0') text.erase(digits, 1);
    }
    return text;
}

} // namespace

std::vector<MethodCall> parse_method_spec(const std::string& spec) {
    Parser p{spec};
    std::vector<MethodCall> calls;
    do {
        MethodCall call{p.token("a method name"), {}};
        if (p.eat('(') && !p.eat(')')) {
            do {
                std::string key = p.token("a parameter name");
                if (!p.eat('=')) p.fail("expected '=' after " + key);
                call.args.emplace_back(key, p.token("a value"));
            } while (p.eat(','));
            if (!p.eat(')')) p.fail("expected ',' or ')'");
        }
        calls.push_back(std::move(call));
    } while (p.eat('+'));
    p.skip_space();
    if (p.i != spec.size()) p.fail("unexpected '" + std::string(1, spec[p.i]) + "'");
    return calls;
}

std::vector<ResolvedMethod> resolve_method_spec(const PluginRegistry& registry, const std::string& spec) {
    std::vector<ResolvedMethod> out;
    for (const MethodCall& call : parse_method_spec(spec)) {
        ResolvedMethod r;
        r.ref = registry.find(call.name);
        if (!r.ref.method) throw Error("method spec", call.name, "no such method (kvscope methods lists them)");
        const kvs_method& m = *r.ref.method;
        for (int32_t p = 0; p < m.n_params; ++p) r.params.push_back(m.params[p].default_value);
        for (const auto& [key, text] : call.args) {
            int32_t p = 0;
            while (p < m.n_params && key != m.params[p].name) ++p;
            const std::string where = call.name + "(" + key + ")";
            if (p == m.n_params) throw Error("method spec", where, "no such parameter");
            const kvs_param_def& def = m.params[p];
            double value;
            if (def.type == KVS_PARAM_BOOL && (text == "true" || text == "false")) {
                value = text == "true";
            } else {
                char* end = nullptr;
                value = std::strtod(text.c_str(), &end);
                if (end == text.c_str() || *end != 0 || !std::isfinite(value))
                    throw Error("method spec", where, "'" + text + "' is not a number");
                if (def.type != KVS_PARAM_FLOAT && value != std::floor(value))
                    throw Error("method spec", where, "'" + text + "' is not an integer");
            }
            if (value < def.min_value || value > def.max_value)
                throw Error("method spec", where,
                            text + " is outside [" + format_value(def.min_value, def.type) + ", " +
                                format_value(def.max_value, def.type) + "]");
            r.params[p] = value;
        }
        r.text = call.name;
        if (m.n_params > 0) {
            r.text += "(";
            for (int32_t p = 0; p < m.n_params; ++p)
                r.text += (p ? "," : "") + std::string(m.params[p].name) + "=" + format_value(r.params[p], m.params[p].type);
            r.text += ")";
        }
        out.push_back(std::move(r));
    }
    return out;
}

// Slots per (layer, KV head): positions are int32 in the store and in decision blobs.
constexpr int64_t kMaxBudgetTokens = 2147483647;

Budget Budget::parse(const std::string& text) {
    std::string t = text;
    bool percent = !t.empty() && t.back() == '%';
    if (percent) t.pop_back();
    char* end = nullptr;
    double v = std::strtod(t.c_str(), &end);
    if (t.empty() || end == t.c_str() || *end != 0 || !std::isfinite(v) || v <= 0)
        throw Error("budget", text, "expected a positive token count (128), fraction (0.25) or percentage (25%)");
    Budget b;
    if (percent) v /= 100;
    b.fraction = percent || v < 1;
    if (b.fraction && v > 1) throw Error("budget", text, "a fraction of the context is at most 100%");
    if (!b.fraction && v != std::floor(v)) throw Error("budget", text, "a token count is a whole number");
    if (!b.fraction && v > kMaxBudgetTokens)
        throw Error("budget", text, "a token count is at most " + std::to_string(kMaxBudgetTokens));
    b.value = v;
    return b;
}

int64_t Budget::tokens(int64_t n_context) const {
    return fraction ? std::max<int64_t>(1, int64_t(std::ceil(value * double(n_context)))) : int64_t(value);
}

std::string Budget::text() const {
    if (!fraction) return std::to_string(int64_t(value));
    std::ostringstream out;
    out << value * 100 << "%";
    return out.str();
}

} // namespace kvscope
