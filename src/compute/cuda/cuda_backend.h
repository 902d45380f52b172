// The CUDA backend (built with -DUNEVEN_CUDA=ON): device buffers and kernels on one GPU, the weights it
// serves copied to the device once.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "compute/backend.h"

namespace uneven {

// Number of CUDA devices this process sees (0 without a driver or a GPU; never throws).
int cuda_device_count();

// A backend on GPU `device` holding `weights`. `memory_cap` (bytes, 0 = none) caps what the backend may
// allocate, to emulate a smaller card: exceeding it, or the device's free memory, throws Error naming the
// bytes asked for and available.
std::unique_ptr<Backend> make_cuda_backend(const ResidentWeights& weights, int device, uint64_t memory_cap = 0);

}  // namespace uneven
