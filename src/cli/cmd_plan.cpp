// Placeholder for the `plan` subcommand until its implementation lands (replaced in this session).
#include "cli/commands.h"
#include "util/error.h"

namespace uneven::cli {
Action register_plan(CLI::App& app) {
  app.add_subcommand("plan", "(not yet available)");
  return [] () -> int { fail("the plan subcommand is not built yet"); };
}
}  // namespace uneven::cli
