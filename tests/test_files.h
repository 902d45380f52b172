// Test-only writers of small GGUF and safetensors files, a scratch directory, and an error-text matcher.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/tensor_file.h"
#include "util/error.h"

namespace uneven::testing {

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (std::string("uneven_") + (info ? info->name() : "test") + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

// Little-endian byte building.
struct Bytes {
  std::string b;
  template <typename T> Bytes& put(T v) {
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    b.append(raw, sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
    return *this;
  }
};

// Raw little-endian element bytes for F32 values, and their F16/BF16 encodings.
inline std::string f32_bytes(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }
inline std::string u16_bytes(const std::vector<uint16_t>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 2); }

// A GGUF writer: metadata entries are stored pre-encoded (value type + payload) so tests can add any
// type, including malformed ones. Tensor data offsets are laid out aligned unless overridden.
struct GgufTensor {
  std::string name;
  std::vector<uint64_t> ne;  // GGML order: innermost first
  uint32_t type = 0;         // GGML type id
  std::string data;
  std::optional<uint64_t> offset;  // relative to the data section; default: next aligned position
};

struct GgufWriter {
  uint32_t version = 3;
  uint64_t alignment = 32;  // used for layout; add a general.alignment entry to change what readers see
  std::vector<std::pair<std::string, std::string>> kvs;  // key -> (u32 type + payload)
  std::vector<GgufTensor> tensors;

  GgufWriter& kv_raw(const std::string& key, uint32_t type, const std::string& payload) {
    kvs.emplace_back(key, Bytes().put(type).b + payload);
    return *this;
  }
  GgufWriter& kv_u32(const std::string& key, uint32_t v) { return kv_raw(key, 4, Bytes().put(v).b); }
  GgufWriter& kv_f32(const std::string& key, float v) { return kv_raw(key, 6, Bytes().put(v).b); }
  GgufWriter& kv_str(const std::string& key, const std::string& v) { return kv_raw(key, 8, Bytes().str(v).b); }
  GgufWriter& kv_strs(const std::string& key, const std::vector<std::string>& v) {
    Bytes p;
    p.put<uint32_t>(8).put<uint64_t>(v.size());
    for (const auto& s : v) p.str(s);
    return kv_raw(key, 9, p.b);
  }
  GgufWriter& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, std::string data) {
    tensors.push_back({name, std::move(ne), type, std::move(data), std::nullopt});
    return *this;
  }

  std::string bytes() const {
    Bytes h;
    h.b = "GGUF";
    h.put(version).put<uint64_t>(tensors.size()).put<uint64_t>(kvs.size());
    for (const auto& [key, value] : kvs) {
      h.str(key);
      h.b += value;
    }
    std::vector<uint64_t> offsets;
    uint64_t at = 0;
    for (const auto& t : tensors) {
      offsets.push_back(t.offset ? *t.offset : at);
      at = (offsets.back() + t.data.size() + alignment - 1) / alignment * alignment;
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      h.str(tensors[i].name).put<uint32_t>(uint32_t(tensors[i].ne.size()));
      for (uint64_t n : tensors[i].ne) h.put(n);
      h.put(tensors[i].type).put(offsets[i]);
    }
    h.b.resize((h.b.size() + alignment - 1) / alignment * alignment, '\0');
    const size_t data_start = h.b.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (offsets[i] > (1u << 20)) continue;  // a deliberately absurd offset: no data to place
      if (h.b.size() < data_start + offsets[i]) h.b.resize(data_start + offsets[i], '\0');
      h.b.replace(data_start + offsets[i], std::min(tensors[i].data.size(), h.b.size() - data_start - offsets[i]), tensors[i].data);
    }
    return h.b;
  }
  void write(const std::string& path) const { write_file(path, bytes()); }
};

// A safetensors writer: the header JSON is built from the tensors (offsets packed in order) and can be
// edited before writing to make malformed files.
struct SafetensorsTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string data;
};

struct SafetensorsWriter {
  std::vector<SafetensorsTensor> tensors;

  SafetensorsWriter& tensor(const std::string& name, const std::string& dtype, std::vector<int64_t> shape, std::string data) {
    tensors.push_back({name, dtype, std::move(shape), std::move(data)});
    return *this;
  }
  nlohmann::json header() const {
    nlohmann::json h = {{"__metadata__", {{"format", "pt"}}}};
    uint64_t at = 0;
    for (const auto& t : tensors) {
      h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + t.data.size()}}};
      at += t.data.size();
    }
    return h;
  }
  std::string data() const {
    std::string d;
    for (const auto& t : tensors) d += t.data;
    return d;
  }
  // The header text is padded with spaces to a multiple of 8 bytes, as the reference writer does.
  static std::string file_bytes(std::string header_text, const std::string& data) {
    header_text.resize((header_text.size() + 7) / 8 * 8, ' ');
    return Bytes().put<uint64_t>(header_text.size()).b + header_text + data;
  }
  std::string bytes() const { return file_bytes(header().dump(), data()); }
  void write(const std::string& path) const { write_file(path, bytes()); }
};

// Runs `f`, expecting an uneven::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an uneven::Error containing \"" << parts.front() << "\", but nothing was thrown";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& p : parts) EXPECT_NE(message.find(p), std::string::npos) << "\"" << p << "\" not in: " << message;
  }
}

// Corrupts a valid file in many deterministic ways (every byte position xor-ed with three masks, eight
// bytes of 0xff written at every position, every truncation) and opens each variant with `open`. Each must
// either open, after which every tensor reads without error, or throw uneven::Error; any other exception
// fails the test (a crash fails it too). Returns how many variants opened.
template <typename Open>
int corrupt_and_open(const std::string& good, const std::string& path, Open open) {
  int opened = 0, rejected = 0;
  auto attempt = [&](const std::string& bytes, const std::string& how) {
    write_file(path, bytes);
    try {
      TensorFiles files = open(path);
      for (const TensorInfo& t : files.tensors()) {
        TensorBytes all = files.read_all(t);
        EXPECT_EQ(all.size(), t.nbytes) << how;
        if (t.shape.size() == 2) {
          EXPECT_EQ(files.read_cols(t, 0, t.shape[1]).size(), t.nbytes) << how;
        }
      }
      ++opened;
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << how << ": threw a non-uneven exception: " << e.what();
    }
  };
  for (size_t pos = 0; pos < good.size(); ++pos) {
    for (uint8_t mask : {uint8_t(0xff), uint8_t(0x01), uint8_t(0x80)}) {
      std::string bad = good;
      bad[pos] = char(uint8_t(bad[pos]) ^ mask);
      attempt(bad, "byte " + std::to_string(pos) + " xor " + std::to_string(mask));
    }
    std::string bad = good;
    for (size_t i = pos; i < std::min(good.size(), pos + 8); ++i) bad[i] = char(0xff);
    attempt(bad, "0xff x 8 at byte " + std::to_string(pos));
    attempt(good.substr(0, pos), "truncated to " + std::to_string(pos) + " bytes");
  }
  EXPECT_GT(rejected, 0);
  return opened;
}

}  // namespace uneven::testing
