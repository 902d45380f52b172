// Placeholder for the `generate` subcommand until its implementation lands (replaced in this session).
#include "cli/commands.h"
#include "util/error.h"

namespace uneven::cli {
Action register_generate(CLI::App& app) {
  app.add_subcommand("generate", "(not yet available)");
  return [] () -> int { fail("the generate subcommand is not built yet"); };
}
}  // namespace uneven::cli
