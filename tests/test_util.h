// Helpers the test executables share: the default model, the project's Python, temp dirs.
#pragma once

#include "core/default_model.h"
#include "core/error.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

namespace kvscope::test {

// The default model's path; fails the test (not skips: CI must have it) when missing.
inline std::string require_default_model() {
    std::string path = default_model_path();
    if (access(path.c_str(), R_OK) != 0)
        ADD_FAILURE() << "the default model is missing at " << path << ": run ./setup.sh";
    return path;
}

// The Python with tests/requirements.txt (CTest sets KVSCOPE_PYTHON).
inline std::string python() {
    const char* env = std::getenv("KVSCOPE_PYTHON");
    return env && *env ? env : KVSCOPE_SOURCE_DIR "/.venv/bin/python";
}

// Runs a shell command; returns its exit status.
inline int run(const std::string& command) {
    int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A fresh folder under the build tree for one test's files.
inline std::string scratch_dir(const std::string& name) {
    std::filesystem::path dir = std::filesystem::path(KVSCOPE_BINARY_DIR) / "test-scratch" / name;
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir.string();
}

// Runs `statement` expecting an Error whose message holds each of `words`.
template <class F>
void expect_error(F statement, const std::vector<std::string>& words) {
    try {
        statement();
        ADD_FAILURE() << "no Error thrown";
    } catch (const Error& e) {
        for (const std::string& w : words) EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
    }
}

} // namespace kvscope::test
