// A sweep on a real Slurm cluster (issue 9): tests/slurm/cluster.sh starts a one-node
// cluster on this machine (munge, slurmctld, slurmd, from Debian's slurm-wlm and munge),
// and bench/slurm_sweep.sh submits a 2 x 2 grid (h2o and tova at two budgets, on the tiny
// model of tests/reference/make_method_model.py) as a 4-task job array with a merge job
// after it. One task is cancelled before it runs, so the merge can never start; `status`
// names the missing cell; the same submission again runs only that cell, cancels the
// stranded merge and merges. The merged database must hold exactly the 4 cells, each once,
// and equal the same grid run in one process (tokens and decisions). The daemons are
// stopped by pid at the end. Root only: the daemons run as root and munge.
#include "sessions/queries.h"
#include "sessions/schema.h"
#include "sessions/sweeps.h"
#include "sweep_runs.h"
#include "test_util.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace kvscope {
namespace {

using Clock = std::chrono::steady_clock;

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// A shell command's stdout (stderr goes to the test's log); `status` gets its exit status.
std::string output_of(const std::string& command, int* status = nullptr) {
    std::string out;
    FILE* pipe = popen(command.c_str(), "r");
    if (!pipe) return out;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
    const int rc = pclose(pipe);
    if (status) *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    return out;
}

class Slurm : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (geteuid() != 0) return;
        dir_ = test::scratch_dir("slurm");
        setenv("SLURM_CONF", (dir_ + "/cluster/slurm.conf").c_str(), 1);
        setenv("KVSCOPE", KVSCOPE_EXE, 1);
        model_ok_ = test::run(test::python() + " " KVSCOPE_SOURCE_DIR "/tests/reference/make_method_model.py " + dir_ +
                              " > " + dir_ + "/make_model.log 2>&1") == 0;
        cluster_ok_ = test::run(KVSCOPE_SOURCE_DIR "/tests/slurm/cluster.sh start " + dir_ + "/cluster > " + dir_ +
                                "/cluster.log 2>&1") == 0;
    }
    static void TearDownTestSuite() {
        if (!dir_.empty()) test::run(KVSCOPE_SOURCE_DIR "/tests/slurm/cluster.sh stop " + dir_ + "/cluster");
    }
    void SetUp() override {
        if (geteuid() != 0) GTEST_SKIP() << "the Slurm test starts slurmctld, slurmd and munged, which needs root";
        ASSERT_TRUE(model_ok_) << read_text(dir_ + "/make_model.log");
        ASSERT_TRUE(cluster_ok_) << read_text(dir_ + "/cluster.log") << read_text(dir_ + "/cluster/slurmctld.log");
    }

    static std::string path(const std::string& name) { return dir_ + "/" + name; }

    // The grid's sweep options, for the script and for a local run alike.
    static std::string grid() {
        return "-m " + path("method-model-4l.gguf") + " --tasks " + path("essay.txt") +
               " --methods h2o,tova --budgets 16,24 --length 40 --steps 100 --threads 1 --name grid";
    }

    static std::string submit(const std::string& extra_env = "") {
        int status = 0;
        const std::string out = output_of(extra_env + " " KVSCOPE_SOURCE_DIR "/bench/slurm_sweep.sh submit " +
                                              path("out") + " 4 " + grid(),
                                          &status);
        EXPECT_EQ(status, 0) << out;
        return out;
    }

    // The id of the last submission's job of this kind ("array", "merge"), from out/jobs.
    static std::string job(const std::string& kind) {
        std::istringstream jobs(read_text(path("out/jobs")));
        std::string k, id, last;
        while (jobs >> k >> id)
            if (k == kind) last = id;
        return last;
    }

    static std::string squeue(const std::string& job, const std::string& format) {
        return output_of("squeue -h -j " + job + " -o '" + format + "' 2>/dev/null");
    }

    // Waits until `done` holds, polling every 200 ms, for at most `seconds`.
    template <class F>
    static bool wait_until(F done, double seconds) {
        const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
        while (!done()) {
            if (Clock::now() > deadline) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        return true;
    }

    static std::string dir_;
    static bool model_ok_, cluster_ok_;
};

std::string Slurm::dir_;
bool Slurm::model_ok_ = false, Slurm::cluster_ok_ = false;

TEST_F(Slurm, JobArraySweepResumesAfterACancelAndMergesIntoTheLocalGrid) {
    std::ofstream essay(path("essay.txt"));
    for (int i = 0; i < 40; ++i) essay << "the world is in the hello and the cat is there. ";
    essay.close();

    // Submitted held, so that task 3 is cancelled before it can run.
    submit("SWEEP_SBATCH=--hold");
    const std::string array = job("array"), first_merge = job("merge");
    ASSERT_FALSE(array.empty());
    ASSERT_EQ(test::run("scancel " + array + "_3 && scontrol release " + array), 0);
    ASSERT_TRUE(wait_until([&] { return squeue(array, "%i").empty(); }, 60)) << squeue(array, "%i %T %r");
    // The merge waits for the whole array to succeed: it never can.
    EXPECT_TRUE(wait_until([&] { return squeue(first_merge, "%r") == "DependencyNeverSatisfied\n"; }, 30))
        << squeue(first_merge, "%i %T %r");
    const std::string status = output_of(KVSCOPE_SOURCE_DIR "/bench/slurm_sweep.sh status " + path("out"));
    EXPECT_NE(status.find("sweep grid: 3 of 4 cells done; 1 missing:\n  task=" + path("essay.txt") +
                          " seed=0 instance=0 method=tova budget=24"),
              std::string::npos)
        << status;

    // The same submission again: only the missing cell runs, then the merge.
    const std::string resubmitted = submit();
    const std::string merge = job("merge");
    ASSERT_NE(merge, first_merge);
    EXPECT_TRUE(squeue(first_merge, "%i").empty()) << "the stranded merge job was not cancelled";
    ASSERT_TRUE(wait_until([&] { return squeue(merge, "%i").empty(); }, 90)) << squeue(job("array") + "," + merge, "%i %T %r");
    const std::string merge_log = read_text(path("out/logs/merge-" + merge + ".out"));
    EXPECT_NE(merge_log.find("sweep grid: 4 of 4 cells done"), std::string::npos) << merge_log;
    for (int shard = 0; shard < 3; ++shard) {
        const std::string log = read_text(path("out/logs/sweep-" + job("array") + "_" + std::to_string(shard) + ".out"));
        EXPECT_NE(log.find("0 of its 1 cells to run (1 done before)"), std::string::npos) << log;
    }

    // The merged database: the 4 cells, each once, equal to the grid run in one process.
    ASSERT_EQ(test::run(std::string(KVSCOPE_EXE) + " sweep " + grid() + " --db " + path("local.db") + " > " +
                        path("local.log") + " 2>&1"),
              0)
        << read_text(path("local.log"));
    test::expect_same_cells(path("local.db"), path("out/all.db"), 4, 100);
}

} // namespace
} // namespace kvscope
