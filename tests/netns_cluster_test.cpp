// Ranks in separate network namespaces (scripts/netns_cluster.sh): every byte between ranks crosses a veth
// link shaped like a real one, MPI over TCP only, one rank per namespace through mpirun and an rsh agent.
// Checks that the ranks really run in their namespaces; that tensor and pipeline runs of stories260K and the
// shared transformers fixtures generate the 1-rank ids; that MPI's all-reduce of the hidden size stays
// within 2x of a raw TCP round trip on the unshaped link; and that a link set down or a frozen host ends
// the job within 10 s, naming the lost rank, while 1% loss with jitter does not. Skips unless root with
// working `ip netns`. Every cluster is torn down by a guard, whatever fails.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "cli_run.h"
#include "netns_cluster.h"
#include "serve/server_process.h"
#include "test_files.h"

namespace uneven::testing {
namespace {

namespace fs = std::filesystem;
const std::string kGenerate = " generate --model " + kModel +
                              " --prompt 'Once upon a time' -n 24 --ignore-eos --json --threads 1";

// ---- raw TCP between two namespaces (threads that entered them) ----

bool enter_netns(const std::string& ns) {
  const int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::setns(fd, CLONE_NEWNET) == 0;
  ::close(fd);
  return ok;
}

// Waits (bounded) until `fd` is readable or writable.
bool wait_fd(int fd, short events, int timeout_ms = 5000) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & events);
}

bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    if (!wait_fd(fd, POLLOUT)) return false;
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k, n -= size_t(k);
  }
  return true;
}
bool recv_all(int fd, char* p, size_t n) {
  while (n > 0) {
    if (!wait_fd(fd, POLLIN)) return false;
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k, n -= size_t(k);
  }
  return true;
}

struct TcpFigures {
  bool ok = false;
  std::string error;
  std::vector<double> rtt_us;  // sorted
  double bulk_gbit_s = 0;
};

