// Head roles of the real default model (issue 8, item 3): it has induction and retrieval
// heads, few retrieval heads (METHODS.md §3 expects under 5%), and scores that keep their
// ranks from one probe seed to another. (test_head_roles_masking: the retrieval heads
// matter for the passkey.)
#include "core/head_roles.h"
#include "core/model.h"
#include "test_util.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <sstream>

namespace kvscope {
namespace {

// Spearman's rank correlation, ties ranked by their mean rank.
double rank_correlation(const std::vector<double>& x, const std::vector<double>& y) {
    const auto ranks = [](const std::vector<double>& v) {
        std::vector<size_t> order(v.size());
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
        std::vector<double> r(v.size());
        for (size_t i = 0; i < order.size();) {
            size_t j = i;
            while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
            for (size_t k = i; k <= j; ++k) r[order[k]] = 0.5 * double(i + j);
            i = j + 1;
        }
        return r;
    };
    const at::Tensor a = at::tensor(ranks(x), at::kDouble), b = at::tensor(ranks(y), at::kDouble);
    const at::Tensor da = a - a.mean(), db = b - b.mean();
    return (da * db).sum().item<double>() / std::sqrt((da * da).sum().item<double>() * (db * db).sum().item<double>());
}

class HeadRolesModel : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        model_ = new Model(Model::load(test::require_default_model()));
        for (uint64_t seed : {0, 1}) {
            ProbeOptions o;
            o.seed = seed;
            std::ifstream in(KVSCOPE_SOURCE_DIR "/assets/prompts/natural_text.txt");
            std::stringstream text;
            text << in.rdbuf();
            o.text = text.str();
            roles_.push_back(analyze_heads(*model_, make_probes(model_->tokenizer(), o)));
        }
    }
    static void TearDownTestSuite() { delete model_; }

    static Model* model_;
    static std::vector<HeadRoles> roles_;
};

Model* HeadRolesModel::model_ = nullptr;
std::vector<HeadRoles> HeadRolesModel::roles_;

TEST_F(HeadRolesModel, HasInductionAndFewRetrievalHeads) {
    const HeadRoles& r = roles_[0];
    const std::vector<double>& induction = r.role("induction");
    const std::vector<double>& retrieval = r.role("retrieval");
    EXPECT_GT(*std::max_element(induction.begin(), induction.end()), 0.5);
    EXPECT_GT(*std::max_element(retrieval.begin(), retrieval.end()), 0.5);
    const double share = double(std::count_if(retrieval.begin(), retrieval.end(), [](double x) { return x > 0.1; })) /
                         double(retrieval.size());
    std::printf("[ info     ] heads with retrieval > 0.1: %.1f%%\n", 100 * share);
    EXPECT_LT(share, 0.10);
}

TEST_F(HeadRolesModel, ScoresKeepTheirRanksAcrossProbeSeeds) {
    for (size_t i = 0; i < roles_[0].roles.size(); ++i) {
        const double rho = rank_correlation(roles_[0].scores[i], roles_[1].scores[i]);
        std::printf("[ info     ] %-15s rank correlation between seeds 0 and 1: %.3f\n", roles_[0].roles[i].c_str(), rho);
        EXPECT_GE(rho, 0.8) << roles_[0].roles[i];
    }
}

} // namespace
} // namespace kvscope
