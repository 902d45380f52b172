// Placeholder for the `tokenize` subcommand until its implementation lands (replaced in this session).
#include "cli/commands.h"
#include "util/error.h"

namespace uneven::cli {
Action register_tokenize(CLI::App& app) {
  app.add_subcommand("tokenize", "(not yet available)");
  return [] () -> int { fail("the tokenize subcommand is not built yet"); };
}
}  // namespace uneven::cli