// Echo server in `server_ns` on addr:port; the client in `client_ns` does `reps` round trips of `bytes` each
// way, then sends `bulk_bytes` one way (the server acknowledges with one byte) to see the shaped rate.
TcpFigures measure_tcp(const std::string& server_ns, const std::string& client_ns, const std::string& addr,
                       size_t bytes, int reps, size_t bulk_bytes) {
  TcpFigures fig;
  const uint16_t port = uint16_t(20000 + ::getpid() % 20000);
  std::atomic<int> ready{0};  // 1 listening, -1 failed
  std::thread server([&] {
    if (!enter_netns(server_ns)) return ready.store(-1);
    const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    ::inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
    if (::bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(l, 1) != 0) {
      ::close(l);
      return ready.store(-1);
    }
    ready.store(1);
    if (!wait_fd(l, POLLIN, 10000)) return (void)::close(l);
    const int c = ::accept(l, nullptr, nullptr);
    ::close(l);
    if (c < 0) return;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::vector<char> buf(std::max<size_t>(bytes, 1 << 16));
    for (int i = 0; i < reps + 100; ++i)
      if (!recv_all(c, buf.data(), bytes) || !send_all(c, buf.data(), bytes)) return (void)::close(c);
    for (size_t left = bulk_bytes; left > 0;) {
      const size_t k = std::min(left, buf.size());
      if (!recv_all(c, buf.data(), k)) return (void)::close(c);
      left -= k;
    }
    send_all(c, "k", 1);
    ::close(c);
  });
  std::thread client([&] {
    using clock = std::chrono::steady_clock;
    if (!enter_netns(client_ns)) return (void)(fig.error = "cannot enter " + client_ns);
    for (int i = 0; i < 100 && ready.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (ready.load() != 1) return (void)(fig.error = "server did not start");
    const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{5, 0};
    ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    ::inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
    if (::connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      ::close(c);
      return (void)(fig.error = "connect failed");
    }
    std::vector<char> buf(std::max<size_t>(bytes, 1 << 16), 'x');
    for (int i = 0; i < reps + 100; ++i) {
      const auto t0 = clock::now();
      if (!send_all(c, buf.data(), bytes) || !recv_all(c, buf.data(), bytes)) {
        ::close(c);
        return (void)(fig.error = "round trip failed");
      }
      if (i >= 100) fig.rtt_us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
    }
    const auto t0 = clock::now();
    for (size_t left = bulk_bytes; left > 0;) {
      const size_t k = std::min(left, buf.size());
      if (!send_all(c, buf.data(), k)) return (void)(::close(c), fig.error = "bulk send failed");
      left -= k;
    }
    char ack = 0;
    if (!recv_all(c, &ack, 1)) return (void)(::close(c), fig.error = "bulk ack missing");
    fig.bulk_gbit_s = double(bulk_bytes) * 8 / 1e9 / std::chrono::duration<double>(clock::now() - t0).count();
    ::close(c);
    fig.ok = true;
  });
  client.join();
  server.join();
  std::sort(fig.rtt_us.begin(), fig.rtt_us.end());
  return fig;
}

double percentile(const std::vector<double>& sorted, double p) {
  return sorted.empty() ? 0 : sorted[std::min(sorted.size() - 1, size_t(p * double(sorted.size())))];
}

std::vector<int> generated_ids(const CliOutput& out) {
  if (!out.json.is_object() || !out.json.contains("generated_ids")) return {};
  return out.json["generated_ids"].get<std::vector<int>>();
}

// Runs tensor and pipeline generation (`generate` arguments) with `split` on an n-namespace cluster against
// the 1-rank ids.
void check_generation_matches_one_rank(int n, const std::string& split, const std::string& generate = kGenerate,
                                       const std::string& what = "stories260K") {
  SCOPED_TRACE(what);
  CliOutput single = run_shell("timeout -k 5 120 " + std::string(UNEVEN_BINARY) + generate);
  ASSERT_EQ(single.exit_code, 0) << single.text;
  const std::vector<int> want = generated_ids(single);
  ASSERT_GE(want.size(), 24u) << single.text;

  NetnsCluster cluster(n, "10gbe");
  ASSERT_TRUE(cluster.ok()) << cluster.up_output();

  // The ranks (and mpirun's daemons that started them) run inside the namespaces, one each.
  CliOutput where = cluster.mpirun("sh -c 'echo \"rank $OMPI_COMM_WORLD_RANK in $(ip netns identify $$)\"'", 60);
  ASSERT_EQ(where.exit_code, 0) << where.text;
  for (int k = 0; k < n; ++k)
    EXPECT_NE(where.text.find("rank " + std::to_string(k) + " in " + cluster.ns(k) + "\n"), std::string::npos)
        << where.text;

  for (const std::string mode : {"tensor", "pipeline"}) {
    SCOPED_TRACE(mode + " " + split);
    const auto t0 = std::chrono::steady_clock::now();
    CliOutput out = cluster.mpirun(std::string(UNEVEN_BINARY) + generate + " --split " + split + " --mode " + mode);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_EQ(out.exit_code, 0) << out.text;
    ASSERT_TRUE(out.json.is_object()) << out.text;
    EXPECT_EQ(out.json["ranks"], n) << out.text;
    EXPECT_EQ(generated_ids(out), want) << out.text;
    std::printf("%s, %d namespaces, %s %s: %.2f s in all, decode %.1f tokens/s\n", what.c_str(), n, mode.c_str(),
                split.c_str(), s, out.json.value("decode_tokens_per_second", 0.0));
  }
}

// The shared transformers fixtures (Qwen3-MoE; Qwen3.5-MoE with Gated DeltaNet, gated attention and a
// shared expert) with their reference prompts.
void check_hf_fixtures_match_one_rank(int n, const std::string& split) {
  for (const char* name : {"qwen3_moe", "qwen3_5_moe_text"}) {
    const fs::path dir = fs::path(UNEVEN_SOURCE_DIR) / "../shared/fixtures/hf" / name;
    if (!fs::exists(dir / "reference.json")) GTEST_SKIP() << "no fixture " << dir;
    std::ifstream in(dir / "reference.json");
    std::string prompt = nlohmann::json::parse(in)["prompt"];
    for (char& c : prompt)
      if (c == '\'') c = ' ';
    check_generation_matches_one_rank(n, split, " generate --model " + dir.string() + " --prompt '" + prompt +
                                                    "' -n 24 --ignore-eos --json --threads 1", name);
  }
}

TEST(NetnsCluster, TwoNamespacesHfFixturesMatchOneRank) {
  if (std::string why = cannot_run(); !why.empty()) GTEST_SKIP() << why;
  check_hf_fixtures_match_one_rank(2, "3,1");
}

TEST(NetnsCluster, ThreeNamespacesHfFixturesMatchOneRank) {
  if (std::string why = cannot_run(); !why.empty()) GTEST_SKIP() << why;
  check_hf_fixtures_match_one_rank(3, "5,2,1");
}

TEST(NetnsCluster, TwoNamespacesTensorAndPipelineMatchOneRank) {
  if (std::string why = cannot_run(); !why.empty()) GTEST_SKIP() << why;
  check_generation_matches_one_rank(2, "3,1");
}

TEST(NetnsCluster, ThreeNamespacesUnevenSplitMatchesOneRank) {
  if (std::string why = cannot_run(); !why.empty()) GTEST_SKIP() << why;
  check_generation_matches_one_rank(3, "5,2,1");
}

// Raw TCP against MPI's all-reduce of the hidden size across the same link: unshaped (bounded: within 2x)
// and on the 10gbe profile (through the delay line where it is built; figures only).
TEST(NetnsCluster, RawTcpAgainstMpiAllReduceAcrossNamespaces) {
  if (std::string why = cannot_run(); !why.empty()) GTEST_SKIP() << why;
  // A one-layer model of hidden size 2048 (random weights): all_reduce_hidden_us is then the all-reduce of
  // 2,048 floats (8 KB), the same bytes as the raw round trip.
  ScratchDir scratch;
  write_file(scratch.file("config.json"), R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 2048, "intermediate_size": 512, "num_hidden_layers": 1, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 256, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": true, "bos_token_id": 1,
    "eos_token_id": 2, "torch_dtype": "float32"})");
  const std::string bench = std::string(UNEVEN_BINARY) + " bench --model " + scratch.file("config.json") +
                            " --random-weights --split 1,1 --threads 1 --json --skip-bandwidth --prompt-tokens 4"
                            " --decode-tokens 8";
  for (const std::string profile : {"none", "10gbe"}) {
    SCOPED_TRACE(profile);
    NetnsCluster cluster(2, profile);
    ASSERT_TRUE(cluster.ok()) << cluster.up_output();
    const TcpFigures tcp = measure_tcp(cluster.ns(1), cluster.ns(0), cluster.addr(1), 8192, 2000, size_t(256) << 20);
    ASSERT_TRUE(tcp.ok) << tcp.error;
    const double rtt = percentile(tcp.rtt_us, 0.5);
    std::printf("[%s] raw TCP, 8 KB each way between %s and %s: round trip median %.1f us, p10 %.1f, p90 %.1f, "
                "p99 %.1f; bulk %.2f Gbit/s\n",
                profile.c_str(), cluster.ns(0).c_str(), cluster.ns(1).c_str(), rtt, percentile(tcp.rtt_us, 0.1),
                percentile(tcp.rtt_us, 0.9), percentile(tcp.rtt_us, 0.99), tcp.bulk_gbit_s);
    // The cluster's default (--bind-to none), and mpirun's own default binding, which puts every namespace's
    // rank on core 0 of the same machine.
    for (const std::string binding : {"", "--bind-to core "}) {
      // Unshaped and unbound, the all-reduce must stay within 2x of the raw round trip (the issue saw 4,000 us
      // against ~140 us). Both ranks busy-poll, so a test running beside this one on 2 cores slows them: the
      // best of up to 3 runs counts.
      const bool bounded = profile == "none" && binding.empty();
      CliOutput out;
      double mpi = 0;
      for (int attempt = 0; attempt < (bounded ? 3 : 1); ++attempt) {
        out = cluster.mpirun(binding + bench);
        ASSERT_EQ(out.exit_code, 0) << out.text;
        ASSERT_TRUE(out.json.is_object()) << out.text;
        const double us = out.json["all_reduce_hidden_us"].get<double>();
        mpi = attempt == 0 ? us : std::min(mpi, us);
        if (mpi <= 2.0 * rtt) break;
      }
      if (bounded) EXPECT_LE(mpi, 2.0 * rtt) << "MPI's all-reduce of the hidden size against the raw TCP round trip";
      const auto& r = out.json["per_rank"];
      std::printf("[%s] MPI (ob1/tcp) all-reduce of 2,048 floats%s: %.1f us = %.2fx the raw round trip "
                  "(decode %.1f tokens/s, rank 0 comm %.3f ms/token)\n",
                  profile.c_str(), binding.empty() ? " (--bind-to none)" : " (--bind-to core: both ranks on core 0)",
                  mpi, mpi / rtt, out.json["decode_tokens_per_second"].get<double>(),
                  r.is_array() && !r.empty() ? r[0].value("comm_ms_per_token", 0.0) : 0.0);
    }
  }
}

