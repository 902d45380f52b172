// The heartbeat watchdog: peers hear each other, a goodbye is not a loss, and a rank frozen with SIGSTOP in
// the middle of a 3-rank generation ends the whole job within 10 s, named, with nothing left running.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "cli_run.h"
#include "comm/collective.h"
#include "comm/peer_watchdog.h"
#include "serve/server_process.h"

namespace uneven::testing {
namespace {

namespace fs = std::filesystem;

TEST(PeerWatchdog, PeersHearEachOtherAndAGoodbyeIsNotALoss) {
  auto group = make_thread_group(3);
  std::vector<std::unique_ptr<PeerWatchdog>> dogs(3);
  std::atomic<int> lost{0};
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < 3; ++r)
      threads.emplace_back([&, r] {
        dogs[size_t(r)] = std::make_unique<PeerWatchdog>(*group[size_t(r)], PeerWatchdogOptions{0.05, 0.6},
                                                         [&](const LostPeer&) { ++lost; });
      });
    for (auto& t : threads) t.join();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  for (int r = 0; r < 3; ++r) {
    const std::vector<double> silence = dogs[size_t(r)]->silence_s();
    for (int p = 0; p < 3; ++p) {
      if (p == r) continue;
      EXPECT_GE(silence[size_t(p)], 0.0);
      EXPECT_LT(silence[size_t(p)], 0.3) << "rank " << r << " has not heard rank " << p;
    }
  }
  dogs[2].reset();  // leaves with a goodbye
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // twice the timeout
  EXPECT_EQ(dogs[0]->silence_s()[2], -1.0);
  EXPECT_EQ(dogs[1]->silence_s()[2], -1.0);
  EXPECT_EQ(lost.load(), 0);
}

// Process ids of the processes whose parent chain reaches `root`, with their OMPI_COMM_WORLD_RANK (-1: none).
std::vector<std::pair<int, int>> ranks_under(int root) {
  std::map<int, int> parent;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    int ppid = 0;
    char state = 0;
    std::istringstream(line.substr(close + 2)) >> state >> ppid;
    parent[std::stoi(name)] = ppid;
  }
  std::vector<std::pair<int, int>> out;
  for (const auto& [pid, ppid] : parent) {
    int p = ppid;
    for (int hops = 0; p > 1 && p != root && hops < 16; ++hops) p = parent.count(p) ? parent[p] : 0;
    if (p != root) continue;
    std::ifstream env("/proc/" + std::to_string(pid) + "/environ");
    std::string all((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
    const size_t at = all.find("OMPI_COMM_WORLD_RANK=");
    out.emplace_back(pid, at == std::string::npos ? -1 : std::atoi(all.c_str() + at + 21));
  }
  return out;
}

// Running (or stopped) and not a zombie: a process mpirun failed to end.
bool alive(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

TEST(PeerWatchdog, FrozenRankEndsTheJobWithinTenSeconds) {
  const fs::path dir = fs::temp_directory_path() / ("uneven_watchdog_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // Random weights big enough that 3000 tokens on 3 ranks take minutes: the freeze lands mid-generation.
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
    "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 4096,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "float32"})";
  const std::string model = (dir / "m.gguf").string();
  const CliOutput made = run_uneven("quantize --random-weights --config " + (dir / "config.json").string() +
                                    " --type f32 --out " + model);
  ASSERT_EQ(made.exit_code, 0) << made.text;
  ServerProcess job(std::string(UNEVEN_BINARY) + " generate --model " + model +
                        " --prompt 'a b c' -n 3000 --ignore-eos --threads 1 --ranks 3 --peer-timeout 5",
                    0);
  // Wait (bounded) until the three ranks are up and the text has started.
  int frozen = -1;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(60) && frozen < 0 && job.wait_exit(0) == -1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (job.output().size() < 200) continue;  // tokens are streaming
    for (const auto& [pid, rank] : ranks_under(job.pid()))
      if (rank == 2) frozen = pid;
  }
  ASSERT_GT(frozen, 0) << "rank 2 never appeared: " << job.output();
  ASSERT_EQ(::kill(frozen, SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  const int code = job.wait_exit(20);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  const std::string out = job.output();
  EXPECT_NE(code, -1) << "the job still runs 20 s after rank 2 froze";
  EXPECT_NE(code, 0);
  EXPECT_LE(took, 10.0) << out.substr(out.size() > 2000 ? out.size() - 2000 : 0);
  EXPECT_TRUE(out.find("rank 0 lost rank 2") != std::string::npos || out.find("rank 1 lost rank 2") != std::string::npos)
      << out.substr(out.size() > 2000 ? out.size() - 2000 : 0);
  // Nothing of the job is left: mpirun ended the frozen rank too.
  for (int i = 0; i < 50 && alive(frozen); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(alive(frozen)) << "the frozen rank " << frozen << " is still there";
  std::printf("rank 2 frozen: the job ended after %.1f s with exit code %d\n", took, code);
  job.stop(1);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace uneven
