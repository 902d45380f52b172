// What the planner needs to know about how a model's weights are stored: bytes per element and the
// quantization block that every split of a matrix's input dimension must respect.
#pragma once
#include "engine/weight_source.h"
#include "model/config.h"
#include "plan/cost.h"

namespace uneven {

// Walks the architecture table over `source`: plain types give their element size; quantized ones a
// WeightFormat whose `bits` and `scale_bytes` reproduce their average bytes per element and whose
// `group` is the least common multiple of the block sizes of every matrix whose input dimension is
// split (o_proj, down_proj, out_proj, experts' down_proj), so that no split cuts a block.
WeightFormat stored_weight_format(const ModelConfig& config, const WeightSource& source);

// The planner's format for every matrix stored as `type` ("q4_k" -> 4 bits + 16 scale bytes per 256).
WeightFormat weight_format_of(const WeightType& type);

}  // namespace uneven
