// The link probe at start: every rank gets rank 0's median all-reduce time and broadcast bandwidth; one
// rank measures nothing.
#include <gtest/gtest.h>

#include <thread>

#include "comm/collective.h"
#include "runtime/cluster.h"

namespace uneven {
namespace {

TEST(LinkProbe, EveryRankGetsRankZerosFigures) {
  auto group = make_thread_group(3);
  std::vector<LinkSpec> got(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) threads.emplace_back([&, r] { got[size_t(r)] = measure_link(*group[size_t(r)], 2048); });
  for (auto& t : threads) t.join();
  EXPECT_GT(got[0].all_reduce_s, 0.0);
  EXPECT_LT(got[0].all_reduce_s, 1.0);  // threads of one process: far below a second
  EXPECT_GT(got[0].bandwidth, 1e6);
  EXPECT_EQ(got[1], got[0]);
  EXPECT_EQ(got[2], got[0]);
}

TEST(LinkProbe, OneRankOrNoHiddenSizeMeasuresNothing) {
  auto one = make_local_collective();
  EXPECT_FALSE(measure_link(*one, 2048).modelled());
  auto group = make_thread_group(2);
  std::vector<LinkSpec> got(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) threads.emplace_back([&, r] { got[size_t(r)] = measure_link(*group[size_t(r)], 0); });
  for (auto& t : threads) t.join();
  EXPECT_FALSE(got[0].modelled());
  EXPECT_FALSE(got[1].modelled());
}

}  // namespace
}  // namespace uneven
