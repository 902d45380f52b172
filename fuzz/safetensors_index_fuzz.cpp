// libFuzzer harness: model.safetensors.index.json (TensorFiles::open_safetensors_dir) over two fixed valid shards.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz_common.h"
#include "model/tensor_file.h"

namespace {
namespace fs = std::filesystem;

// One directory per process: two real shards (tensors a, b in the first; c in the second) and the fuzzed index.
std::string g_dir;

void write_shard(const fs::path& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char pattern[] = "/tmp/uneven_fuzz_index_XXXXXX";
  if (!mkdtemp(pattern)) __builtin_trap();
  g_dir = pattern;
  write_shard(fs::path(g_dir) / "model-00001-of-00002.safetensors",
              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]}})",
              16);
  write_shard(fs::path(g_dir) / "model-00002-of-00002.safetensors",
              R"({"__metadata__":{"format":"pt"},"c":{"dtype":"F16","shape":[3],"data_offsets":[0,6]}})", 6);
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(g_dir, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream out(fs::path(g_dir) / "model.safetensors.index.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  }
  fuzz::expect_error_or_success("safetensors index", [&] {
    const uneven::TensorFiles tf = uneven::TensorFiles::open_safetensors_dir(g_dir);
    for (const uneven::TensorInfo& t : tf.tensors())
      if (tf.read_all(t).size() != t.nbytes) __builtin_trap();
  });
  return 0;
}
