// Entry point of the `uneven` executable: parses the subcommand and reports errors at the boundary.
#include <cstdio>
#include <exception>
#include <utility>
#include <vector>

#include "cli/commands.h"
#include "cli/launcher.h"
#include "util/error.h"

int main(int argc, char** argv) {
  uneven::cli::set_original_args(argc, argv);
  CLI::App app{"uneven: one LLM across machines of uneven memory and speed"};
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, uneven::cli::Action>> actions;
  auto add = [&](uneven::cli::Action (*reg)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    auto action = reg(app);
    actions.emplace_back(app.get_subcommands({}).at(before), std::move(action));
  };
  add(uneven::cli::register_generate);
  add(uneven::cli::register_tokenize);
  add(uneven::cli::register_bench);
  add(uneven::cli::register_plan);
  add(uneven::cli::register_quantize);
  add(uneven::cli::register_serve);
  add(uneven::cli::register_chat);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const uneven::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: internal: %s\n", e.what());
    return 2;
  }
  return 0;
}
