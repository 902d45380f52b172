// libFuzzer harness: safetensors header reader (TensorFiles::open_safetensors_files) and tensor reads.
#include "fuzz_common.h"
#include "model/tensor_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::MemFile file(data, size);
  fuzz::expect_error_or_success("safetensors", [&] {
    const uneven::TensorFiles tf = uneven::TensorFiles::open_safetensors_files({file.path()});
    for (const uneven::TensorInfo& t : tf.tensors()) {
      if (t.nbytes > (1u << 20)) continue;
      fuzz::expect_error_or_success("safetensors read", [&] {
        const uneven::TensorBytes all = tf.read_all(t);
        if (all.size() != t.nbytes) __builtin_trap();
        if (t.shape.size() == 2 && t.shape[1] > 1) (void)tf.read_cols(t, 0, t.shape[1] / 2);
        (void)tf.find(t.name);
      });
    }
  });
  return 0;
}
