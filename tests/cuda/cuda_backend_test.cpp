// The CUDA backend against the CPU backend (and, for matmul, a double-precision reference): every op on
// random inputs. Every test skips when the process sees no CUDA device.
//
// Tolerances (fp32 math on both sides, different summation orders):
//  - matmul: |y - ref| <= 1e-5 * sum |w x| against the double-precision dot of the exactly dequantized
//    weights with fp32 x; against the CPU backend the same for F32/F16/BF16/MLX, and 3e-3 for GGML
//    quantized types (the CPU rounds activations to int8 codes for those, the GPU does not);
//  - element-wise ops, embed: 1e-5 of the largest reference magnitude (plus 1e-5 relative);
//  - attention and Gated DeltaNet (online softmax / recurrent vs chunked form): 3e-5 of the largest
//    reference magnitude of each compared buffer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "compute/backend.h"
#include "compute/cuda/cuda_backend.h"
#include "compute/thread_pool.h"
#include "quant/blocks.h"
#include "quant/quantize.h"
#include "util/error.h"

namespace uneven {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"

constexpr double kElementTol = 1e-5;
constexpr double kMatmulTol = 1e-5;
constexpr double kQuantCpuTol = 3e-3;
constexpr double kAttnTol = 3e-5;

ThreadPool& pool() {
  static ThreadPool p(4);
  return p;
}

std::vector<float> random_vector(std::mt19937& rng, int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// The same data in a buffer of each backend.
struct Twin {
  Buffer cpu, gpu;
  int64_t n = 0;
  float* c() const { return cpu.data(); }
  float* g() const { return gpu.data(); }
};
Twin twin(Backend& cpu, Backend& gpu, const std::vector<float>& host) {
  Twin t{Buffer(cpu, int64_t(host.size())), Buffer(gpu, int64_t(host.size())), int64_t(host.size())};
  cpu.upload(t.c(), host.data(), t.n);
  gpu.upload(t.g(), host.data(), t.n);
  return t;
}
std::vector<float> fetch(Backend& b, const float* p, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  b.download(v.data(), p, n);
  return v;
}

// |got - want| <= tol * (max |want| + |want|) element-wise.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double peak = 0;
  for (float w : want) peak = std::max(peak, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - double(want[i]));
    ASSERT_LE(err, tol * (peak + std::fabs(double(want[i]))) + 1e-30)
        << what << " [" << i << "] of " << got.size() << ": gpu " << got[i] << ", cpu " << want[i];
  }
}
void expect_twin(Backend& cpu, Backend& gpu, const Twin& t, double tol, const std::string& what) {
  expect_close(fetch(gpu, t.g(), t.n), fetch(cpu, t.c(), t.n), tol, what);
}

// A weight matrix in host memory in any type, from random values.
struct HostWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // exactly what the bytes decode to
  kernels::WeightView view;
};
HostWeight make_weight(std::mt19937& rng, const WeightType& t, int64_t rows, int64_t cols) {
  HostWeight w;
  const std::vector<float> src = random_vector(rng, rows * cols);
  w.bytes.resize(size_t(rows) * t.bytes(cols));
  if (t.dtype == DType::F32) {
    std::memcpy(w.bytes.data(), src.data(), w.bytes.size());
  } else if (t.dtype == DType::F16 || t.dtype == DType::BF16) {
    for (size_t i = 0; i < src.size(); ++i) {
      const uint16_t h = t.dtype == DType::F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
      std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    }
  } else {
    quant::quantize_row(t, src.data(), rows * cols, w.bytes.data());
  }
  w.values.resize(src.size());
  quant::dequantize_row_ref(t, w.bytes.data(), rows * cols, w.values.data());
  w.view = kernels::WeightView{w.bytes.data(), t.dtype, rows, cols, t.group, t.scale};
  return w;
}

std::vector<WeightType> all_types() {
  return {WeightType(DType::F32),  WeightType(DType::BF16), WeightType(DType::F16),  WeightType(DType::Q8_0),
          WeightType(DType::Q4_K), WeightType(DType::Q6_K), WeightType(DType::MLX4, 64, DType::BF16),
          WeightType(DType::MLX8, 64, DType::BF16), WeightType(DType::Q4_0), WeightType(DType::Q4_1),
          WeightType(DType::Q5_0), WeightType(DType::Q5_1), WeightType(DType::Q5_K),
          WeightType(DType::MLX4, 32, DType::F16), WeightType(DType::MLX8, 128, DType::F32)};
}

