// The link in the plan: --link parsing, communication per token by mode, and auto's choice by link
// (tensor parallelism over a fast link, a pipeline over a slow one), and the plan JSON carrying both.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <string>

#include "plan/plan.h"
#include "util/error.h"

namespace uneven {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

ModelConfig config(const std::string& name) {
  return load_hf_config(std::string(UNEVEN_SOURCE_DIR) + "/tests/data/configs/" + name + ".json");
}

// Two nodes of 3:1 memory and bandwidth where a tensor-parallel split and a pipeline both fit.
PlanRequest three_to_one(const LinkSpec& link, PlanMode mode = PlanMode::Auto) {
  PlanRequest r;
  r.nodes = {{"big", uint64_t(96 * kGiB), 400.0}, {"small", uint64_t(32 * kGiB), 133.0}};
  r.cost.weights = parse_dtype("bf16");
  r.cost.context = 4096;
  r.link = link;
  r.mode = mode;
  return r;
}

TEST(PlanLink, ParsesLatencyAndBandwidthWithUnits) {
  LinkSpec a = parse_link("150us,10Gbit");
  EXPECT_DOUBLE_EQ(a.all_reduce_s, 150e-6);
  EXPECT_DOUBLE_EQ(a.bandwidth, 10e9 / 8);
  LinkSpec b = parse_link("1.5ms,300Mbit");
  EXPECT_DOUBLE_EQ(b.all_reduce_s, 1.5e-3);
  EXPECT_DOUBLE_EQ(b.bandwidth, 300e6 / 8);
  LinkSpec c = parse_link("0.00002s,2.5GB/s");
  EXPECT_DOUBLE_EQ(c.all_reduce_s, 20e-6);
  EXPECT_DOUBLE_EQ(c.bandwidth, 2.5e9);
  for (const char* bad : {"150us", "150,10Gbit", "150us,10", "-1us,1Gbit", "us,1Gbit", "1us,1Gbit,2", "1us,fastGbit"})
    EXPECT_THROW(parse_link(bad), Error) << bad;
}

TEST(PlanLink, CommunicationPerTokenByMode) {
  const ModelConfig c = config("llama-3.1-8b");
  const LinkSpec link = parse_link("100us,1Gbit");
  const Plan tp = make_plan(c, three_to_one(link, PlanMode::Tensor));
  EXPECT_EQ(tp.comm.syncs, 2 * c.num_layers + 1);  // two partial sums per layer, one for the embedding
  EXPECT_DOUBLE_EQ(tp.comm.bulk_bytes, double(c.vocab_size) * 4);
  EXPECT_NEAR(tp.comm.seconds, double(2 * c.num_layers + 1) * 100e-6 + double(c.vocab_size) * 4 / (1e9 / 8), 1e-9);
  const Plan pipe = make_plan(c, three_to_one(link, PlanMode::Pipeline));
  EXPECT_EQ(pipe.comm.syncs, 2);  // one hand-off between the two stages, the logits' broadcast
  // The time includes the communication: the slowest rank's reads plus the syncs.
  double slowest = 0;
  for (const NodePlan& n : tp.nodes) slowest = std::max(slowest, n.time_s);
  EXPECT_NEAR(tp.time_s, slowest + tp.comm.seconds, 1e-9);
  // No link: nothing is charged.
  EXPECT_EQ(make_plan(c, three_to_one({}, PlanMode::Tensor)).comm.seconds, 0.0);
}

TEST(PlanLink, AutoPicksTensorOnAFastLinkAndPipelineOnASlowOne) {
  const ModelConfig c = config("llama-3.1-8b");
  const Plan thunderbolt = make_plan(c, three_to_one(parse_link("30us,20Gbit")));
  EXPECT_EQ(thunderbolt.mode, PlanMode::Tensor) << thunderbolt.reasons[0];
  const Plan wifi = make_plan(c, three_to_one(parse_link("1.5ms,300Mbit")));
  EXPECT_EQ(wifi.mode, PlanMode::Pipeline) << wifi.reasons[0];
  EXPECT_NE(wifi.reasons[0].find("over this link"), std::string::npos) << wifi.reasons[0];
  EXPECT_LT(wifi.time_s, make_plan(c, three_to_one(parse_link("1.5ms,300Mbit"), PlanMode::Tensor)).time_s);
}

TEST(PlanLink, JsonCarriesTheLinkAndOldPlansStillLoad) {
  const ModelConfig c = config("llama-3.1-8b");
  const Plan p = make_plan(c, three_to_one(parse_link("75us,1Gbit")));
  const Plan back = plan_from_json_text(plan_to_json_text(p), "test");
  EXPECT_EQ(back.link, p.link);
  EXPECT_EQ(back.comm.syncs, p.comm.syncs);
  EXPECT_DOUBLE_EQ(back.comm.seconds, p.comm.seconds);
  // A plan written before links were modelled (no link/comm members, hash over what it has) loads.
  const Plan old_style = make_plan(c, three_to_one({}));
  nlohmann::json j = plan_to_json(old_style);
  j.erase("link");
  j.erase("comm");
  j.erase("hash");
  j["hash"] = plan_content_hash(j);
  const Plan loaded = plan_from_json(j, "old plan");
  EXPECT_FALSE(loaded.link.modelled());
  EXPECT_EQ(loaded.mode, old_style.mode);
}

}  // namespace
}  // namespace uneven
