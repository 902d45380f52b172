// `uneven tokenize`: one line of token ids per line of standard input.
#include <cstdio>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "cli/model_options.h"
#include "util/error.h"

namespace uneven::cli {

Action register_tokenize(CLI::App& app) {
  struct Options {
    std::string model_path;
    bool no_special = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of each line read on stdin");
  cmd->add_option("--model,-m", opt->model_path, "GGUF file or Hugging Face directory")->required();
  cmd->add_flag("--no-special", opt->no_special, "do not add BOS or other special tokens");
  return [opt]() -> int {
    OpenOptions o;
    o.random_weights = true;  // only the tokenizer and config are needed: no weights are read
    ModelFiles files = open_model(opt->model_path, o);
    if (!files.tokenizer) fail("{}: no tokenizer found", opt->model_path);
    std::string line;
    while (std::getline(std::cin, line)) {
      std::string out;
      for (TokenId id : files.tokenizer->encode(line, !opt->no_special)) out += (out.empty() ? "" : " ") + std::to_string(id);
      std::printf("%s\n", out.c_str());
    }
    return 0;
  };
}

}  // namespace uneven::cli
