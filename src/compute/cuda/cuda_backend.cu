// The CUDA backend: device buffers on one GPU and one stream, resident weights, and the Backend ops
// launched on that stream (kernels in the other sources of this folder, GEMMs through cuBLAS).
#include "compute/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <unordered_map>

#include "compute/cuda/cuda_common.cuh"
#include "compute/cuda/cuda_kernels.h"

namespace uneven {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return n;
}

// Device-to-device copies of 256 MiB (or a quarter of the free memory), best of 5: bytes read plus
// written per second. The buffers are temporary and outside the memory cap.
double cuda_copy_bandwidth(int device) {
  UNEVEN_CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t stream = nullptr;  // the legacy default stream: the copies run alone
  size_t free = 0, total = 0;
  UNEVEN_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const size_t bytes = std::min<size_t>(size_t(256) << 20, free / 4);
  if (bytes < (size_t(1) << 20)) return 0;
  void *a = nullptr, *b = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  double best = 0;
  try {
    UNEVEN_CUDA_CHECK(cudaMalloc(&a, bytes));
    UNEVEN_CUDA_CHECK(cudaMalloc(&b, bytes));
    UNEVEN_CUDA_CHECK(cudaEventCreate(&start));
    UNEVEN_CUDA_CHECK(cudaEventCreate(&stop));
    UNEVEN_CUDA_CHECK(cudaMemsetAsync(a, 0, bytes, stream));
    for (int i = 0; i < 6; ++i) {  // the first is a warm-up
      UNEVEN_CUDA_CHECK(cudaEventRecord(start, stream));
      UNEVEN_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream));
      UNEVEN_CUDA_CHECK(cudaEventRecord(stop, stream));
      UNEVEN_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      UNEVEN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (i > 0 && ms > 0) best = std::max(best, 2.0 * double(bytes) / (double(ms) * 1e-3));
    }
  } catch (...) {
    cudaFree(a), cudaFree(b), cudaEventDestroy(start), cudaEventDestroy(stop);
    throw;
  }
  cudaFree(a), cudaFree(b), cudaEventDestroy(start), cudaEventDestroy(stop);
  return best;
}

namespace {

using cuda::check;
constexpr uint64_t kDequantScratchBytes = uint64_t(32) << 20;  // F32 rows of a weight per batched GEMM

class CudaBackend final : public Backend {
 public:
  CudaBackend(const ResidentWeights& weights, int device, uint64_t cap, PromptPrecision prompt)
      : device_(device), cap_(cap), prompt_precision_(prompt) {
    const int n = cuda_device_count();
    if (device < 0 || device >= n) fail("CUDA: device {} does not exist ({} visible)", device, n);
    UNEVEN_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop{};
    UNEVEN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    name_ = "cuda:" + std::to_string(device) + " (" + prop.name + ")";
    try {
      UNEVEN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      UNEVEN_CUDA_CHECK(cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming));
      UNEVEN_CUDA_CHECK(cublasCreate(&blas_));
      UNEVEN_CUDA_CHECK(cublasSetStream(blas_, stream_));
      // Pedantic: plain fp32 FMA GEMMs, never TF32 or reduced-precision reductions (CPU parity ~1e-6).
      UNEVEN_CUDA_CHECK(cublasSetMathMode(blas_, CUBLAS_PEDANTIC_MATH));
      load_weights(weights);
    } catch (...) {
      destroy();
      throw;
    }
  }
  ~CudaBackend() override { destroy(); }

  std::string name() const override { return name_; }
  bool device_memory() const override { return true; }
  int64_t prompt_chunk() const override { return 1024; }

