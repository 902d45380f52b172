// The human-readable table `uneven plan` prints: per node its shares, bytes against budget and time.
#pragma once
#include <string>

#include "model/config.h"
#include "plan/plan.h"

namespace uneven {

std::string plan_report(const Plan& plan, const ModelConfig& config);

}  // namespace uneven