TEST(CudaBackend, NameAndDeviceCount) {
  SKIP_WITHOUT_GPU();
  auto gpu = make_cuda_backend({}, 0);
  EXPECT_EQ(gpu->name().rfind("cuda:0 (", 0), 0u) << gpu->name();
  EXPECT_TRUE(gpu->device_memory());
}

TEST(CudaBackend, MatmulEveryType) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  for (const WeightType& t : all_types()) {
    SCOPED_TRACE(t.name());
    // Odd rows, a 768-column shape and a ~2.5 MB matrix.
    const int64_t big_rows = std::min<int64_t>(4096, int64_t((uint64_t(5) << 19) / t.bytes(2048)));
    std::vector<HostWeight> ws;
    ws.push_back(make_weight(rng, t, 67, 512));
    ws.push_back(make_weight(rng, t, 256, 768));
    ws.push_back(make_weight(rng, t, big_rows, 2048));
    ResidentWeights res;
    for (const HostWeight& w : ws) res.matrices.push_back(w.view);
    auto gpu = make_cuda_backend(res, 0);
    auto cpu = make_cpu_backend(pool());
    for (const HostWeight& w : ws) {
      // A view of rows [3, rows) of the resident matrix as well as the whole one.
      kernels::WeightView tail = w.view;
      tail.data = w.bytes.data() + 3 * w.view.row_bytes();
      tail.rows -= 3;
      for (const kernels::WeightView& v : {w.view, tail}) {
        const int64_t skip = v.data == w.view.data ? 0 : 3;
        for (int64_t batch : {1, 3, 37}) {
          SCOPED_TRACE(testing::Message() << v.rows << "x" << v.cols << " batch " << batch);
          const std::vector<float> x = random_vector(rng, batch * v.cols, -2.0f, 2.0f);
          Twin xt = twin(*cpu, *gpu, x);
          Twin yt = twin(*cpu, *gpu, std::vector<float>(size_t(batch * v.rows), NAN));  // overwritten
          gpu->matmul(v, xt.g(), batch, yt.g());
          cpu->matmul(v, xt.c(), batch, yt.c());
          const std::vector<float> yg = fetch(*gpu, yt.g(), yt.n), yc = fetch(*cpu, yt.c(), yt.n);
          const double cpu_tol = is_quantized(t.dtype) && !is_mlx(t.dtype) ? kQuantCpuTol : kMatmulTol;
          for (int64_t b = 0; b < batch; ++b)
            for (int64_t r = 0; r < v.rows; ++r) {
              double ref = 0, mag = 0;
              const float* wr = w.values.data() + (r + skip) * v.cols;
              for (int64_t k = 0; k < v.cols; ++k) {
                const double p = double(wr[k]) * double(x[size_t(b * v.cols + k)]);
                ref += p;
                mag += std::fabs(p);
              }
              const size_t i = size_t(b * v.rows + r);
              ASSERT_LE(std::fabs(yg[i] - ref), kMatmulTol * mag) << "row " << r << " input " << b << ": gpu " << yg[i]
                                                                  << ", reference " << ref;
              ASSERT_LE(std::fabs(yg[i] - yc[i]), cpu_tol * mag) << "row " << r << " input " << b << ": gpu "
                                                                 << yg[i] << ", cpu " << yc[i];
            }
        }
      }
    }
  }
}

TEST(CudaBackend, Embed) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (const WeightType& t : all_types()) {
    SCOPED_TRACE(t.name());
    HostWeight table = make_weight(rng, t, 50, 512);
    ResidentWeights res;
    res.matrices.push_back(table.view);
    auto gpu = make_cuda_backend(res, 0);
    auto cpu = make_cpu_backend(pool());
    // Token ids travel as floats in a buffer; rows [100, 150) are here, the others stay as they are.
    Twin tokens = twin(*cpu, *gpu, std::vector<float>{100, 149, 3, 120, 99, 150, 125});
    Twin x = twin(*cpu, *gpu, random_vector(rng, tokens.n * 512));
    gpu->embed(table.view, 100, tokens.g(), tokens.n, x.g());
    cpu->embed(table.view, 100, tokens.c(), tokens.n, x.c());
    expect_twin(*cpu, *gpu, x, kElementTol, "embed");
  }
}

