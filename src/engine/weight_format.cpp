// The planner's view of a model's stored weight types (see weight_format.h).
#include "engine/weight_format.h"

#include <cmath>
#include <numeric>
#include <set>

#include "engine/arch.h"

namespace uneven {
namespace {

bool splits_input_dimension(SplitRole r) {
  return r == SplitRole::QHeadCols || r == SplitRole::MlpCols || r == SplitRole::ExpertCols ||
         r == SplitRole::SharedExpertCols || r == SplitRole::LinearVCols;
}

}  // namespace

WeightFormat weight_format_of(const WeightType& type) {
  if (!is_quantized(type.dtype)) return parse_dtype(type.dtype == DType::F32 ? "f32" : type.dtype == DType::F16 ? "f16" : "bf16");
  WeightFormat f;
  f.quantized = true;
  f.group = type.block_elems();
  f.bits = int(type.block_bytes() * 8 / f.group);
  f.scale_bytes = int(type.block_bytes() - f.group * f.bits / 8);
  f.name = std::string(dtype_name(type.dtype));
  return f;
}

WeightFormat stored_weight_format(const ModelConfig& c, const WeightSource& source) {
  double bytes = 0, elems = 0;
  int64_t group = 1;
  bool quantized = false, any_f32 = false;
  std::set<std::string> names, seen;
  auto visit = [&](const TensorSpec& spec) {
    const TensorInfo* t = source.find(spec.name);
    if (!t && spec.stacked) t = source.find(spec.stacked->name);
    for (size_t i = 0; !t && i < spec.stacked_alternatives.size(); ++i) t = source.find(spec.stacked_alternatives[i].name);
    if (!t || t->shape.size() < 2) return;
    const WeightType type = t->type();
    if (is_quantized(type.dtype)) {
      quantized = true;
      names.insert(std::string(dtype_name(type.dtype)));
      if (splits_input_dimension(spec.role)) group = std::lcm(group, type.block_elems());
    }
    any_f32 |= type.dtype == DType::F32;
    if (!seen.insert(t->name).second) return;  // a stacked tensor counts once
    bytes += double(t->nbytes);
    elems += double(t->numel());
  };
  for (const TensorSpec& s : global_tensors(c)) visit(s);
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (const TensorSpec& s : layer_tensors(c, l)) visit(s);
  if (!quantized) return parse_dtype(any_f32 ? "f32" : "bf16");
  WeightFormat f;
  f.quantized = true;
  f.group = group;
  const double bits = elems > 0 ? bytes * 8 / elems : 8;
  f.bits = std::clamp(int(std::floor(bits)), 1, 32);
  f.scale_bytes = std::max(0, int(std::lround((bits - f.bits) * double(group) / 8)));
  f.name.clear();
  for (const std::string& n : names) f.name += (f.name.empty() ? "" : "+") + n;
  return f;
}

}  // namespace uneven
