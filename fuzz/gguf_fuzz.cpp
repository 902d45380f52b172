// libFuzzer harness: GGUF reader (TensorFiles::open_gguf), its config/tokenizer metadata, and quantized-block reads.
#include <algorithm>
#include <vector>

#include "fuzz_common.h"
#include "model/config.h"
#include "model/tensor_file.h"
#include "quant/blocks.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::MemFile file(data, size);
  fuzz::expect_error_or_success("gguf", [&] {
    const uneven::TensorFiles tf = uneven::TensorFiles::open_gguf(file.path());
    // Every tensor the table admits must be readable; small ones are dequantized (the block readers).
    for (const uneven::TensorInfo& t : tf.tensors()) {
      if (t.nbytes > (1u << 20)) continue;
      fuzz::expect_error_or_success("gguf read", [&] {
        const uneven::TensorBytes all = tf.read_all(t);
        if (all.size() != t.nbytes) __builtin_trap();
        const int64_t n = t.numel();
        if (n > 0 && n <= (1 << 18)) {
          std::vector<float> out(static_cast<size_t>(n));
          uneven::quant::dequantize_row_ref(t.type(), all.data(), n, out.data());
        }
        if (t.shape.size() == 2 && t.shape[1] > 1) (void)tf.read_cols(t, 0, t.shape[1] / 2);
        if (t.rows() > 1) (void)tf.read_rows(t, t.rows() / 2, t.rows());
      });
    }
    fuzz::expect_error_or_success("gguf config", [&] {
      (void)uneven::config_from_gguf_metadata(tf.metadata(), "fuzz.gguf");
    });
    fuzz::expect_error_or_success("gguf tokenizer", [&] {
      auto tok = uneven::tokenizer_from_gguf_metadata(tf.metadata(), "fuzz.gguf");
      const auto ids = tok->encode("Hello world, <s> \xff\xfe caf\xc3\xa9 once upon a time", true);
      (void)tok->decode(ids, false);
      (void)tok->decode({0, 1, 2, 3, -1, 1 << 30}, true);
    });
  });
  return 0;
}