TEST(CudaBackend, ElementwiseOps) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  const int64_t n = 1000, rows = 5;
  const std::vector<float> norm_w = random_vector(rng, n, 0.5f, 1.5f), bias = random_vector(rng, n);
  ResidentWeights res;
  res.vectors = {&norm_w, &bias};
  auto gpu = make_cuda_backend(res, 0);
  auto cpu = make_cpu_backend(pool());

  Twin x = twin(*cpu, *gpu, random_vector(rng, rows * n, -3.0f, 3.0f));
  Twin out = twin(*cpu, *gpu, std::vector<float>(size_t(rows * n), 0.0f));
  gpu->rmsnorm(x.g(), norm_w, 1e-6f, n, rows, out.g());
  cpu->rmsnorm(x.c(), norm_w, 1e-6f, n, rows, out.c());
  expect_twin(*cpu, *gpu, out, kElementTol, "rmsnorm");
  gpu->rmsnorm(x.g(), norm_w, 1e-5f, n, rows, x.g());  // in place
  cpu->rmsnorm(x.c(), norm_w, 1e-5f, n, rows, x.c());
  expect_twin(*cpu, *gpu, x, kElementTol, "rmsnorm in place");

  gpu->add(out.g(), x.g(), rows * n);
  cpu->add(out.c(), x.c(), rows * n);
  expect_twin(*cpu, *gpu, out, kElementTol, "add");
  gpu->add_bias(out.g(), bias, rows);
  cpu->add_bias(out.c(), bias, rows);
  expect_twin(*cpu, *gpu, out, kElementTol, "add_bias");

  Twin gu = twin(*cpu, *gpu, random_vector(rng, rows * 2 * n, -10.0f, 10.0f));
  Twin act = twin(*cpu, *gpu, std::vector<float>(size_t(rows * n), 0.0f));
  gpu->swiglu(gu.g(), n, rows, act.g());
  cpu->swiglu(gu.c(), n, rows, act.c());
  expect_twin(*cpu, *gpu, act, kElementTol, "swiglu");

  const std::vector<int64_t> pick = {4, 0, 2, 2, 1, 3};
  // From fresh rows (x went through the in-place norm, whose last bits differ): a gather is an exact copy.
  Twin source = twin(*cpu, *gpu, random_vector(rng, rows * n, -3.0f, 3.0f));
  Twin gathered = twin(*cpu, *gpu, std::vector<float>(pick.size() * size_t(n), 0.0f));
  gpu->gather_rows(source.g(), pick.data(), int64_t(pick.size()), n, gathered.g());
  cpu->gather_rows(source.c(), pick.data(), int64_t(pick.size()), n, gathered.c());
  expect_twin(*cpu, *gpu, gathered, 0.0, "gather_rows");

  const std::vector<float> weights = {0.5f, -1.0f, 2.0f, 0.25f, 1.5f, -0.75f};  // row 2 twice
  gpu->scatter_add_rows(gathered.g(), pick.data(), weights.data(), int64_t(pick.size()), n, out.g());
  cpu->scatter_add_rows(gathered.c(), pick.data(), weights.data(), int64_t(pick.size()), n, out.c());
  expect_twin(*cpu, *gpu, out, kElementTol, "scatter_add_rows");

  Twin gates = twin(*cpu, *gpu, random_vector(rng, rows, -4.0f, 4.0f));
  gpu->sigmoid_scale_add(x.g(), gates.g(), rows, n, out.g());
  cpu->sigmoid_scale_add(x.c(), gates.c(), rows, n, out.c());
  expect_twin(*cpu, *gpu, out, kElementTol, "sigmoid_scale_add");

  gpu->fill_zero(out.g(), rows * n);
  for (float v : fetch(*gpu, out.g(), rows * n)) ASSERT_EQ(v, 0.0f);
}

struct AttnCase {
  const char* name;
  bool gated, qk_norm, interleaved;
  int64_t head_dim, rope_half;
};

class CudaAttention : public testing::TestWithParam<AttnCase> {};

