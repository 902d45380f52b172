// The compute seam of the forward pass: float buffers that live on one device and the coarse operations
// the session runs on them. CPU (host memory, the Highway kernels) and CUDA (device memory) implement it;
// the forward logic in engine/session.cpp is written once against this interface.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compute/kernels.h"

namespace uneven {

class ThreadPool;

// Full attention over one layer's KV cache for `count` tokens at positions [position, position + count).
// All pointers except the vectors are backend buffers. Per token t and local query head j (0 <= j < q_heads):
//   query = q_in[t][j] (its first head_dim values; the next head_dim are the output gate when `gated`),
//   key/value heads k[t][i], v[t][i] for local KV heads i; local query head j uses local KV head
//   (q_head_begin + j) / group - kv_head_begin.
// Steps: split the query out of q_in into q; RMSNorm each query and key head by q_norm / k_norm (when not
// empty, eps); rotate the first 2*rope_half values of each query and key head by cos/sin
// ([count][rope_half], pairs (2i, 2i+1) when rope_interleaved, else (i, i + rope_half)); write keys and
// values into the caches at their positions; causal softmax(q.k * scale) over positions [0, position + t]
// weighting the values; times sigmoid(gate) when gated. Results in out[t][j][head_dim].
struct AttentionArgs {
  int64_t count = 0, position = 0, context = 0;
  // The position again, as a float in a buffer (exact below 2^24): a recorded step reads it at replay.
  const float* position_value = nullptr;
  int64_t q_heads = 0, kv_heads = 0, head_dim = 0;
  int64_t q_head_begin = 0, kv_head_begin = 0, group = 1;
  bool gated = false;
  const float* q_in = nullptr;  // [count][q_heads][(gated ? 2 : 1) * head_dim]
  float* q = nullptr;           // [count][q_heads][head_dim] scratch (the query after norm and rotation)
  float* k = nullptr;           // [count][kv_heads][head_dim], normalised and rotated in place
  const float* v = nullptr;     // [count][kv_heads][head_dim]
  const std::vector<float>* q_norm = nullptr;  // head_dim weights, or empty: no qk norm
  const std::vector<float>* k_norm = nullptr;
  float eps = 1e-6f;
  const float* cos = nullptr;  // [count][rope_half]
  const float* sin = nullptr;
  int64_t rope_half = 0;
  bool rope_interleaved = false;
  float* k_cache = nullptr;  // [kv_heads][context][head_dim]
  float* v_cache = nullptr;
  float* scores = nullptr;   // scratch of at least q_heads * context floats
  float* out = nullptr;      // [count][q_heads][head_dim]
};

// Gated DeltaNet between its input and output products, for `count` tokens of one layer. Row t of `mixed`
// (in_rows floats) holds q | k (k_heads heads of dk each) | v (v_heads heads of dv) | z (v_heads * dv) |
// b (v_heads) | a (v_heads). Steps: causal depthwise conv1d (weights conv[channel][kernel], state
// conv_state[channel][kernel - 1], oldest first) over the q|k|v channels, SiLU; q and k L2-normalised per
// key head (q also times 1/sqrt(dk)); beta = sigmoid(b), log decay g = -exp(a_log) * softplus(a + dt_bias);
// the delta rule per value head (state recurrent_state[head][dk][dv]; local value head j uses local key
// head (v_head_begin + j) / ratio - k_head_begin): S = exp(g) S; S += k (beta (v - S^T k))^T; o = S^T q;
// then RMSNorm of o per value head by `norm` (eps) times silu(z). Output core[t][v_heads * dv].
struct DeltaNetArgs {
  int64_t count = 0;
  int64_t k_heads = 0, v_heads = 0, dk = 0, dv = 0, kernel = 0, ratio = 1;
  int64_t k_head_begin = 0, v_head_begin = 0;
  const float* mixed = nullptr;
  int64_t in_rows = 0;
  const std::vector<float>* conv = nullptr;     // [channels][kernel], channels = 2*k_heads*dk + v_heads*dv
  const std::vector<float>* a_log = nullptr;    // [v_heads]
  const std::vector<float>* dt_bias = nullptr;  // [v_heads]
  const std::vector<float>* norm = nullptr;     // [dv]
  float eps = 1e-6f;
  float* conv_state = nullptr;       // [channels][kernel - 1]
  float* recurrent_state = nullptr;  // [v_heads][dk][dv]
  float* conv_out = nullptr;         // scratch [count][channels]
  float* beta = nullptr;             // scratch [count][v_heads]
  float* decay = nullptr;            // scratch [count][v_heads]
  float* core = nullptr;             // [count][v_heads * dv]
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // True when buffers are device memory the host cannot address (then data moves by upload/download).
  virtual bool device_memory() const = 0;

