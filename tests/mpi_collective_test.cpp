// The MPI collective group, checked by running this test binary itself as 1 and 3 ranks under mpirun.
#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <numeric>

#include "comm/collective.h"
#include "util/error.h"

namespace uneven {
namespace {

// Rank body: returns 0 when every operation gave the expected values.
int rank_checks() {
  auto comm = make_mpi_collective();
  const int r = comm->rank(), n = comm->size();
  int errors = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "rank %d: %s\n", r, what);
      ++errors;
    }
  };
  std::vector<float> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(r + 1) * float(i);
  comm->all_reduce_sum(v.data(), int64_t(v.size()));
  const float ranks_sum = float(n * (n + 1) / 2);
  bool ok = true;
  for (size_t i = 0; i < v.size(); ++i) ok = ok && v[i] == ranks_sum * float(i);
  expect(ok, "all_reduce_sum");

  int64_t value = r == n - 1 ? 4242 : -1;
  comm->broadcast(&value, sizeof value, n - 1);
  expect(value == 4242, "broadcast");

  std::vector<int64_t> counts;
  for (int i = 0; i < n; ++i) counts.push_back(i + 2);
  std::vector<float> local(size_t(r + 2), float(r * 10));
  std::vector<float> out(size_t(std::accumulate(counts.begin(), counts.end(), int64_t(0))));
  comm->all_gather(local.data(), counts, out.data());
  size_t at = 0;
  ok = true;
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < i + 2; ++k) ok = ok && out[at++] == float(i * 10);
  expect(ok, "all_gather");
  comm->barrier();
  try {
    comm->broadcast(&value, sizeof value, n);
    expect(false, "broadcast from a rank outside the group must throw");
  } catch (const Error&) {
  }
  return errors == 0 ? 0 : 1;
}

int run_under_mpirun(int ranks) {
  char self[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  self[len > 0 ? len : 0] = '\0';
  std::string cmd = "mpirun --oversubscribe " + std::string(geteuid() == 0 ? "--allow-run-as-root " : "") + "-np " +
                    std::to_string(ranks) + " " + self + " 2>&1";
  return std::system(cmd.c_str());
}

TEST(MpiCollective, OneAndThreeRanksAgree) {
  EXPECT_EQ(run_under_mpirun(1), 0);
  EXPECT_EQ(run_under_mpirun(3), 0);
}

}  // namespace
}  // namespace uneven

int main(int argc, char** argv) {
  if (uneven::launched_by_mpirun()) return uneven::rank_checks();
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
