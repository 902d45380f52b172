// Names of weight types as the command line spells them.
#include "model/dtype.h"

#include <cctype>
#include <optional>

namespace uneven {

std::optional<WeightType> weight_type_from_name(std::string_view name, int32_t mlx_group) {
  std::string n;
  for (char c : name) n += char(std::tolower(static_cast<unsigned char>(c)));
  if (n == "f32") return WeightType(DType::F32);
  if (n == "f16") return WeightType(DType::F16);
  if (n == "bf16") return WeightType(DType::BF16);
  if (n == "mlx4") return WeightType(DType::MLX4, mlx_group, DType::BF16);
  if (n == "mlx8") return WeightType(DType::MLX8, mlx_group, DType::BF16);
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    std::string want(dtype_name(t));
    for (char& c : want) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (n == want) return WeightType(t);
  }
  return std::nullopt;
}

}  // namespace uneven
