// Weight-streaming kernels: the batch-1 GEMV of every weight type and row dequantization to F32 (for
// embeddings and for the batched matmul, which multiplies dequantized row chunks with cuBLAS).
//
// GEMV: one warp per row; lane i decodes units i, i + 32, ... (two in flight), so a warp reads a
// contiguous stretch of the row per step and every weight byte once; fp32 products and sums, then a
// warp-shuffle reduction. Activations stay fp32 (never quantized): results match a double-precision
// reference to ~1e-6 of sum |w x|.
#include "compute/cuda/cuda_common.cuh"
#include "compute/cuda/cuda_kernels.h"
#include "compute/cuda/dequant.cuh"

namespace uneven::cuda {
namespace {

template <class D>
struct Tag {
  using type = D;
};

// Calls f(Tag<Decoder>{}) with the decoder of w's type. `vector_rows`: rows are 16-byte aligned (base
// aligned and row stride a multiple of 16), so plain types may use 16-byte loads.
template <class F>
void with_decoder(const kernels::WeightView& w, F&& f) {
  const bool vector_rows = reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && w.row_bytes() % 16 == 0;
  switch (w.dtype) {
    case DType::F32: return vector_rows ? f(Tag<DecF32x4>{}) : f(Tag<DecF32x1>{});
    case DType::F16: return vector_rows ? f(Tag<DecHalfx8<false>>{}) : f(Tag<DecHalfx1<false>>{});
    case DType::BF16: return vector_rows ? f(Tag<DecHalfx8<true>>{}) : f(Tag<DecHalfx1<true>>{});
    case DType::Q8_0: return f(Tag<DecQ8_0>{});
    case DType::Q4_0: return f(Tag<DecQ4_0>{});
    case DType::Q4_1: return f(Tag<DecQ4_1>{});
    case DType::Q5_0: return f(Tag<DecQ5_0>{});
    case DType::Q5_1: return f(Tag<DecQ5_1>{});
    case DType::Q4_K: return f(Tag<DecQ45_K<false>>{});
    case DType::Q5_K: return f(Tag<DecQ45_K<true>>{});
    case DType::Q6_K: return f(Tag<DecQ6_K>{});
    case DType::MLX4:
    case DType::MLX8: {
      if (w.group <= 0 || w.group % 32 != 0) fail("CUDA matmul: MLX group size {} is not a multiple of 32", w.group);
      const bool four = w.dtype == DType::MLX4;
      switch (w.scale) {
        case DType::F32: return four ? f(Tag<DecMlx<4, DType::F32>>{}) : f(Tag<DecMlx<8, DType::F32>>{});
        case DType::F16: return four ? f(Tag<DecMlx<4, DType::F16>>{}) : f(Tag<DecMlx<8, DType::F16>>{});
        case DType::BF16: return four ? f(Tag<DecMlx<4, DType::BF16>>{}) : f(Tag<DecMlx<8, DType::BF16>>{});
        default: fail("CUDA matmul: MLX scale type {} is not supported", dtype_name(w.scale));
      }
    }
    case DType::U32: break;
  }
  fail("CUDA matmul: weight type {} is not supported", w.type().name());
}

QParams params_of(const kernels::WeightView& w) {
  QParams p;
  if (is_mlx(w.dtype)) {
    p.group = w.group;
    p.block_bytes = int(w.type().block_bytes());
  }
  return p;
}

template <int E, bool kVecX>
__device__ __forceinline__ float dot_x(const float* v, const float* x) {
  float acc = 0;
  if constexpr (kVecX && E % 4 == 0) {
#pragma unroll
    for (int i = 0; i < E; i += 4) {
      const float4 xv = __ldg(reinterpret_cast<const float4*>(x + i));
      acc = fmaf(v[i], xv.x, acc);
      acc = fmaf(v[i + 1], xv.y, acc);
      acc = fmaf(v[i + 2], xv.z, acc);
      acc = fmaf(v[i + 3], xv.w, acc);
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) acc = fmaf(v[i], __ldg(x + i), acc);
  }
  return acc;
}

constexpr int kGemvWarps = 4;  // rows per block

template <class D, bool kVecX>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes,
                                                                int64_t rows, int64_t units, QParams p,
                                                                const float* __restrict__ x, float* __restrict__ y) {
  constexpr int E = D::kElems;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (row >= rows) return;  // whole warps leave together: the shuffles below see full warps
  const uint8_t* r = w + uint64_t(row) * row_bytes;
  float acc0 = 0, acc1 = 0;
  int64_t u = lane;
  for (; u + 32 < units; u += 64) {  // two units in flight per lane
    float a[E], b[E];
    D::unit(r, u, p, a);
    D::unit(r, u + 32, p, b);
    acc0 += dot_x<E, kVecX>(a, x + u * E);
    acc1 += dot_x<E, kVecX>(b, x + (u + 32) * E);
  }
  if (u < units) {
    float a[E];
    D::unit(r, u, p, a);
    acc0 += dot_x<E, kVecX>(a, x + u * E);
  }
  const float sum = warp_sum(acc0 + acc1);
  if (lane == 0) y[row] = sum;
}

template <class D, bool kVecOut>
__global__ void dequant_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, int64_t table_rows, int64_t units,
                               QParams p, int64_t first_row, const float* __restrict__ rows, int64_t count,
                               float* __restrict__ out) {
  constexpr int E = D::kElems;
  const int64_t cols = units * E;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count * units; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / units, u = i % units;
    const int64_t row = rows ? int64_t(rows[t]) - first_row : first_row + t;
    if (row < 0 || row >= table_rows) continue;
    float v[E];
    D::unit(w + uint64_t(row) * row_bytes, u, p, v);
    float* o = out + t * cols + u * E;
    if constexpr (kVecOut && E % 4 == 0) {
#pragma unroll
      for (int j = 0; j < E; j += 4) *reinterpret_cast<float4*>(o + j) = make_float4(v[j], v[j + 1], v[j + 2], v[j + 3]);
    } else {
#pragma unroll
      for (int j = 0; j < E; ++j) o[j] = v[j];
    }
  }
}

}  // namespace

