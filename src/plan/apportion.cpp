// Water-filling by bisection on the finishing time; largest-remainder rounding with per-rank carry.
#include "plan/apportion.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "util/error.h"

namespace uneven {

std::vector<double> water_fill(const std::vector<FillNode>& nodes, double split_read) {
  const size_t n = nodes.size();
  double caps = 0;
  for (const FillNode& f : nodes) caps += std::max(0.0, f.cap);
  if (n == 0 || caps < 1.0 - 1e-12) fail("water_fill: caps sum to {} < 1 over {} nodes", caps, n);
  const double read = std::max(split_read, 1e-30);
  auto share_at = [&](double level, size_t i) {
    const FillNode& f = nodes[i];
    double t = (level * f.bandwidth - f.fixed_read) / read;
    return std::clamp(t, 0.0, std::max(0.0, f.cap));
  };
  auto total_at = [&](double level) {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += share_at(level, i);
    return s;
  };
  // At `hi` every node is at its cap, so the shares sum to at least 1.
  double lo = 0, hi = 0;
  for (const FillNode& f : nodes) hi = std::max(hi, (f.fixed_read + std::max(0.0, f.cap) * read) / f.bandwidth);
  for (int it = 0; it < 200 && hi - lo > hi * 1e-15; ++it) {
    double mid = 0.5 * (lo + hi);
    (total_at(mid) >= 1.0 ? hi : lo) = mid;
  }
  std::vector<double> t(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += t[i] = share_at(hi, i);
  for (double& x : t) x /= sum;  // sum is 1 up to bisection precision
  return t;
}

Apportioner::Apportioner(std::vector<double> targets) : targets_(std::move(targets)), carry_(targets_.size(), 0.0) {}

std::vector<int64_t> Apportioner::split(int64_t size, int64_t align, int64_t group) {
  const size_t n = targets_.size();
  const int64_t units = (size + align - 1) / align;
  // Ideal units this layer: the target plus what earlier layers owe; negative debts wait (clamped at 0),
  // then the ideals are rescaled to the units there are.
  std::vector<double> ideal(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += ideal[i] = std::max(0.0, (targets_[i] * double(size) + carry_[i]) / double(align));
  for (size_t i = 0; i < n; ++i) ideal[i] = sum > 0 ? ideal[i] * double(units) / sum : targets_[i] * double(units);
  std::vector<int64_t> got(n);
  int64_t given = 0;
  for (size_t i = 0; i < n; ++i) given += got[i] = std::min<int64_t>(int64_t(std::floor(ideal[i])), units);
  // Largest remainders get the units left; ties go to the lower rank, so the result is deterministic.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ideal[a] - double(got[a]) > ideal[b] - double(got[b]);
  });
  for (size_t k = 0; given < units; k = (k + 1) % n) {
    ++got[order[k]];
    ++given;
  }
  for (size_t k = n; given > units && k-- > 0;) {  // only when floors overshot through rounding error
    size_t i = order[k];
    if (got[i] > 0) --got[i], --given;
  }
  std::vector<int64_t> bounds(n + 1, 0);
  int64_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    at += got[i];
    bounds[i + 1] = std::min(size, at * align);
  }
  if (group > 0) snap_to_groups(bounds, size, align, group);
  for (size_t i = 0; i < n; ++i) carry_[i] += targets_[i] * double(size) - double(bounds[i + 1] - bounds[i]);
  return bounds;
}

namespace {

// Boundaries strictly inside a group beyond the first, summed over groups: each distinct position inside a
// group adds one holder of that group's shared part, and one per group is all that fewer groups than ranks
// force. Coincident boundaries (an empty rank between) count once: they add one holder.
int64_t excess_in_groups(const std::vector<int64_t>& b, int64_t group) {
  int64_t excess = 0, last_group = -1, last_pos = -1;
  for (size_t i = 1; i + 1 < b.size(); ++i) {
    const int64_t p = b[i];
    if (p % group == 0 || p == last_pos) continue;
    if (p / group == last_group) ++excess;  // boundaries are sorted, so one group's positions are adjacent
    last_group = p / group, last_pos = p;
  }
  return excess;
}

}  // namespace

void Apportioner::snap_to_groups(std::vector<int64_t>& b, int64_t size, int64_t align, int64_t group) const {
  const size_t n = targets_.size();
  const double bound = kSnapCarryUnits * double(align) + 1e-9;
  // The carry rank r would have after this layer if it held [lo, hi).
  auto carry_with = [&](size_t r, int64_t lo, int64_t hi) { return carry_[r] + targets_[r] * double(size) - double(hi - lo); };
  // Each accepted move lowers the excess by one, so this ends within (ranks - 1) moves.
  for (int64_t excess = excess_in_groups(b, group); excess > 0;) {
    size_t best_i = 0;
    int64_t best_edge = 0;
    double best_cost = bound;
    for (size_t i = 1; i < n; ++i) {
      const int64_t p = b[i];
      if (p % group == 0) continue;
      const int64_t lo = p / group * group;
      for (int64_t edge : {lo, std::min(size, lo + group)}) {
        // Whole units, order kept (the neighbours' boundaries are not crossed).
        if ((edge % align != 0 && edge != size) || edge < b[i - 1] || edge > b[i + 1]) continue;
        const double cost = std::max(std::fabs(carry_with(i - 1, b[i - 1], edge)), std::fabs(carry_with(i, edge, b[i + 1])));
        if (cost > best_cost || (cost == best_cost && best_i != 0)) continue;  // ties: the first found (lower rank, lower edge)
        std::vector<int64_t> moved = b;
        moved[i] = edge;
        if (excess_in_groups(moved, group) >= excess) continue;
        best_i = i, best_edge = edge, best_cost = cost;
      }
    }
    if (best_i == 0) return;
    b[best_i] = best_edge;
    excess = excess_in_groups(b, group);
  }
}

}  // namespace uneven