// ---- link faults: a peer cut off must end the job, named, within 10 s; a lossy link must not ----

// A random-weight Llama (synthetic vocabulary) whose 3000-token generation takes far longer than a fault
// test: the fault always lands mid-generation.
std::string long_generation_model(const ScratchDir& scratch) {
  write_file(scratch.file("config.json"), R"({"model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
    "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 4096,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "float32"})");
  const std::string model = scratch.file("m.gguf");
  const CliOutput made = run_uneven("quantize --random-weights --config " + scratch.file("config.json") +
                                    " --type f32 --out " + model);
  EXPECT_EQ(made.exit_code, 0) << made.text;
  return model;
}

// Starts a long 2-namespace generation, applies `fault` once text streams, and checks that the job ends by
// itself within 10 s with a non-zero exit naming rank 1 as lost, that nothing is left in host 0, and no rank in
// host 1 (a frozen host keeps its stopped processes: thawed, its rank must end itself).
void check_fault_ends_job(const std::string& what, bool frozen, const std::function<void(const NetnsCluster&)>& fault) {
  ScratchDir scratch;
  const std::string model = long_generation_model(scratch);
  NetnsCluster cluster(2, "10gbe");
  ASSERT_TRUE(cluster.ok()) << cluster.up_output();
  ServerProcess job(cluster.mpirun_command(std::string(UNEVEN_BINARY) + " generate --model " + model +
                                               " --prompt 'a b c' -n 3000 --ignore-eos --threads 1 --split 3,1",
                                           180),
                    0);
  const auto start = std::chrono::steady_clock::now();
  while (job.output().size() < 300 && job.wait_exit(0) == -1 && std::chrono::steady_clock::now() - start < std::chrono::seconds(90))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(job.wait_exit(0), -1) << "the generation ended before the fault: " << job.output();
  ASSERT_GE(job.output().size(), 300u) << "no text after 90 s: " << job.output();
  fault(cluster);
  const auto faulted = std::chrono::steady_clock::now();
  const int code = job.wait_exit(30);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - faulted).count();
  const std::string out = job.output(), tail = out.substr(out.size() > 3000 ? out.size() - 3000 : 0);
  EXPECT_NE(code, -1) << what << ": the job still runs 30 s later: " << tail;
  EXPECT_NE(code, 0) << tail;
  EXPECT_LE(took, 10.0) << what << ": " << tail;
  EXPECT_NE(out.find("rank 0 lost rank 1"), std::string::npos) << tail;
  auto left_in = [&](int k) {
    std::string left;
    for (const auto& [pid, name] : cluster.processes(k)) left += " " + name + "(" + std::to_string(pid) + ")";
    return left;
  };
  // Every rank still running must be gone within 10 s of the fault: the one cut off from mpirun ends by its
  // own watchdog, on its own clock, so it may outlive mpirun by a moment.
  while ((!left_in(0).empty() || (!frozen && !left_in(1).empty())) &&
         std::chrono::steady_clock::now() - faulted < std::chrono::seconds(10))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::string left0 = left_in(0), left1 = left_in(1);
  EXPECT_EQ(left0, "") << "left running in host 0";
  if (!frozen) EXPECT_EQ(left1, "") << "left running in host 1";
  std::printf("%s: the job ended %.1f s after the fault, exit code %d; left in host 0:%s, in host 1:%s\n", what.c_str(),
              took, code, left0.empty() ? " nothing" : left0.c_str(), left1.empty() ? " nothing" : left1.c_str());
  if (frozen) {
    // Thawed, the frozen rank finds its peers gone and ends itself (and its daemon) within seconds.
    for (const auto& [pid, name] : cluster.processes(1)) ::kill(pid, SIGCONT);
    const auto thawed = std::chrono::steady_clock::now();
    while (left_in(1).find("uneven") != std::string::npos && std::chrono::steady_clock::now() - thawed < std::chrono::seconds(20))
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const double after = std::chrono::duration<double>(std::chrono::steady_clock::now() - thawed).count();
    for (int i = 0; i < 20 && !left_in(1).empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(left_in(1), "") << "left running in thawed host 1";
    EXPECT_LE(after, 12.0);
    std::printf("thawed host 1: its rank ended after %.1f s; left in host 1:%s\n", after, left_in(1).c_str());
  }
  job.stop(2);
}

