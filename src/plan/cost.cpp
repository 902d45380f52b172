// Bytes held and read per token by one rank, walking the tensors its slices select; size parsing/printing.
#include "plan/cost.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <sstream>

#include "util/error.h"

namespace uneven {

uint64_t WeightFormat::row_bytes(int64_t cols) const {
  if (cols <= 0) return 0;
  if (!quantized) return uint64_t(cols) * uint64_t(bits) / 8;
  // A partial last group still stores a whole scale; splits fall on group boundaries, so the parts of
  // a split row add up to the whole row.
  uint64_t groups = uint64_t((cols + group - 1) / group);
  return (uint64_t(cols) * uint64_t(bits) + 7) / 8 + groups * uint64_t(scale_bytes);
}

uint64_t WeightFormat::vector_bytes(int64_t n) const {
  if (n <= 0) return 0;
  return uint64_t(n) * (quantized ? 2u : uint64_t(bits) / 8);
}

WeightFormat parse_dtype(const std::string& text) {
  WeightFormat f;
  f.name = text;
  if (text == "bf16" || text == "f16") f.bits = 16;
  else if (text == "f32") f.bits = 32;
  else fail("--dtype '{}' is not one of bf16, f16, f32 (use --quant BITS:GROUP for quantized weights)", text);
  return f;
}

WeightFormat parse_quant(const std::string& text) {
  WeightFormat f;
  f.quantized = true;
  long long bits = 0, group = 0, scale = 2;
  char extra = 0;
  int n = std::sscanf(text.c_str(), "%lld:%lld:%lld%c", &bits, &group, &scale, &extra);
  if (n < 2 || n > 3) fail("--quant '{}' is not BITS:GROUP or BITS:GROUP:SCALE_BYTES (e.g. 8:64)", text);
  if (bits < 2 || bits > 8) fail("--quant '{}': bits must be between 2 and 8, got {}", text, bits);
  if (group < 8 || group > 4096) fail("--quant '{}': group size must be between 8 and 4096, got {}", text, group);
  if (scale < 1 || scale > 16) fail("--quant '{}': scale bytes per group must be between 1 and 16, got {}", text, scale);
  f.bits = int(bits);
  f.group = group;
  f.scale_bytes = int(scale);
  f.name = fmt::format("q{}:{}", bits, group);
  if (n == 3) f.name += fmt::format(":{}", scale);
  return f;
}

Usage rank_usage(const ModelConfig& c, const RankSlices& s, const CostModel& cost) {
  const WeightFormat& f = cost.weights;
  const int64_t h = c.hidden_size;
  Usage u;
  auto matrix = [&](int64_t rows, int64_t cols, double read_fraction) {
    if (rows <= 0 || cols <= 0) return;
    uint64_t b = uint64_t(rows) * f.row_bytes(cols);
    u.weights += b;
    u.read += double(b) * read_fraction;
  };
  auto vec = [&](int64_t n) {
    uint64_t b = f.vector_bytes(n);
    u.weights += b;
    u.read += double(b);
  };

  // Tied weights: the embedding matrix doubles as the output head (the loader loads it for either).
  const bool holds_embedding = s.has_embedding || (c.tie_word_embeddings && s.has_output);
  if (holds_embedding) {
    matrix(s.embedding_rows.size(), h, 0.0);
    if (s.has_embedding && !s.embedding_rows.empty()) u.read += double(f.row_bytes(h));  // one row per token
  }
  if (s.has_output) {
    vec(h);  // final norm
    if (c.tie_word_embeddings) u.read += double(uint64_t(s.output_rows.size()) * f.row_bytes(h));
    else matrix(s.output_rows.size(), h, 1.0);
  }

  const double batch = double(cost.batch);
  const double expert_read =
      c.num_experts > 0 ? 1.0 - std::pow(1.0 - double(c.num_experts_per_tok) / double(c.num_experts), batch) : 0.0;
  for (int64_t l = s.layers.begin; l < s.layers.end; ++l) {
    const LayerSlices& ls = s.layer[size_t(l)];
    vec(h);  // input_layernorm
    vec(h);  // post_attention_layernorm
    if (c.layer_types[size_t(l)] == LayerKind::FullAttention) {
      const int64_t hd = c.head_dim, nq = ls.q_heads.size(), nkv = ls.kv_heads.size();
      matrix(nq * hd * (c.attn_output_gate ? 2 : 1), h, 1.0);  // q_proj (with its gate rows)
      matrix(nkv * hd, h, 1.0);                                 // k_proj
      matrix(nkv * hd, h, 1.0);                                 // v_proj
      matrix(h, nq * hd, 1.0);                                  // o_proj: columns by query head
      if (c.attention_bias) {
        vec(nq * hd);
        vec(2 * nkv * hd);
      }
      if (c.qk_norm) {
        vec(hd);
        vec(hd);
      }
      uint64_t kv = uint64_t(2 * nkv * hd) * uint64_t(cost.context) * uint64_t(cost.batch) * uint64_t(cost.kv_bytes);
      u.kv_cache += kv;
      u.read += double(kv);
    } else {
      const int64_t nv = ls.linear_v_heads.size(), nk = ls.linear_k_heads.size();
      const int64_t dk = c.linear_key_head_dim, dv = c.linear_value_head_dim, kernel = c.linear_conv_kernel_dim;
      const int64_t conv_channels = 2 * nk * dk + nv * dv;  // q, k, v channels of the causal conv1d
      matrix(2 * nk * dk + 2 * nv * dv, h, 1.0);  // in_proj q|k|v|z
      matrix(2 * nv, h, 1.0);                     // in_proj b|a (one each per value head)
      vec(conv_channels * kernel);                // conv1d
      vec(nv);                                    // dt_bias
      vec(nv);                                    // A_log
      vec(dv);                                    // gated RMSNorm over each value head (replicated)
      matrix(h, nv * dv, 1.0);                    // out_proj: columns by value head
      uint64_t st = uint64_t(nv * dk * dv + conv_channels * std::max<int64_t>(kernel - 1, 0)) * 4u * uint64_t(cost.batch);
      u.state += st;
      u.read += double(st);
    }
    if (c.is_moe_layer(l)) {
      matrix(c.num_experts, h, 1.0);  // router, replicated
      for (const Range& e : ls.expert_cols) {
        matrix(2 * e.size(), h, expert_read);  // gate_proj, up_proj
        matrix(h, e.size(), expert_read);      // down_proj
      }
      if (c.shared_expert_intermediate_size > 0) {
        matrix(2 * ls.shared_expert_cols.size(), h, 1.0);
        matrix(h, ls.shared_expert_cols.size(), 1.0);
        matrix(1, h, 1.0);  // shared_expert_gate, replicated
      }
    } else {
      matrix(2 * ls.mlp_cols.size(), h, 1.0);  // gate_proj, up_proj
      matrix(h, ls.mlp_cols.size(), 1.0);      // down_proj
    }
  }
  return u;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  double v = bytes;
  while (std::fabs(v) >= 1024.0 && i < 4) {
    v /= 1024.0;
    ++i;
  }
  return i == 0 ? fmt::format("{:.0f} B", v) : fmt::format("{:.2f} {}", v, units[i]);
}

uint64_t parse_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.' || text[i] == '-' || text[i] == '+')) ++i;
  const std::string number = text.substr(0, i);
  std::string unit;
  for (char ch : text.substr(i))
    if (!std::isspace(static_cast<unsigned char>(ch))) unit += char(std::toupper(static_cast<unsigned char>(ch)));
  double value = 0;
  size_t used = 0;
  try {
    value = std::stod(number, &used);
  } catch (const std::exception&) {
    fail("memory size '{}' is not a number with an optional unit (e.g. 128G, 48GiB, 512M)", text);
  }
  if (used != number.size()) fail("memory size '{}' is not a number with an optional unit (e.g. 128G)", text);
  if (value < 0 || !std::isfinite(value)) fail("memory size '{}' must not be negative", text);
  // Binary units throughout: machines are sold in GiB even when labelled GB.
  double scale = 1;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") scale = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") scale = 1024.0 * 1024 * 1024 * 1024;
  else fail("memory size '{}' has unknown unit '{}' (use K, M, G or T)", text, unit);
  double bytes = value * scale;
  if (bytes > 1.0e18) fail("memory size '{}' is implausibly large", text);
  return uint64_t(std::llround(bytes));
}

namespace {

// Entries of a comma-separated list; a trailing comma makes a last, empty entry (which then fails to parse).
std::vector<std::string> list_entries(const std::string& list) {
  std::vector<std::string> entries;
  std::stringstream in(list);
  for (std::string entry; std::getline(in, entry, ',');) entries.push_back(entry);
  if (!list.empty() && list.back() == ',') entries.push_back("");
  return entries;
}

}  // namespace

std::vector<uint64_t> parse_sizes(const std::string& list) {
  std::vector<uint64_t> sizes;
  for (const std::string& entry : list_entries(list)) sizes.push_back(parse_size(entry));
  return sizes;
}

std::vector<double> parse_positive_numbers(const std::string& list, const std::string& what, const std::string& unit) {
  std::vector<double> numbers;
  for (const std::string& entry : list_entries(list)) {
    size_t used = 0;
    double value = 0;
    try {
      value = std::stod(entry, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != entry.size() || !(value > 0) || !std::isfinite(value))
      fail("{} entry '{}' is not a positive number{}", what, entry, unit.empty() ? "" : " of " + unit);
    numbers.push_back(value);
  }
  return numbers;
}

}  // namespace uneven