int64_t weight_alignment(const kernels::WeightView& w) {
  switch (w.dtype) {
    case DType::F32: return 4;
    case DType::Q4_1: case DType::MLX4: case DType::MLX8: return 4;
    case DType::Q5_1: return 8;
    case DType::Q4_K: case DType::Q5_K: return 16;
    default: return 2;  // F16, BF16, Q4_0, Q5_0, Q8_0, Q6_K
  }
}

void gemv(const DeviceWeight& w, const float* x, float* y, cudaStream_t stream) {
  if (w.rows == 0) return;
  with_decoder(w, [&](auto tag) {
    using D = typename decltype(tag)::type;
    if (w.cols % D::kElems != 0) fail("CUDA matmul: {} columns are not whole units of {} elements", w.cols, D::kElems);
    const int64_t units = w.cols / D::kElems;
    const unsigned grid = blocks_for(w.rows, kGemvWarps);
    const auto* wp = static_cast<const uint8_t*>(w.data);
    if (reinterpret_cast<uintptr_t>(x) % 16 == 0)
      gemv_kernel<D, true><<<grid, kGemvWarps * 32, 0, stream>>>(wp, w.row_bytes(), w.rows, units, params_of(w), x, y);
    else
      gemv_kernel<D, false><<<grid, kGemvWarps * 32, 0, stream>>>(wp, w.row_bytes(), w.rows, units, params_of(w), x, y);
    UNEVEN_CUDA_LAUNCHED();
  });
}

void dequantize_rows(const DeviceWeight& w, int64_t first_row, const float* rows, int64_t count, float* out,
                     cudaStream_t stream) {
  if (count == 0 || w.cols == 0) return;
  with_decoder(w, [&](auto tag) {
    using D = typename decltype(tag)::type;
    if (w.cols % D::kElems != 0) fail("CUDA dequantize: {} columns are not whole units of {} elements", w.cols, D::kElems);
    const int64_t units = w.cols / D::kElems, total = count * units;
    const int threads = 256;
    const unsigned grid = unsigned(std::min<int64_t>(blocks_for(total, threads), 65535));
    const auto* wp = static_cast<const uint8_t*>(w.data);
    if (reinterpret_cast<uintptr_t>(out) % 16 == 0 && w.cols % 4 == 0)
      dequant_kernel<D, true><<<grid, threads, 0, stream>>>(wp, w.row_bytes(), w.rows, units, params_of(w), first_row, rows, count, out);
    else
      dequant_kernel<D, false><<<grid, threads, 0, stream>>>(wp, w.row_bytes(), w.rows, units, params_of(w), first_row, rows, count, out);
    UNEVEN_CUDA_LAUNCHED();
  });
}

}  // namespace uneven::cuda