TEST(NetnsCluster, LinkDownMidGenerationEndsTheJobNamingTheRank) {
  if (std::string why = cannot_run(); !why.empty()) GTEST_SKIP() << why;
  check_fault_ends_job("host 1's link set down", false, [](const NetnsCluster& c) {
    const CliOutput down = run_shell("ip netns exec " + c.ns(1) + " ip link set eth0 down");
    EXPECT_EQ(down.exit_code, 0) << down.text;
  });
}

TEST(NetnsCluster, FrozenHostMidGenerationEndsTheJobNamingTheRank) {
  if (std::string why = cannot_run(); !why.empty()) GTEST_SKIP() << why;
  check_fault_ends_job("host 1 frozen (SIGSTOP to every process in its namespace)", true, [](const NetnsCluster& c) {
    for (const auto& [pid, name] : c.processes(1)) ::kill(pid, SIGSTOP);
  });
}

// 1% of the packets leaving each host dropped (nftables, numgen random) for a whole generation, over the
// Wi-Fi profile (1.5 ms +- 0.5 ms of jitter each way through the delay line or netem): TCP retransmits, the
// heartbeats ride it out, and the ids are the 1-rank ids.
TEST(NetnsCluster, OnePercentLossAndJitterCompleteWithTheOneRankIds) {
  if (std::string why = cannot_run(); !why.empty()) GTEST_SKIP() << why;
  if (run_shell("command -v nft").exit_code != 0) GTEST_SKIP() << "no nft (scripts/setup_netns_tools.sh installs nftables)";
  const std::string generate = " generate --model " + kModel + " --prompt 'Once upon a time' -n 64 --ignore-eos --json --threads 1";
  CliOutput single = run_shell("timeout -k 5 120 " + std::string(UNEVEN_BINARY) + generate);
  ASSERT_EQ(single.exit_code, 0) << single.text;
  NetnsCluster cluster(2, "wifi");
  ASSERT_TRUE(cluster.ok()) << cluster.up_output();
  for (int k = 0; k < 2; ++k) {
    const std::string in = "ip netns exec " + cluster.ns(k) + " nft ";
    const CliOutput nft = run_shell(in + "add table inet loss && " + in +
                                    "'add chain inet loss out { type filter hook output priority 0; }' && " + in +
                                    "add rule inet loss out oifname eth0 numgen random mod 100 == 0 counter drop");
    ASSERT_EQ(nft.exit_code, 0) << nft.text;
  }
  const auto t0 = std::chrono::steady_clock::now();
  CliOutput out = cluster.mpirun(std::string(UNEVEN_BINARY) + generate + " --split 3,1", 300);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(out.exit_code, 0) << out.text;
  EXPECT_EQ(generated_ids(out), generated_ids(single)) << out.text;
  std::string dropped;
  for (int k = 0; k < 2; ++k)
    dropped += " host " + std::to_string(k) + ": " +
               run_shell("ip netns exec " + cluster.ns(k) + " nft list table inet loss | grep -o 'packets [0-9]*'").text;
  for (char& c : dropped) c = c == '\n' ? ' ' : c;
  std::printf("wifi profile with 1%% loss each way: 64 tokens in %.1f s, ids equal to 1 rank; dropped%s\n", s,
              dropped.c_str());
  EXPECT_NE(dropped.find("packets "), std::string::npos) << dropped;
}

}  // namespace
}  // namespace uneven::testing
