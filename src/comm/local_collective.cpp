// The single-process collective group: every operation is the identity.
#include <cstring>

#include "comm/collective.h"
#include "util/error.h"

namespace uneven {
namespace {

class LocalCollective final : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(float*, int64_t) override {}
  void broadcast(void*, int64_t, int root) override {
    if (root != 0) fail("broadcast from rank {} in a group of 1 rank", root);
  }
  void all_gather(const float* local, const std::vector<int64_t>& counts, float* out) override {
    if (counts.size() != 1) fail("all_gather with {} counts in a group of 1 rank", counts.size());
    if (out != local && counts[0] > 0) std::memcpy(out, local, size_t(counts[0]) * sizeof(float));
  }
  void barrier() override {}
  std::string name() const override { return "local"; }
};

}  // namespace

std::unique_ptr<Collective> make_local_collective() { return std::make_unique<LocalCollective>(); }

}  // namespace uneven
