// The picture of a plan `uneven plan --svg` writes: per node its memory budget and planned bytes, per layer part each node's share.
#pragma once
#include <string>

#include "model/config.h"
#include "plan/plan.h"

namespace uneven {

// A self-contained SVG document (no scripts, no external resources) of `plan` for `config`:
//  - per node a stacked bar of weights, KV cache, state and reserve against an outline of its memory budget,
//    all nodes on one scale (bytes to pixels), labelled with the node's name and GiB;
//  - per layer part (attention, linear attention, MLP, experts, shared expert, embedding, head) one bar per
//    node whose length is the share of that part the node holds, labelled with the percentage `uneven plan`
//    prints for it.
// Every bar is a <rect> with class "budget", "bytes <kind>" or "share" and a data-bytes / data-share
// attribute holding the number its width is drawn from, so tests (and curious readers) can check the
// drawing against the plan.
std::string plan_svg(const Plan& plan, const ModelConfig& config);

}  // namespace uneven
