// GPU ranks in a cluster through mpirun on this host: a GPU rank beside a CPU rank (MPI, partial sums
// staged through host memory), and two GPU ranks over NCCL where two GPUs are present; greedy ids equal
// the 1-rank CPU run. Skips without a GPU (NCCL: without two).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "cli_run.h"
#include "compute/cuda/cuda_backend.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;

// The executable under test (compiled in; $UNEVEN_BINARY_PATH when the tests run from a copy elsewhere).
testing::CliOutput run_uneven(const std::string& args) {
  const char* env = std::getenv("UNEVEN_BINARY_PATH");
  return testing::run_shell(std::string(env && *env ? env : UNEVEN_BINARY) + " " + args);
}

fs::path source_dir() {
  const char* env = std::getenv("UNEVEN_SOURCE_DIR");
  return env && *env ? fs::path(env) : fs::path(UNEVEN_SOURCE_DIR);
}
fs::path shared_dir() {
  const char* env = std::getenv("UNEVEN_SHARED");
  return env && *env ? fs::path(env) : source_dir() / "../shared";
}

std::vector<int> ids_of(const testing::CliOutput& out) {
  EXPECT_EQ(out.exit_code, 0) << out.text;
  if (!out.json.is_object()) {
    ADD_FAILURE() << "no JSON result: " << out.text;
    return {};
  }
  return out.json["generated_ids"].get<std::vector<int>>();
}

void check_cluster(const std::string& model, const std::string& devices, const std::string& split) {
  SCOPED_TRACE(model + " --device " + devices + " " + split);
  const std::string gen = "generate --model " + model + " --prompt 'Once upon a time' -n 24 --ignore-eos --json --threads 1";
  const std::vector<int> want = ids_of(run_uneven(gen + " --device cpu"));
  ASSERT_EQ(want.size(), 24u);
  const std::vector<int> got = ids_of(run_uneven(gen + " --device " + devices + " " + split));
  EXPECT_EQ(got, want);
}

TEST(GpuCluster, GpuRankBesideCpuRankMatchesOneRank) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const std::string stories = (shared_dir() / "models/stories260K/stories260K.gguf").string();
  const std::string moe = (shared_dir() / "fixtures/hf/qwen3_moe").string();
  for (const std::string& model : {stories, moe}) {
    check_cluster(model, "cuda,cpu", "--ranks 2 --split 3,1");
    check_cluster(model, "cpu,cuda", "--ranks 2 --split 3,1 --mode pipeline");
  }
  check_cluster(stories, "cuda,cpu,cpu", "--ranks 3 --split 5,2,1");
}

// Without --bandwidth, a GPU rank beside a CPU rank is planned by the bandwidths each measured at start
// (the CPU's streaming read, the GPU's device copy): on the Llama-3.2-1B shape the GPU takes
// nearly all the weights, where memory alone (or --mode equal) gives the CPU an equal share. On a model
// so small that even its replicated part would make the CPU the slowest, the planner leaves the CPU out
// and says why. (Ids with a GPU rank beside a CPU rank: GpuRankBesideCpuRankMatchesOneRank.)
TEST(GpuCluster, GpuBesideCpuIsSplitByMeasuredBandwidth) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const std::string bench = "bench --model " + (source_dir() / "configs/llama-3.2-1b.json").string() +
                            " --random-weights --weight-dtype bf16 --device cuda,cpu --ranks 2 --threads 2 "
                            "--decode-tokens 4 --skip-bandwidth --json";
  auto weights_of = [](const testing::CliOutput& out, int rank) {
    return out.json["per_rank"][size_t(rank)]["weight_bytes"].get<double>();
  };
  const testing::CliOutput speed = run_uneven(bench + " --mode tensor");
  ASSERT_EQ(speed.exit_code, 0) << speed.text;
  ASSERT_TRUE(speed.json.is_object() && speed.json["per_rank"].size() == 2) << speed.text;
  const double gpu_gbps = speed.json["per_rank"][0]["planned_bandwidth_gb_per_second"];
  const double cpu_gbps = speed.json["per_rank"][1]["planned_bandwidth_gb_per_second"];
  EXPECT_GT(cpu_gbps, 0.0);
  EXPECT_GT(gpu_gbps, 10 * cpu_gbps);
  EXPECT_GT(weights_of(speed, 0), 20 * weights_of(speed, 1)) << speed.text;
  EXPECT_GT(speed.json["predicted_ms_per_token"].get<double>(), 0.0);

  const testing::CliOutput equal = run_uneven(bench + " --mode equal");
  ASSERT_EQ(equal.exit_code, 0) << equal.text;
  EXPECT_LT(weights_of(equal, 0), 1.2 * weights_of(equal, 1)) << equal.text;
  EXPECT_GT(speed.json["decode_tokens_per_second"].get<double>(), equal.json["decode_tokens_per_second"].get<double>());

  const testing::CliOutput tiny = run_uneven("generate --model " + (shared_dir() / "fixtures/hf/qwen3_moe").string() +
                                             " --prompt 'Once' -n 4 --device cuda,cpu --ranks 2 --mode tensor");
  EXPECT_NE(tiny.exit_code, 0) << tiny.text;
  EXPECT_NE(tiny.text.find("too slow to help"), std::string::npos) << tiny.text;
}

TEST(GpuCluster, TwoGpuRanksOverNcclMatchOneRank) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs two CUDA devices, " << cuda_device_count() << " here";
  const std::string stories = (shared_dir() / "models/stories260K/stories260K.gguf").string();
  check_cluster(stories, "cuda", "--ranks 2 --split 3,1");
  check_cluster((shared_dir() / "fixtures/hf/qwen3_moe").string(), "cuda", "--ranks 2 --split 3,1");
  if (cuda_device_count() >= 3) check_cluster(stories, "cuda", "--ranks 3 --split 5,2,1");
}

}  // namespace
}  // namespace uneven