  float* allocate(int64_t n) override {
    if (n <= 0) return nullptr;
    return static_cast<float*>(device_alloc(uint64_t(n) * sizeof(float), "a buffer"));
  }
  void release(float* p) override {
    if (!p) return;
    guard();
    device_free(p);
  }
  void upload(float* dst, const float* host, int64_t n) override {
    if (n <= 0) return;
    guard();
    UNEVEN_CUDA_CHECK(cudaMemcpyAsync(dst, host, size_t(n) * sizeof(float), cudaMemcpyHostToDevice, stream_));
    UNEVEN_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the caller may reuse `host` right away
  }
  void download(float* host, const float* src, int64_t n) override {
    if (n <= 0) return;
    guard();
    UNEVEN_CUDA_CHECK(cudaMemcpyAsync(host, src, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    UNEVEN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void fill_zero(float* x, int64_t n) override {
    if (n <= 0) return;
    guard();
    UNEVEN_CUDA_CHECK(cudaMemsetAsync(x, 0, size_t(n) * sizeof(float), stream_));
  }
  void synchronize() override {
    guard();
    UNEVEN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  double measure_read_bandwidth() override {
    guard();
    return cuda_copy_bandwidth(device_);
  }

  void matmul(const kernels::WeightView& w, const float* x, int64_t batch, float* y) override {
    if (batch <= 0 || w.rows == 0) return;
    guard();
    const cuda::DeviceWeight dw = resident(w);
    if (w.cols == 0) {
      UNEVEN_CUDA_CHECK(cudaMemsetAsync(y, 0, size_t(batch * w.rows) * sizeof(float), stream_));
      return;
    }
    if (batch == 1) return cuda::gemv(dw, x, y, stream_);
    // Batched: y^T (rows x batch, column-major, ld rows) = W^T^T x^T with W row-major = (cols x rows)
    // column-major. F32 weights: pedantic fp32 GEMM. BF16, F16 and quantized weights: 16-bit tensor-core
    // GEMMs with split operands (gemm.cu). Otherwise (no tensor-core path, or no scratch for one row of
    // it) non-F32 weights are dequantized to F32 a chunk of rows at a time into the scratch.
    if (w.dtype == DType::F32) return gemm(static_cast<const float*>(dw.data), w.rows, w.cols, x, batch, y, w.rows);
    if (tensor_matmul(dw, x, batch, y)) return;
    const int64_t chunk = std::max<int64_t>(1, int64_t(dequant_floats_) / w.cols);
    if (!dequant_ || chunk * w.cols > int64_t(dequant_floats_))
      fail("CUDA matmul: no dequantization scratch for a row of {} columns ({} floats reserved)", w.cols, dequant_floats_);
    for (int64_t r0 = 0; r0 < w.rows; r0 += chunk) {
      const int64_t n = std::min(chunk, w.rows - r0);
      cuda::dequantize_rows(dw, r0, nullptr, n, dequant_, stream_);
      gemm(dequant_, n, w.cols, x, batch, y + r0, w.rows);
    }
  }
  void embed(const kernels::WeightView& table, int64_t first_row, const float* tokens, int64_t count,
             float* x) override {
    if (count <= 0) return;
    guard();
    const cuda::DeviceWeight dw = resident(table);
    cuda::dequantize_rows(dw, first_row, tokens, count, x, stream_);
  }
  void rmsnorm(const float* x, const std::vector<float>& weight, float eps, int64_t n, int64_t rows,
               float* out) override {
    guard();
    if (int64_t(weight.size()) != n) fail("CUDA rmsnorm: {} weights for rows of {}", weight.size(), n);
    cuda::rmsnorm(x, vector(weight, "rmsnorm weight"), eps, n, rows, out, stream_);
  }
  void add(float* y, const float* x, int64_t n) override {
    guard();
    cuda::add(y, x, n, stream_);
  }
  void add_bias(float* y, const std::vector<float>& bias, int64_t rows) override {
    if (bias.empty()) return;
    guard();
    cuda::add_bias(y, vector(bias, "bias"), int64_t(bias.size()), rows, stream_);
  }
  void swiglu(const float* gate_up, int64_t cols, int64_t rows, float* out) override {
    if (cols <= 0 || rows <= 0) return;
    guard();
    cuda::swiglu(gate_up, cols, rows, out, stream_);
  }
  void gather_rows(const float* src, const int64_t* rows, int64_t n, int64_t width, float* dst) override {
    if (n <= 0) return;
    guard();
    const auto* d_rows = static_cast<const int64_t*>(stage(rows, size_t(n) * sizeof(int64_t), nullptr, 0).first);
    cuda::gather_rows(src, d_rows, n, width, dst, stream_);
  }
  void scatter_add_rows(const float* src, const int64_t* rows, const float* weights, int64_t n, int64_t width,
                        float* dst) override {
    if (n <= 0) return;
    guard();
    auto [d_rows, d_weights] = stage(rows, size_t(n) * sizeof(int64_t), weights, size_t(n) * sizeof(float));
    cuda::scatter_add_rows(src, static_cast<const int64_t*>(d_rows), static_cast<const float*>(d_weights), n, width,
                           dst, stream_);
  }
  void sigmoid_scale_add(const float* src, const float* gates, int64_t rows, int64_t width, float* dst) override {
    guard();
    cuda::sigmoid_scale_add(src, gates, rows, width, dst, stream_);
  }
  void attention(const AttentionArgs& a) override {
    guard();
    cuda::AttentionVectors vec;
    if (a.q_norm && !a.q_norm->empty()) vec.q_norm = vector(*a.q_norm, "q_norm", a.head_dim);
    if (a.k_norm && !a.k_norm->empty()) vec.k_norm = vector(*a.k_norm, "k_norm", a.head_dim);
    cuda::attention(a, vec, recording_, stream_);
  }
  void gated_deltanet(const DeltaNetArgs& a) override {
    guard();
    const int64_t channels = 2 * a.k_heads * a.dk + a.v_heads * a.dv;
    if (!a.conv || !a.a_log || !a.dt_bias || !a.norm) fail("CUDA gated DeltaNet: a weight vector is missing");
    cuda::DeltaNetVectors vec{vector(*a.conv, "conv1d", channels * a.kernel), vector(*a.a_log, "A_log", a.v_heads),
                              vector(*a.dt_bias, "dt_bias", a.v_heads), vector(*a.norm, "norm", a.dv)};
    cuda::gated_deltanet(a, vec, stream_);
  }

  // Recording: stream capture into a CUDA graph, replayed with one launch. While recording, launch sizes
  // that depend on the position (the attention's split decode) are sized for the whole context instead.
  class GraphRecording final : public Recording {
   public:
    GraphRecording(cudaGraphExec_t exec, cudaStream_t stream, int device) : exec_(exec), stream_(stream), device_(device) {}
    ~GraphRecording() override { cudaGraphExecDestroy(exec_); }
    void replay() override {
      UNEVEN_CUDA_CHECK(cudaSetDevice(device_));
      UNEVEN_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
    }

   private:
    cudaGraphExec_t exec_;
    cudaStream_t stream_;
    int device_;
  };
  bool can_record() const override { return true; }
  void begin_recording() override {
    guard();
    if (recording_) fail("{}: a recording is already under way", name_);
    UNEVEN_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    recording_ = true;
  }
  std::unique_ptr<Recording> end_recording() override {
    guard();
    if (!recording_) fail("{}: end_recording without begin_recording", name_);
    recording_ = false;
    cudaGraph_t graph = nullptr;
    UNEVEN_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check(e, "cudaGraphInstantiate", __FILE__, __LINE__);
    return std::make_unique<GraphRecording>(exec, stream_, device_);
  }

 private:
  struct Resident {
    const uint8_t* device;
    uint64_t bytes;
  };

  void guard() const { UNEVEN_CUDA_CHECK(cudaSetDevice(device_)); }

  void* device_alloc(uint64_t bytes, const char* what) {
    guard();
    if (cap_ && allocated_ + bytes > cap_)
      fail("{}: allocating {} bytes for {} exceeds the memory cap: {} of {} bytes already in use", name_, bytes, what,
           allocated_, cap_);
    size_t free = 0, total = 0;
    UNEVEN_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    if (bytes > free)
      fail("{}: allocating {} bytes for {}: only {} of {} bytes of the device are free ({} held by this backend)",
           name_, bytes, what, free, total, allocated_);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      fail("{}: cudaMalloc of {} bytes for {} failed: {} ({} bytes free)", name_, bytes, what, cudaGetErrorString(e), free);
    }
    sizes_[p] = bytes;
    allocated_ += bytes;
    // Zero-filled, ordered before every later use on the stream.
    UNEVEN_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
    return p;
  }
  void device_free(void* p) {
    auto it = sizes_.find(p);
    if (it == sizes_.end()) fail("{}: release of {} which this backend did not allocate", name_, p);
    allocated_ -= it->second;
    sizes_.erase(it);
    UNEVEN_CUDA_CHECK(cudaFree(p));  // cudaFree waits for the device: no kernel still uses p
  }

  void load_weights(const ResidentWeights& w) {
    uint64_t widest = 0;  // floats of the largest non-F32 matrix (bounds the dequantization scratch)
    for (const kernels::WeightView& m : w.matrices) {
      const auto* h = static_cast<const uint8_t*>(m.data);
      if (!h || m.bytes() == 0 || by_host_.count(h)) continue;
      auto* d = static_cast<uint8_t*>(device_alloc(m.bytes(), "a weight matrix"));
      UNEVEN_CUDA_CHECK(cudaMemcpy(d, m.data, m.bytes(), cudaMemcpyHostToDevice));
      by_host_[h] = {d, m.bytes()};
      if (m.dtype != DType::F32) widest = std::max(widest, uint64_t(m.rows) * uint64_t(m.cols));
    }
    for (const std::vector<float>* v : w.vectors) {
      if (!v || v->empty() || vectors_.count(v->data())) continue;
      auto* d = static_cast<float*>(device_alloc(v->size() * sizeof(float), "a model vector"));
      UNEVEN_CUDA_CHECK(cudaMemcpy(d, v->data(), v->size() * sizeof(float), cudaMemcpyHostToDevice));
      vectors_[v->data()] = d;
    }
    if (widest) {
      dequant_floats_ = std::min<uint64_t>(widest, kDequantScratchBytes / sizeof(float));
      for (const kernels::WeightView& m : w.matrices)  // at least one row of the widest
        dequant_floats_ = std::max<uint64_t>(dequant_floats_, uint64_t(m.cols));
      dequant_ = static_cast<float*>(device_alloc(dequant_floats_ * sizeof(float), "the dequantization scratch"));
    }
    UNEVEN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // The device copy of a weight view: its data is a resident matrix or lies inside one (a row range).
  cuda::DeviceWeight resident(const kernels::WeightView& w) const {
    const auto* h = static_cast<const uint8_t*>(w.data);
    auto it = by_host_.upper_bound(h);
    if (it != by_host_.begin()) {
      --it;
      const uint64_t offset = uint64_t(h - it->first);
      if (h >= it->first && offset + w.bytes() <= it->second.bytes) {
        cuda::DeviceWeight d = w;
        d.data = it->second.device + offset;
        if (reinterpret_cast<uintptr_t>(d.data) % uint64_t(cuda::weight_alignment(w)) != 0)
          fail("{}: {} weight {}x{} starts at a misaligned offset {} of its resident copy", name_, w.type().name(),
               w.rows, w.cols, offset);
        return d;
      }
    }
    fail("{}: {} weight {}x{} at {} is not resident on the device", name_, w.type().name(), w.rows, w.cols, w.data);
  }
  const float* vector(const std::vector<float>& v, const char* what, int64_t want = -1) const {
    if (want >= 0 && int64_t(v.size()) < want) fail("{}: {} has {} values, {} needed", name_, what, v.size(), want);
    auto it = vectors_.find(v.data());
    if (it == vectors_.end()) fail("{}: {} ({} values) is not a resident model vector", name_, what, v.size());
    return it->second;
  }

  // y (ldc) = W (n x k row-major) x^T for `batch` rows of x, fp32.
  void gemm(const float* w, int64_t n, int64_t k, const float* x, int64_t batch, float* y, int64_t ldc) {
    const float one = 1.0f, zero = 0.0f;
    UNEVEN_CUDA_CHECK(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(batch), int(k), &one, w, int(k), x,
                                  int(k), &zero, y, int(ldc)));
  }

  // Copies one or two host arrays to the device through the pinned staging buffer; returns their device
  // copies. The staging buffer is rewritten only after the previous copy out of it finished (event).
  std::pair<const void*, const void*> stage(const void* a, size_t na, const void* b, size_t nb) {
    const size_t b_at = (na + 15) / 16 * 16, total = b_at + nb;
    UNEVEN_CUDA_CHECK(cudaEventSynchronize(staged_));
    if (total > pinned_bytes_) {
      if (pinned_) UNEVEN_CUDA_CHECK(cudaFreeHost(pinned_));
      pinned_ = nullptr;
      pinned_bytes_ = 0;
      UNEVEN_CUDA_CHECK(cudaMallocHost(&pinned_, total));
      pinned_bytes_ = total;
    }
    if (total > staged_bytes_) {
      if (staged_dev_) device_free(staged_dev_);
      staged_dev_ = nullptr;
      staged_bytes_ = 0;
      staged_dev_ = static_cast<uint8_t*>(device_alloc(total, "index staging"));
      staged_bytes_ = total;
    }
    std::memcpy(pinned_, a, na);
    if (nb) std::memcpy(static_cast<uint8_t*>(pinned_) + b_at, b, nb);
    UNEVEN_CUDA_CHECK(cudaMemcpyAsync(staged_dev_, pinned_, total, cudaMemcpyHostToDevice, stream_));
    UNEVEN_CUDA_CHECK(cudaEventRecord(staged_, stream_));
    return {staged_dev_, staged_dev_ + b_at};
  }

  // Frees everything; errors are ignored (a destructor must not throw, and a failed device frees nothing).
  void destroy() {
    cudaSetDevice(device_);
    if (stream_) cudaStreamSynchronize(stream_);
    for (auto& [p, bytes] : sizes_) cudaFree(p);
    sizes_.clear();
    if (pinned_) cudaFreeHost(pinned_);
    if (blas_) cublasDestroy(blas_);
    if (staged_) cudaEventDestroy(staged_);
    if (stream_) cudaStreamDestroy(stream_);
    pinned_ = nullptr;
    blas_ = nullptr;
    staged_ = nullptr;
    stream_ = nullptr;
    cudaGetLastError();
  }

  int device_;
  uint64_t cap_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  bool recording_ = false;  // between begin_recording and end_recording
  cudaEvent_t staged_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  uint64_t allocated_ = 0;
  std::unordered_map<void*, uint64_t> sizes_;
  std::map<const uint8_t*, Resident> by_host_;  // ordered: views inside a matrix are found by range
  std::unordered_map<const float*, const float*> vectors_;
  float* dequant_ = nullptr;
  uint64_t dequant_floats_ = 0;
  void* pinned_ = nullptr;
  size_t pinned_bytes_ = 0;
  uint8_t* staged_dev_ = nullptr;
  size_t staged_bytes_ = 0;

  // ---- batched products on tensor cores (gemm.cu) ----
  // y = x W^T on tensor cores when w's type has that path and one row of it fits the dequantization
  // scratch; false otherwise (the caller runs the fp32 path). Batched products are never recorded (the
  // activation scratch may grow).
  bool tensor_matmul(const cuda::DeviceWeight& dw, const float* x, int64_t batch, float* y) {
    const cuda::PromptPlan plan = cuda::prompt_plan(dw, prompt_precision_);
    if (!plan.tensor_cores) return false;
    const uint64_t w_row = plan.w_row_bytes(dw.cols), w_bytes = dequant_ ? dequant_floats_ * sizeof(float) : 0;
    if (w_row > w_bytes) return false;
    const uint64_t base = plan.x_bytes(dw.cols, 0), least = plan.x_bytes(dw.cols, 1), per_token = least - base;
    const int64_t fit = std::max<int64_t>(1, int64_t((kPromptScratchBytes - base) / per_token));  // tokens per group
    grow_prompt_scratch(plan.x_bytes(dw.cols, std::min(batch, fit)), least);
    cuda::prompt_matmul(blas_, dw, x, batch, y, plan,
                        {prompt_scratch_, prompt_scratch_bytes_, w_row ? dequant_ : nullptr, w_row ? w_bytes : 0}, stream_);
    return true;
  }
  // Makes the activation scratch at least `least` bytes, and `want` where the cap and the device allow
  // (a refused size is not asked for again); grows only, between calls (never while capturing).
  void grow_prompt_scratch(uint64_t want, uint64_t least) {
    want = std::max(least, std::min(want, prompt_scratch_limit_));
    if (prompt_scratch_bytes_ >= want) return;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    UNEVEN_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
    if (capture != cudaStreamCaptureStatusNone)
      fail("{}: a batched matmul would grow its scratch to {} bytes during a recording", name_, want);
    if (prompt_scratch_) device_free(prompt_scratch_);
    prompt_scratch_ = nullptr;
    prompt_scratch_bytes_ = 0;
    for (uint64_t bytes = want;; bytes = std::max(least, bytes / 2)) {
      try {
        prompt_scratch_ = device_alloc(bytes, "the prompt GEMM scratch");
        prompt_scratch_bytes_ = bytes;
        return;
      } catch (const Error&) {
        if (bytes <= least) throw;
        prompt_scratch_limit_ = std::max(least, bytes / 2);
      }
    }
  }

  static constexpr uint64_t kPromptScratchBytes = uint64_t(64) << 20;  // 16-bit activation parts of a batch
  PromptPrecision prompt_precision_ = PromptPrecision::kFp32;
  void* prompt_scratch_ = nullptr;
  uint64_t prompt_scratch_bytes_ = 0;
  uint64_t prompt_scratch_limit_ = UINT64_MAX;
};

}  // namespace

std::optional<PromptPrecision> prompt_precision_from_name(std::string_view name) {
  if (name == "fp32") return PromptPrecision::kFp32;
  if (name == "split-bf16") return PromptPrecision::kSplitBf16;
  if (name == "bf16") return PromptPrecision::kBf16;
  return std::nullopt;
}

std::unique_ptr<Backend> make_cuda_backend(const ResidentWeights& weights, int device, uint64_t memory_cap,
                                           PromptPrecision prompt) {
  return std::make_unique<CudaBackend>(weights, device, memory_cap, prompt);
}

}  // namespace uneven
