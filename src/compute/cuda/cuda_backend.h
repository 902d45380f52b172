// The CUDA backend (built with -DUNEVEN_CUDA=ON): device buffers and kernels on one GPU, the weights it
// serves copied to the device once.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "compute/backend.h"

namespace uneven {

// Number of CUDA devices this process sees (0 without a driver or a GPU; never throws).
int cuda_device_count();

// Device-to-device copy rate of GPU `device`, bytes read plus written per second (best of 5 copies of
// 256 MiB or a quarter of its free memory): the rate a decode step can read weights at, for planning.
double cuda_copy_bandwidth(int device);

// How batched products (prompts) compute. kFp32: weights dequantized to fp32, fp32 GEMM (CPU parity: the
// GPU tests hold it to 1e-4 of the CPU's logits; the default). kSplitBf16: tensor cores over 16-bit parts
// (activations hi + lo, quantized weights w1 + w2), about 2^-16 relative per product: 2-3x the work of
// kBf16 (tested to 1e-3). kBf16: tensor cores with activations rounded to 16 bits once (the usual mixed
// precision; fastest, least exact).
enum class PromptPrecision { kFp32, kSplitBf16, kBf16 };
// "fp32", "split-bf16", "bf16"; nullopt for anything else.
std::optional<PromptPrecision> prompt_precision_from_name(std::string_view name);

// A backend on GPU `device` holding `weights`. `memory_cap` (bytes, 0 = none) caps what the backend may
// allocate, to emulate a smaller card: exceeding it, or the device's free memory, throws Error naming the
// bytes asked for and available.
std::unique_ptr<Backend> make_cuda_backend(const ResidentWeights& weights, int device, uint64_t memory_cap = 0,
                                           PromptPrecision prompt = PromptPrecision::kFp32);

}  // namespace uneven
