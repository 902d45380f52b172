// Multi-rank runtime through mpirun on localhost: each rank's resident weights and the bytes it reads from
// its model files stay within its planned slice, a killed rank stops the whole job promptly and is named,
// and ranks whose model files differ or are missing refuse to start. Runs the UNEVEN_BINARY executable.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "cli_run.h"
#include "test_files.h"

namespace uneven::testing {
namespace {

namespace fs = std::filesystem;
const fs::path kSource = UNEVEN_SOURCE_DIR;

// Under AddressSanitizer (the executable is built the same way as this test) the resident set also holds
// shadow memory and redzones, and the runtime reads /proc files of its own: the kernel's figures say
// nothing about the loader there, so only the loader's own counts are checked.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// A Llama-shaped checkpoint of ~50 MB (BF16) or ~100 MB (F32): big enough that page rounding and the
// runtime's own allocations are small beside each rank's share, small enough to write in a second.
struct TestModel {
  int64_t hidden = 768, heads = 8, kv_heads = 2, intermediate = 2048, layers = 4, vocab = 512;
  uint64_t tensor_count = 0;
  uint64_t file_bytes = 0;
};

std::string random_elements(int64_t count, const std::string& dtype, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> v(static_cast<size_t>(count));
  for (float& x : v) x = normal(rng);
  if (dtype == "F32") return f32_bytes(v);
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
  return u16_bytes(h);
}

TestModel write_model(const std::string& dir, const std::string& dtype) {
  TestModel m;
  fs::create_directories(dir);
  const int64_t hd = m.hidden / m.heads;
  std::mt19937 rng(7);
  SafetensorsWriter w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    w.tensor(name, dtype, shape, random_elements(n, dtype, rng));
  };
  add("model.embed_tokens.weight", {m.vocab, m.hidden});
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {m.hidden});
    add(p + "self_attn.q_proj.weight", {m.heads * hd, m.hidden});
    add(p + "self_attn.k_proj.weight", {m.kv_heads * hd, m.hidden});
    add(p + "self_attn.v_proj.weight", {m.kv_heads * hd, m.hidden});
    add(p + "self_attn.o_proj.weight", {m.hidden, m.heads * hd});
    add(p + "post_attention_layernorm.weight", {m.hidden});
    add(p + "mlp.gate_proj.weight", {m.intermediate, m.hidden});
    add(p + "mlp.up_proj.weight", {m.intermediate, m.hidden});
    add(p + "mlp.down_proj.weight", {m.hidden, m.intermediate});
  }
  add("model.norm.weight", {m.hidden});
  add("lm_head.weight", {m.vocab, m.hidden});
  m.tensor_count = w.tensors.size();
  w.write(dir + "/model.safetensors");
  m.file_bytes = fs::file_size(dir + "/model.safetensors");
  const nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", m.hidden},
      {"intermediate_size", m.intermediate}, {"num_hidden_layers", m.layers}, {"num_attention_heads", m.heads},
      {"num_key_value_heads", m.kv_heads}, {"head_dim", hd}, {"vocab_size", m.vocab}, {"rms_norm_eps", 1e-5},
      {"max_position_embeddings", 4096}, {"rope_theta", 10000.0}, {"tie_word_embeddings", false},
      {"bos_token_id", 510}, {"eos_token_id", 511}, {"torch_dtype", dtype == "F32" ? "float32" : "bfloat16"}};
  write_file(dir + "/config.json", config.dump(2));
  // The tokenizer of a fixture with the same vocabulary size (512).
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(kSource / "tests/data/hf/llama_tied" / f, fs::path(dir) / f, fs::copy_options::overwrite_existing);
  return m;
}

std::string mpirun() { return ::geteuid() == 0 ? "mpirun --allow-run-as-root --oversubscribe" : "mpirun --oversubscribe"; }

