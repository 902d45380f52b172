// Element types of tensors in model files and in memory (plain and block-quantized), sizes and names.
#pragma once
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace uneven {

// Plain types (U32 only as MLX's packed codes in files, never computed with), GGML's block-quantized types (block layouts in quant/blocks.h), and MLX affine groups.
// A quantized row is a whole number of blocks; every block covers `block_elems` consecutive elements of
// one row (along the input dimension of a weight), so a row splits only on block boundaries.
enum class DType : uint8_t { F32, F16, BF16, U32, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, MLX4, MLX8 };

inline constexpr bool is_quantized(DType t) { return t >= DType::Q4_0; }
inline constexpr bool is_mlx(DType t) { return t == DType::MLX4 || t == DType::MLX8; }
inline constexpr int mlx_bits(DType t) { return t == DType::MLX4 ? 4 : 8; }

// Bytes of one element of a plain type.
inline constexpr size_t dtype_size(DType t) { return t == DType::F32 || t == DType::U32 ? 4 : 2; }

inline constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::U32: return "U32";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_1: return "Q4_1";
    case DType::Q5_0: return "Q5_0";
    case DType::Q5_1: return "Q5_1";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_K: return "Q4_K";
    case DType::Q5_K: return "Q5_K";
    case DType::Q6_K: return "Q6_K";
    case DType::MLX4: return "MLX4";
    case DType::MLX8: return "MLX8";
  }
  return "?";
}

// The full storage type of a tensor: its DType and, for MLX types, the group size and the type of the
// per-group scale and bias. In memory an MLX block is [scale][bias][group * bits / 8 packed bytes]
// (mlx-lm keeps them in three tensors; the loader interleaves them so a row is one stream like GGML's).
struct WeightType {
  DType dtype = DType::F32;
  int32_t group = 0;           // MLX only: elements per scale/bias pair (32, 64, 128)
  DType scale = DType::BF16;   // MLX only: F32, F16 or BF16

  WeightType() = default;
  WeightType(DType d, int32_t g = 0, DType s = DType::BF16) : dtype(d), group(g), scale(s) {}  // NOLINT: a DType is a WeightType

  // Elements per block (1 for plain types).
  int64_t block_elems() const {
    switch (dtype) {
      case DType::F32: case DType::F16: case DType::BF16: case DType::U32: return 1;
      case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0: return 32;
      case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return 256;
      case DType::MLX4: case DType::MLX8: return group;
    }
    return 1;
  }
  // Bytes per block.
  int64_t block_bytes() const {
    switch (dtype) {
      case DType::F32: case DType::U32: return 4;
      case DType::F16: case DType::BF16: return 2;
      case DType::Q4_0: return 18;
      case DType::Q4_1: return 20;
      case DType::Q5_0: return 22;
      case DType::Q5_1: return 24;
      case DType::Q8_0: return 34;
      case DType::Q4_K: return 144;
      case DType::Q5_K: return 176;
      case DType::Q6_K: return 210;
      case DType::MLX4: case DType::MLX8:
        return 2 * int64_t(dtype_size(scale)) + int64_t(group) * mlx_bits(dtype) / 8;
    }
    return 4;
  }
  // Bytes of `elems` elements; elems must be a whole number of blocks (callers check and say where).
  uint64_t bytes(int64_t elems) const { return uint64_t(elems / block_elems()) * uint64_t(block_bytes()); }
  std::string name() const {
    std::string n(dtype_name(dtype));
    if (is_mlx(dtype)) n += "(group " + std::to_string(group) + ", " + std::string(dtype_name(scale)) + " scales)";
    return n;
  }
  bool operator==(const WeightType&) const = default;
};

// "f32", "bf16", "q8_0", "q4_k", "mlx4", ... (case-insensitive); MLX types get `mlx_group` and BF16
// scales. nullopt for other names.
std::optional<WeightType> weight_type_from_name(std::string_view name, int32_t mlx_group = 64);
inline constexpr std::string_view kWeightTypeNames = "f32, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, mlx8, mlx4";

// Scalar conversions (bit exact, round-to-nearest-even for bf16); kernels use SIMD versions.
inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);  // keep NaN a NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400u) == 0) { mantissa <<= 1; --exponent; }
      bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round-to-nearest-even F32 -> F16 (overflow to infinity, underflow through subnormals to zero).
inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);          // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);         // rounds to >= 65520: infinity
  if (abs < 0x38800000u) {                                         // below the smallest normal: subnormal
    if (abs < 0x33000000u) return uint16_t(sign);                  // below half the smallest subnormal
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - int(abs >> 23);                        // 14..24
    uint32_t half = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rest > mid || (rest == mid && (half & 1u))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return uint16_t(sign | h);
}

}  // namespace uneven
