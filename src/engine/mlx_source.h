// Weights of mlx-lm checkpoints (affine-quantized or not) under Hugging Face names and shapes.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>

#include "engine/weight_source.h"
#include "model/tensor_file.h"

namespace uneven {

// The quantization block of an mlx-lm config.json (`quantization`, or its copy `quantization_config`,
// with group_size and bits), or null when the checkpoint is not MLX-quantized.
const nlohmann::json* mlx_quantization(const nlohmann::json& config);

// Presents each quantized module (U32 `weight` + `scales` + `biases`) as one MLX4 / MLX8 tensor of the
// Hugging Face shape; renames mlx-lm's language_model / switch_mlp / conv1d layouts back to Hugging
// Face's. Checks every quantized module's shapes against config.json's group size and bits (a per-module
// override of a mixed recipe included) and throws naming the module and the numbers.
std::unique_ptr<WeightSource> make_mlx_weight_source(std::shared_ptr<const TensorFiles> files,
                                                     const nlohmann::json& quantization);

}  // namespace uneven
