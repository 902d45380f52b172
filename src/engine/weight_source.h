// Where the forward pass gets weight bytes from: model files on disk, or seeded random weights in memory.
#pragma once
#include <memory>
#include <string>

#include "model/config.h"
#include "model/tensor_file.h"

namespace uneven {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const TensorInfo* find(const std::string& name) const = 0;
  // Rows [begin, end) of the outermost dimension / columns [begin, end) of a 2-D tensor.
  virtual TensorBytes read_rows(const TensorInfo& t, int64_t begin, int64_t end) const = 0;
  virtual TensorBytes read_cols(const TensorInfo& t, int64_t begin, int64_t end) const = 0;
  TensorBytes read_all(const TensorInfo& t) const { return read_rows(t, 0, t.rows()); }
  // Bytes of tensor data read so far (files) or generated (random).
  virtual uint64_t bytes_touched() const = 0;
  virtual std::string describe() const = 0;
};

// Weights from a TensorFiles table (GGUF or safetensors); reads only the slices asked for.
std::unique_ptr<WeightSource> make_file_weight_source(std::shared_ptr<const TensorFiles> files);

// Seeded random weights for every tensor of the architecture table, like vLLM's dummy load format.
// Element values depend only on (seed, tensor name, element index), so any rank that generates any
// slice gets the same numbers as an unsplit run. Norm weights are near 1, other values ~ U(-a, a) with
// a = 1/sqrt(cols) so activations stay in range over many layers.
// Quantized types quantize each generated row (see RandomWeightSource::random_tensor_type for which).
std::unique_ptr<WeightSource> make_random_weight_source(const ModelConfig& config, const WeightType& type, uint64_t seed);

}  // namespace uneven
