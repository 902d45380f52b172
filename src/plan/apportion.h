// Continuous target shares (water-filling) and their rounding to whole aligned units with carried error.
#pragma once
#include <cstdint>
#include <vector>

namespace uneven {

// One node in the continuous problem. Its share t (of everything that is split) must satisfy 0 <= t <= cap
// (memory); its time per token is (fixed_read + t * split_read) / bandwidth.
struct FillNode {
  double cap = 0.0;
  double fixed_read = 0.0;
  double bandwidth = 1.0;
};

// The shares (summing to 1) minimising the slowest node's time, max_i (fixed_read_i + t_i * split_read) /
// bandwidth_i, within the caps: every node not at its cap or at 0 finishes at the same time T (the water
// level). Requires sum of caps >= 1. Deterministic (bisection on T).
std::vector<double> water_fill(const std::vector<FillNode>& nodes, double split_read);

// Splits one dimension (heads, columns, rows) layer after layer among ranks in rank order, each rank's
// share contiguous. Shares are whole blocks of `align` elements (the last block of a dimension may be
// partial); the difference between a rank's target and what it got is carried to the next layer of the same
// dimension, so every rank's running total stays within about one block of target x running size, with no
// drift toward any rank.
//
// With `group` > 0 the elements come in groups of `group` (query heads per KV head, value heads per linear
// key head) and a boundary strictly inside a group makes that group's shared part (the KV head) held by one
// more rank. After rounding, while some group holds two or more distinct boundaries, a boundary of such a
// group is moved to the group's edge, provided the carry of the two ranks it separates stays within
// kSnapCarryUnits units (so no rank's running total moves further from its target than that): later layers
// pay the difference back. A moved boundary may empty a rank in this layer; the carry then gives it more later.
class Apportioner {
 public:
  // How far (in units) snapping may leave a rank's running total from its target. The plain rounding keeps
  // it within one unit; one unit more would double the worst case, so snapping stays within the same bound.
  static constexpr double kSnapCarryUnits = 1.0;

  explicit Apportioner(std::vector<double> targets);
  // Returns ranks+1 boundaries from 0 to size.
  std::vector<int64_t> split(int64_t size, int64_t align, int64_t group = 0);

 private:
  // Moves boundaries inside crowded groups to group edges within the carry bound (see the class comment).
  void snap_to_groups(std::vector<int64_t>& bounds, int64_t size, int64_t align, int64_t group) const;

  std::vector<double> targets_;
  std::vector<double> carry_;  // elements owed to each rank (positive: it got less than its target)
};

}  // namespace uneven
