// Placeholder for the `bench` subcommand until its implementation lands (replaced in this session).
#include "cli/commands.h"
#include "util/error.h"

namespace uneven::cli {
Action register_bench(CLI::App& app) {
  app.add_subcommand("bench", "(not yet available)");
  return [] () -> int { fail("the bench subcommand is not built yet"); };
}
}  // namespace uneven::cli