TEST(MultiRankRuntime, ResidentWeightsAndBytesReadStayWithinThePlannedSlices) {
  ScratchDir scratch;
  const std::string dir = scratch.file("model");
  const TestModel m = write_model(dir, "BF16");
  // Page rounding: a row slice is mapped from a page boundary to one past its end; a rank maps at most
  // every tensor once.
  const uint64_t slack = 2 * 4096 * m.tensor_count;
  int checked = 0;
  for (const std::string split : {"--ranks 2 --split 3,1", "--ranks 3 --split 5,2,1", "--ranks 2 --split 3,1 --mode pipeline"}) {
    SCOPED_TRACE(split);
    CliOutput out = run_uneven("bench --model " + dir + " " + split +
                               " --prompt-tokens 4 --decode-tokens 2 --skip-bandwidth --threads 1 --json");
    ASSERT_EQ(out.exit_code, 0) << out.text;
    ASSERT_TRUE(out.json.is_object()) << out.text;
    uint64_t planned_total = 0;
    for (const auto& r : out.json["per_rank"]) {
      SCOPED_TRACE("rank " + std::to_string(r["rank"].get<int>()));
      const uint64_t planned = r["planned_weight_bytes"], held = r["weight_bytes"], resident = r["resident_weight_bytes"];
      const uint64_t read = r["file_bytes_read"], os_read = r["os_file_bytes_loaded"];
      planned_total += planned;
      std::printf("%s rank %d: planned %llu, held %llu, resident growth %llu, read (loader) %llu, loaded (kernel) %llu bytes\n",
                  split.c_str(), r["rank"].get<int>(), (unsigned long long)planned, (unsigned long long)held,
                  (unsigned long long)resident, (unsigned long long)read, (unsigned long long)os_read);
      // The plan's count is the loader's count: nothing is loaded that the plan does not know about.
      EXPECT_EQ(held, planned);
      // (c) bytes read, as the loader counts them.
      EXPECT_LE(read, planned);
      if (!kSanitized) {
        // (b) resident weight bytes within 5% of the plan, measured by the kernel (resident set growth).
        EXPECT_LE(double(resident), 1.05 * double(planned));
        EXPECT_GE(double(resident), 0.90 * double(planned)) << "weights were not made resident: the check above is void";
        // (c) bytes read as the kernel counts them: pread bytes + touched pages of mappings.
        EXPECT_LE(os_read, planned + slack);
      }
      ++checked;
    }
    // Only norms (and in tensor mode, KV heads a rank shares) are held twice.
    EXPECT_GE(planned_total, m.file_bytes * 99 / 100);
  }
  EXPECT_EQ(checked, 2 + 3 + 2);
}

// Every process whose command line mentions `marker` and that runs as MPI rank `rank`.
std::vector<pid_t> rank_processes(const std::string& marker, int rank) {
  std::vector<pid_t> pids;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmd(entry.path() / "cmdline"), env(entry.path() / "environ");
    std::string cmdline((std::istreambuf_iterator<char>(cmd)), {}), environ((std::istreambuf_iterator<char>(env)), {});
    if (cmdline.find(marker) == std::string::npos) continue;
    const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank) + '\0';
    if (rank < 0 || environ.find(want) != std::string::npos) pids.push_back(pid_t(std::stoi(name)));
  }
  return pids;
}

TEST(MultiRankRuntime, KillingARankMidGenerationStopsTheOthersNamingIt) {
  ScratchDir scratch;
  const std::string dir = scratch.file("model");
  write_model(dir, "BF16");
  // Thousands of tokens: far longer than the test waits, so the job is surely mid-generation when killed.
  const std::string cmd = std::string(UNEVEN_BINARY) + " generate --model " + dir +
                          " --prompt 'Once upon a time' -n 4000 --ignore-eos --context 4096 --threads 1 --ranks 2 --split 3,1 2>&1";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  const int fd = ::fileno(p);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::string text;
  auto read_some = [&](int timeout_ms) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, timeout_ms) <= 0) return true;
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) text.append(buf, size_t(n));
    return n != 0;  // false at end of output
  };
  // Wait for generated text (the prompt is echoed first, then tokens stream).
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  while (text.size() < std::string("Once upon a time").size() + 40 && clock::now() - start < std::chrono::seconds(60))
    if (!read_some(200)) break;
  std::vector<pid_t> victims = rank_processes(dir, 1);
  ASSERT_EQ(victims.size(), 1u) << "rank 1 not found; output so far:\n" << text;
  ASSERT_EQ(rank_processes(dir, 0).size(), 1u);
  const auto killed_at = clock::now();
  ::kill(victims[0], SIGKILL);
  while (clock::now() - killed_at < std::chrono::seconds(20))
    if (!read_some(200)) break;
  const int status = ::pclose(p);
  const double seconds = std::chrono::duration<double>(clock::now() - killed_at).count();
  std::printf("rank 1 killed after %zu bytes of output; the job ended %.2f s later\n", text.size(), seconds);
  EXPECT_LE(seconds, 10.0) << text;
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0) << text;
  EXPECT_NE(text.find("rank 1"), std::string::npos) << text;
  EXPECT_NE(text.find("signal 9"), std::string::npos) << text;
  // Nothing is left running.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_TRUE(rank_processes(dir, 0).empty()) << "rank 0 still runs";
}

