// Re-running the executable under mpirun for single-machine multi-rank runs.
#include "cli/launcher.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>

#include "util/error.h"

extern char** environ;

namespace uneven::cli {
namespace {
std::vector<std::string> g_args;
}

void set_original_args(int argc, char** argv) { g_args.assign(argv, argv + argc); }
const std::vector<std::string>& original_args() { return g_args; }

int relaunch_under_mpirun(int ranks) {
  char self[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) fail("cannot find this executable's path to start {} ranks", ranks);
  self[n] = '\0';
  std::vector<std::string> args = {"mpirun", "-np", std::to_string(ranks), "--oversubscribe"};
  if (::geteuid() == 0) args.push_back("--allow-run-as-root");
  args.push_back(self);
  for (size_t i = 1; i < g_args.size(); ++i) {
    const std::string& a = g_args[i];
    if (a == "--ranks") {
      ++i;  // drop its value too
      continue;
    }
    if (a.rfind("--ranks=", 0) == 0) continue;
    args.push_back(a);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (int rc = ::posix_spawnp(&pid, "mpirun", nullptr, nullptr, argv.data(), environ); rc != 0)
    fail("cannot start mpirun for {} ranks (is openmpi-bin installed?): error {}", ranks, rc);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace uneven::cli