  // Buffers of floats, zero-filled. release() takes what allocate() returned (nullptr is ignored).
  virtual float* allocate(int64_t n) = 0;
  virtual void release(float* p) = 0;
  virtual void upload(float* dst, const float* host, int64_t n) = 0;
  virtual void download(float* host, const float* src, int64_t n) = 0;
  virtual void fill_zero(float* x, int64_t n) = 0;
  // Waits until every operation issued so far has finished (for timers; downloads wait by themselves).
  virtual void synchronize() = 0;
  // The memory bandwidth weights are read at, bytes/s, measured now (CPU: streaming read with every pool
  // thread; GPU: device-to-device copy, bytes read plus written); 0 when the backend cannot measure it.
  virtual double measure_read_bandwidth() { return 0; }
  // Prompt tokens that go through the layers together (longer prompts run in chunks of this many): the
  // CPU's cache-sized blocks, a GPU's large batches that keep its tensor cores busy.
  virtual int64_t prompt_chunk() const { return 128; }

  // y[b] = W x[b] for b < batch (kernels::matmul's contract). W is a weight of the model the backend
  // serves (its host view; a device backend finds its resident copy).
  virtual void matmul(const kernels::WeightView& w, const float* x, int64_t batch, float* y) = 0;
  // x[t] = table row (tokens[t] - first_row) as F32 for every t whose token lies in
  // [first_row, first_row + table.rows); other rows of x are left as they are. `tokens` is a buffer of
  // token ids held as floats (exact below 2^24), so that a recorded step reads the ids at replay.
  virtual void embed(const kernels::WeightView& table, int64_t first_row, const float* tokens, int64_t count,
                     float* x) = 0;
  // kernels::rmsnorm over `rows` rows of n (in place allowed); `weight` is a model vector of n values.
  virtual void rmsnorm(const float* x, const std::vector<float>& weight, float eps, int64_t n, int64_t rows,
                       float* out) = 0;
  // y[i] += x[i]
  virtual void add(float* y, const float* x, int64_t n) = 0;
  // y[r][i] += bias[i] for each of `rows` rows of bias.size() values.
  virtual void add_bias(float* y, const std::vector<float>& bias, int64_t rows) = 0;
  // Row r of gate_up holds [gate | up] of `cols` each; out[r] = silu(gate) * up ([rows][cols]; no overlap).
  virtual void swiglu(const float* gate_up, int64_t cols, int64_t rows, float* out) = 0;
  // dst[i] = src[rows[i]] for i < n, rows of `width` floats; `rows` is host memory.
  virtual void gather_rows(const float* src, const int64_t* rows, int64_t n, int64_t width, float* dst) = 0;
  // dst[rows[i]] += weights[i] * src[i] for i < n; `rows` and `weights` are host memory.
  virtual void scatter_add_rows(const float* src, const int64_t* rows, const float* weights, int64_t n,
                                int64_t width, float* dst) = 0;
  // dst[r] += sigmoid(gates[r]) * src[r] for r < rows (gates is a buffer of one value per row).
  virtual void sigmoid_scale_add(const float* src, const float* gates, int64_t rows, int64_t width, float* dst) = 0;
  virtual void attention(const AttentionArgs& args) = 0;
  virtual void gated_deltanet(const DeltaNetArgs& args) = 0;

  // Recording (CUDA graphs): between begin_recording() and end_recording() operations are recorded, not
  // run; the recording's replay() runs them all again with one launch. Only operations whose inputs live
  // in buffers may be recorded (no upload, download or host-memory argument that changes between replays),
  // and the buffers they name must outlive the recording. Backends that cannot record return false.
  class Recording {
   public:
    virtual ~Recording() = default;
    virtual void replay() = 0;
  };
  virtual bool can_record() const { return false; }
  virtual void begin_recording() {}
  virtual std::unique_ptr<Recording> end_recording() { return nullptr; }
};

// What a device backend must hold resident: every weight matrix and model vector the forward pass will
// name (their host copies identify them in Backend calls).
struct ResidentWeights {
  std::vector<kernels::WeightView> matrices;
  std::vector<const std::vector<float>*> vectors;
};

// The CPU backend: host memory and the Highway kernels, parallel over `pool`.
std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool);

// A buffer of a backend, released with it (move-only).
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& backend, int64_t n) : backend_(&backend), data_(backend.allocate(n)), size_(n) {}
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    swap(o);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (backend_) backend_->release(data_);
  }
  float* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  void swap(Buffer& o) noexcept {
    std::swap(backend_, o.backend_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
  }
  Backend* backend_ = nullptr;
  float* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace uneven