TEST(MultiRankRuntime, RanksWithDifferentOrMissingModelFilesRefuseToStart) {
  ScratchDir scratch;
  const std::string a = scratch.file("a"), b = scratch.file("b");
  write_model(a, "BF16");
  write_model(b, "F32");  // same model, stored in another dtype: another size and header
  const std::string gen = " generate --prompt 'Once upon a time' -n 4 --threads 1";
  auto run2 = [&](const std::string& model0, const std::string& model1) {
    return run_shell(mpirun() + " -np 1 " + UNEVEN_BINARY + gen + " --model " + model0 + " : -np 1 " + UNEVEN_BINARY +
                     gen + " --model " + model1);
  };
  CliOutput same = run2(a, a);
  ASSERT_EQ(same.exit_code, 0) << same.text;

  CliOutput different = run2(a, b);
  EXPECT_NE(different.exit_code, 0) << different.text;
  EXPECT_NE(different.text.find("rank 1"), std::string::npos) << different.text;
  EXPECT_NE(different.text.find("different model files"), std::string::npos) << different.text;
  EXPECT_NE(different.text.find(b), std::string::npos) << different.text;

  CliOutput missing = run2(a, scratch.file("nowhere"));
  EXPECT_NE(missing.exit_code, 0) << missing.text;
  EXPECT_NE(missing.text.find("rank 1"), std::string::npos) << missing.text;
  EXPECT_NE(missing.text.find("nowhere"), std::string::npos) << missing.text;
}

}  // namespace
}  // namespace uneven::testing

namespace uneven::testing {
namespace {

TEST(MultiRankRuntime, PlanFilesAreCheckedAndMemoryBudgetsPlanned) {
  ScratchDir scratch;
  const std::string stories = (kSource / "models/stories260K.gguf").string();
  const std::string gen = "generate --model " + stories + " --prompt 'Once upon a time' -n 32 --json --threads 1";
  CliOutput single = run_uneven(gen);
  ASSERT_EQ(single.exit_code, 0) << single.text;

  // A plan made ahead of time by `uneven plan`, then used by every rank.
  const std::string plan = scratch.file("plan.json");
  ASSERT_EQ(run_uneven("plan --model " + stories + " --nodes 3G,1G --split 3,1 --json " + plan).exit_code, 0);
  CliOutput planned = run_uneven(gen + " --ranks 2 --plan " + plan);
  ASSERT_EQ(planned.exit_code, 0) << planned.text;
  EXPECT_EQ(planned.json["generated_ids"], single.json["generated_ids"]);

  // Edited after planning: the hash no longer matches, and no rank starts.
  nlohmann::json edited = nlohmann::json::parse(std::ifstream(plan));
  edited["layers"][0]["q_heads"] = {0, 4, 8};
  write_file(scratch.file("edited.json"), edited.dump(1));
  CliOutput tampered = run_uneven(gen + " --ranks 2 --plan " + scratch.file("edited.json"));
  EXPECT_EQ(tampered.exit_code, 1) << tampered.text;
  EXPECT_NE(tampered.text.find("plan hash mismatch"), std::string::npos) << tampered.text;

  CliOutput ranks = run_uneven(gen + " --ranks 3 --plan " + plan);
  EXPECT_EQ(ranks.exit_code, 1) << ranks.text;
  EXPECT_NE(ranks.text.find("the plan is for 2 ranks but 3 ranks are running"), std::string::npos) << ranks.text;

  CliOutput other = run_uneven("generate --model " + (kSource / "tests/data/hf/qwen2").string() +
                               " --prompt hi -n 2 --threads 1 --ranks 2 --plan " + plan);
  EXPECT_EQ(other.exit_code, 1) << other.text;
  EXPECT_NE(other.text.find("made for a different model"), std::string::npos) << other.text;

  // --mem budgets simulate uneven nodes: planned like real ones, refused with the shortfall when too small.
  CliOutput budgets = run_uneven(gen + " --ranks 3 --mem 6G,2G,1G");
  ASSERT_EQ(budgets.exit_code, 0) << budgets.text;
  EXPECT_EQ(budgets.json["generated_ids"], single.json["generated_ids"]);
  CliOutput tiny = run_uneven(gen + " --ranks 2 --mem 1M,1M");
  EXPECT_EQ(tiny.exit_code, 1) << tiny.text;
  EXPECT_NE(tiny.text.find("short"), std::string::npos) << tiny.text;

  // Options that do not parse, or do not match the number of ranks, are named.
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"--ranks 2 --split 0,1", "--split entry '0' is not a positive number"},
           {"--ranks 2 --split 3,2,1", "--split lists 3 shares but 2 ranks are running"},
           {"--ranks 2 --mem 1G", "--mem lists 1 budgets but the run has 2 ranks"},
           {"--ranks 2 --bandwidth fast,1", "--bandwidth entry 'fast' is not a positive number of GB/s"}}) {
    CliOutput bad = run_uneven(gen + " " + args);
    EXPECT_EQ(bad.exit_code, 1) << args << "\n" << bad.text;
    EXPECT_NE(bad.text.find(message), std::string::npos) << args << "\n" << bad.text;
  }
}

}  // namespace
}  // namespace uneven::testing
