// Registration of the `uneven` subcommands; each lives in its own cmd_*.cpp.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace uneven::cli {

// Each register function adds its subcommand to `app` and returns the action to run when it is chosen.
// Actions return the process exit code; they may throw uneven::Error, which main() reports.
using Action = std::function<int()>;
Action register_generate(CLI::App& app);
Action register_tokenize(CLI::App& app);
Action register_bench(CLI::App& app);
Action register_plan(CLI::App& app);
Action register_quantize(CLI::App& app);
Action register_serve(CLI::App& app);
Action register_chat(CLI::App& app);

}  // namespace uneven::cli