TEST_P(CudaAttention, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const AttnCase& c = GetParam();
  std::mt19937 rng(5);
  // Local query heads 2..5 of 8, GQA group 2: they use global KV heads 1 and 2 (local 0 and 1).
  const int64_t hd = c.head_dim, nq = 4, nkv = 2, context = 512, half = c.rope_half;
  const std::vector<float> q_norm = random_vector(rng, hd, 0.5f, 1.5f), k_norm = random_vector(rng, hd, 0.5f, 1.5f);
  const std::vector<float> none;
  ResidentWeights res;
  res.vectors = {&q_norm, &k_norm};
  auto gpu = make_cuda_backend(res, 0);
  auto cpu = make_cpu_backend(pool());
  // Random cache contents: positions not yet written still take part in later decodes' checks.
  Twin kc = twin(*cpu, *gpu, random_vector(rng, nkv * context * hd));
  Twin vc = twin(*cpu, *gpu, random_vector(rng, nkv * context * hd));
  Twin scores = twin(*cpu, *gpu, std::vector<float>(size_t(nq * context), 0.0f));
  // (count, position): prefill at 0, a batch at a nonzero position, decodes (the last split over positions).
  for (auto [count, position] : std::vector<std::pair<int64_t, int64_t>>{{3, 0}, {5, 3}, {1, 8}, {1, 300}}) {
    SCOPED_TRACE(testing::Message() << c.name << ": count " << count << " at " << position);
    const int64_t qw = (c.gated ? 2 : 1) * hd;
    Twin q_in = twin(*cpu, *gpu, random_vector(rng, count * nq * qw, -2.0f, 2.0f));
    Twin q = twin(*cpu, *gpu, std::vector<float>(size_t(count * nq * hd), 0.0f));
    Twin k = twin(*cpu, *gpu, random_vector(rng, count * nkv * hd, -2.0f, 2.0f));
    Twin v = twin(*cpu, *gpu, random_vector(rng, count * nkv * hd));
    Twin out = twin(*cpu, *gpu, std::vector<float>(size_t(count * nq * hd), NAN));
    std::vector<float> cos(size_t(count * half)), sin(cos.size());
    for (int64_t t = 0; t < count; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const double angle = double(position + t) * std::pow(10000.0, -double(2 * i) / double(2 * half));
        cos[size_t(t * half + i)] = float(std::cos(angle));
        sin[size_t(t * half + i)] = float(std::sin(angle));
      }
    Twin ct = twin(*cpu, *gpu, cos), st = twin(*cpu, *gpu, sin);
    auto args = [&](bool on_gpu) {
      AttentionArgs a;
      a.count = count, a.position = position, a.context = context;
      a.q_heads = nq, a.kv_heads = nkv, a.head_dim = hd, a.q_head_begin = 2, a.kv_head_begin = 1, a.group = 2;
      a.gated = c.gated;
      a.q_in = on_gpu ? q_in.g() : q_in.c();
      a.q = on_gpu ? q.g() : q.c();
      a.k = on_gpu ? k.g() : k.c();
      a.v = on_gpu ? v.g() : v.c();
      a.q_norm = c.qk_norm ? &q_norm : &none;
      a.k_norm = c.qk_norm ? &k_norm : &none;
      a.eps = 1e-6f;
      a.cos = on_gpu ? ct.g() : ct.c();
      a.sin = on_gpu ? st.g() : st.c();
      a.rope_half = half, a.rope_interleaved = c.interleaved;
      a.k_cache = on_gpu ? kc.g() : kc.c();
      a.v_cache = on_gpu ? vc.g() : vc.c();
      a.scores = on_gpu ? scores.g() : scores.c();
      a.out = on_gpu ? out.g() : out.c();
      return a;
    };
    gpu->attention(args(true));
    cpu->attention(args(false));
    expect_twin(*cpu, *gpu, q, kAttnTol, "q");
    expect_twin(*cpu, *gpu, k, kAttnTol, "k");
    expect_twin(*cpu, *gpu, kc, kAttnTol, "k_cache");
    expect_twin(*cpu, *gpu, vc, 0.0, "v_cache");
    expect_twin(*cpu, *gpu, out, kAttnTol, "out");
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, CudaAttention,
                         testing::Values(AttnCase{"plain", false, false, false, 128, 64},
                                         AttnCase{"gated", true, false, false, 128, 64},
                                         AttnCase{"qk_norm", false, true, false, 128, 64},
                                         AttnCase{"interleaved", false, false, true, 64, 32},
                                         AttnCase{"partial_rope_all", true, true, false, 256, 32},
                                         AttnCase{"head_dim_80", true, true, true, 80, 40},
                                         AttnCase{"head_dim_16_quarter_rope", true, true, false, 16, 2}),
                         [](const testing::TestParamInfo<AttnCase>& i) { return std::string(i.param.name); });

struct DeltaCase {
  const char* name;
  int64_t dk, dv;
};
class CudaDeltaNet : public testing::TestWithParam<DeltaCase> {};

TEST_P(CudaDeltaNet, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const DeltaCase& c = GetParam();
  std::mt19937 rng(9);
  // Local value heads 2..5, ratio 2: they use global key heads 1 and 2 (local 0 and 1).
  const int64_t nk = 2, nv = 4, dk = c.dk, dv = c.dv, kernel = 4, ratio = 2;
  const int64_t channels = 2 * nk * dk + nv * dv, in_rows = channels + nv * dv + 2 * nv;
  const std::vector<float> conv = random_vector(rng, channels * kernel), a_log = random_vector(rng, nv, -1.0f, 1.0f);
  const std::vector<float> dt_bias = random_vector(rng, nv), norm = random_vector(rng, dv, 0.5f, 1.5f);
  ResidentWeights res;
  res.vectors = {&conv, &a_log, &dt_bias, &norm};
  auto gpu = make_cuda_backend(res, 0);
  auto cpu = make_cpu_backend(pool());
  Twin conv_state = twin(*cpu, *gpu, random_vector(rng, channels * (kernel - 1)));
  Twin rec = twin(*cpu, *gpu, random_vector(rng, nv * dk * dv, -0.1f, 0.1f));
  for (int64_t count : {9, 1, 1, 40, 70, 1}) {  // 70: two chunks of the parallel form
    SCOPED_TRACE(testing::Message() << c.name << ": count " << count);
    Twin mixed = twin(*cpu, *gpu, random_vector(rng, count * in_rows, -2.0f, 2.0f));
    Twin conv_out = twin(*cpu, *gpu, std::vector<float>(size_t(count * channels), 0.0f));
    Twin beta = twin(*cpu, *gpu, std::vector<float>(size_t(count * nv), 0.0f));
    Twin decay = twin(*cpu, *gpu, std::vector<float>(size_t(count * nv), 0.0f));
    Twin core = twin(*cpu, *gpu, std::vector<float>(size_t(count * nv * dv), NAN));
    auto args = [&](bool g) {
      DeltaNetArgs a;
      a.count = count, a.k_heads = nk, a.v_heads = nv, a.dk = dk, a.dv = dv, a.kernel = kernel, a.ratio = ratio;
      a.k_head_begin = 1, a.v_head_begin = 2;
      a.mixed = g ? mixed.g() : mixed.c();
      a.in_rows = in_rows;
      a.conv = &conv, a.a_log = &a_log, a.dt_bias = &dt_bias, a.norm = &norm, a.eps = 1e-6f;
      a.conv_state = g ? conv_state.g() : conv_state.c();
      a.recurrent_state = g ? rec.g() : rec.c();
      a.conv_out = g ? conv_out.g() : conv_out.c();
      a.beta = g ? beta.g() : beta.c();
      a.decay = g ? decay.g() : decay.c();
      a.core = g ? core.g() : core.c();
      return a;
    };
    gpu->gated_deltanet(args(true));
    cpu->gated_deltanet(args(false));
    expect_twin(*cpu, *gpu, conv_state, 0.0, "conv_state");
    expect_twin(*cpu, *gpu, conv_out, kAttnTol, "conv_out");
    expect_twin(*cpu, *gpu, beta, kAttnTol, "beta");
    expect_twin(*cpu, *gpu, decay, kAttnTol, "decay");
    expect_twin(*cpu, *gpu, rec, kAttnTol, "recurrent_state");
    expect_twin(*cpu, *gpu, core, kAttnTol, "core");
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaDeltaNet,
                         testing::Values(DeltaCase{"dk64_dv64", 64, 64}, DeltaCase{"dk128_dv128", 128, 128},
                                         DeltaCase{"dk96_dv32", 96, 32}, DeltaCase{"dk16_dv16", 16, 16},
                                         DeltaCase{"dk16_dv8", 16, 8}),
                         [](const testing::TestParamInfo<DeltaCase>& i) { return std::string(i.param.name); });

TEST(CudaBackend, MemoryCapAndResidency) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(1);
  HostWeight w = make_weight(rng, WeightType(DType::F32), 256, 1024);  // 1 MiB
  ResidentWeights res;
  res.matrices.push_back(w.view);
  // The weight alone exceeds a 512 KiB cap.
  EXPECT_THROW(make_cuda_backend(res, 0, uint64_t(512) << 10), Error);
  auto gpu = make_cuda_backend(res, 0, uint64_t(2) << 20);
  float* ok = gpu->allocate(1 << 16);  // 256 KiB: fits
  EXPECT_NE(ok, nullptr);
  try {
    gpu->allocate(1 << 18);  // 1 MiB more: over the cap
    ADD_FAILURE() << "no Error over the cap";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cap"), std::string::npos) << e.what();
  }
  gpu->release(ok);
  float* again = gpu->allocate(1 << 18);  // fits once the first buffer is back
  gpu->release(again);
  // A weight or vector the backend does not hold.
  HostWeight other = make_weight(rng, WeightType(DType::F32), 4, 64);
  Buffer x(*gpu, 64), y(*gpu, 4);
  EXPECT_THROW(gpu->matmul(other.view, x.data(), 1, y.data()), Error);
  const std::vector<float> stray(64, 1.0f);
  EXPECT_THROW(gpu->rmsnorm(x.data(), stray, 1e-6f, 64, 1, x.data()), Error);
  EXPECT_THROW(make_cuda_backend({}, cuda_device_count()), Error);
}

// Prompt precisions: bf16 (activations rounded to 16 bits once) stays within 1e-2 of sum |w x| of the
// double-precision reference on batched products; split-bf16 within kMatmulTol and at least 10x closer
// (rms over all outputs); fp32 within kMatmulTol. Two tokens are scaled by 1e5 and 1e-6 (F16's range:
// per-token scales).
TEST(CudaBackend, MatmulPromptPrecision) {
  SKIP_WITHOUT_GPU();
  EXPECT_FALSE(prompt_precision_from_name("fastest"));
  auto backend_with = [&](const char* value, const ResidentWeights& res) {
    return make_cuda_backend(res, 0, 0, *prompt_precision_from_name(value));
  };
  std::mt19937 rng(19);
  for (const WeightType& t : {WeightType(DType::BF16), WeightType(DType::F16), WeightType(DType::Q8_0),
                              WeightType(DType::Q4_K), WeightType(DType::Q6_K), WeightType(DType::MLX4, 64, DType::BF16)}) {
    SCOPED_TRACE(t.name());
    const int64_t rows = 256, cols = 1024, batch = 37;
    HostWeight w = make_weight(rng, t, rows, cols);
    ResidentWeights res;
    res.matrices.push_back(w.view);
    std::vector<float> x = random_vector(rng, batch * cols, -2.0f, 2.0f);
    for (int64_t k = 0; k < cols; ++k) x[size_t(5 * cols + k)] *= 1e5f, x[size_t(11 * cols + k)] *= 1e-6f;
    double worst[3] = {0, 0, 0}, squares[3] = {0, 0, 0};  // bf16, split-bf16, fp32: |y - ref| / sum |w x|
    for (int mode = 0; mode < 3; ++mode) {
      auto gpu = backend_with(mode == 0 ? "bf16" : mode == 1 ? "split-bf16" : "fp32", res);
      Buffer xb(*gpu, batch * cols), yb(*gpu, batch * rows);
      gpu->upload(xb.data(), x.data(), batch * cols);
      gpu->matmul(w.view, xb.data(), batch, yb.data());
      const std::vector<float> y = fetch(*gpu, yb.data(), batch * rows);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t r = 0; r < rows; ++r) {
          double ref = 0, mag = 0;
          for (int64_t k = 0; k < cols; ++k) {
            const double p = double(w.values[size_t(r * cols + k)]) * double(x[size_t(b * cols + k)]);
            ref += p;
            mag += std::fabs(p);
          }
          double e = std::fabs(double(y[size_t(b * rows + r)]) - ref) / std::max(mag, 1e-300);
          if (std::isnan(e)) e = INFINITY;
          worst[mode] = std::max(worst[mode], e);
          squares[mode] += e * e;
        }
    }
    EXPECT_LE(worst[0], 1e-2) << "bf16";
    EXPECT_LE(worst[1], kMatmulTol) << "split-bf16";
    EXPECT_LE(worst[2], kMatmulTol) << "fp32";
    EXPECT_LE(10 * std::sqrt(squares[1]), std::sqrt(squares[0])) << "split-bf16 is not 10x closer than bf16: worst "
                                                                  << worst[1] << " vs " << worst[0];
  }
}

}  // namespace
}  // namespace uneven
