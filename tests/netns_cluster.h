// Test-only: a cluster of network namespaces (scripts/netns_cluster.sh) for the tests that run ranks across
// shaped links, brought down on destruction, and the check of whether this machine can make one.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "cli_run.h"

namespace uneven::testing {

inline const std::string kScript = std::string(UNEVEN_SOURCE_DIR) + "/scripts/netns_cluster.sh";
inline const std::string kModel = std::string(UNEVEN_SOURCE_DIR) + "/../shared/models/stories260K/stories260K.gguf";

// Why this machine cannot run the test ("" if it can).
inline std::string cannot_run() {
  if (::geteuid() != 0) return "needs root (ip netns)";
  const std::string probe = "unevenprobe" + std::to_string(::getpid());
  CliOutput add = run_shell("timeout 20 ip netns add " + probe);
  run_shell("ip netns del " + probe);
  if (add.exit_code != 0) return "ip netns add fails: " + add.text;
  if (run_shell("command -v mpirun").exit_code != 0) return "no mpirun";
  if (!std::filesystem::exists(kModel)) return "no model " + kModel;
  return "";
}

// A cluster of `n` namespaces, brought down on destruction (even when an assertion returned early).
class NetnsCluster {
 public:
  // `env`: variables for netns_cluster.sh, e.g. "UNEVEN_NETNS_DELAY=off " (rate shaping only).
  NetnsCluster(int n, const std::string& profile, const std::string& env = "") : n_(n) {
    static int count = 0;
    ++count;
    prefix_ = "ut" + std::to_string(::getpid()) + "x" + std::to_string(count) + "-";
    const int subnet = 100 + int((::getpid() + 37 * count) % 150);
    up_ = run_shell(env + "timeout -k 5 60 " + kScript + " up " + std::to_string(n) + " " + profile + " " + prefix_ + " " +
                    std::to_string(subnet));
    std::printf("netns_cluster up %d %s: exit %d\n%s", n, profile.c_str(), up_.exit_code, up_.text.c_str());
    if (up_.exit_code == 0) {
      // Which delay the link got (netem, the delay line, or rate only).
      CliOutput show = run_shell("timeout 20 " + kScript + " show " + prefix_);
      std::printf("%s", show.text.c_str());
    }
  }
  ~NetnsCluster() {
    CliOutput down = run_shell("timeout -k 5 60 " + kScript + " down " + prefix_);
    if (down.exit_code != 0) std::printf("netns_cluster down %s failed:\n%s", prefix_.c_str(), down.text.c_str());
    // Nothing of ours is left.
    CliOutput left = run_shell("ip netns list | grep -c '^" + prefix_ + "' || true");
    EXPECT_EQ(left.text.substr(0, 1), "0") << "namespaces left behind: " << left.text;
  }
  NetnsCluster(const NetnsCluster&) = delete;
  NetnsCluster& operator=(const NetnsCluster&) = delete;

  bool ok() const { return up_.exit_code == 0; }
  const std::string& up_output() const { return up_.text; }
  const std::string& prefix() const { return prefix_; }
  std::string ns(int k) const { return prefix_ + std::to_string(k); }
  std::string addr(int k) const {
    std::string a = run_shell(kScript + " addr " + prefix_ + " " + std::to_string(k)).text;
    while (!a.empty() && (a.back() == '\n' || a.back() == ' ')) a.pop_back();
    return a;
  }
  // The command line that runs mpirun (one rank per namespace) with these arguments, bounded by `timeout`.
  std::string mpirun_command(const std::string& args, int timeout_s = 120) const {
    return "timeout -k 10 " + std::to_string(timeout_s) + " " + kScript + " run " + prefix_ + " -- " + args;
  }
  // Process ids in namespace `k`, with their names (/proc/PID/comm).
  std::vector<std::pair<int, std::string>> processes(int k) const {
    std::vector<std::pair<int, std::string>> out;
    std::istringstream pids(run_shell("ip netns pids " + ns(k)).text);
    for (int pid; pids >> pid;) {
      std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
      std::string name;
      std::getline(comm, name);
      out.emplace_back(pid, name);
    }
    return out;
  }
  // mpirun (one rank per namespace) with these arguments, bounded by `timeout`.
  CliOutput mpirun(const std::string& args, int timeout_s = 120) const {
    return run_shell("timeout -k 10 " + std::to_string(timeout_s) + " " + kScript + " run " + prefix_ + " -- " + args);
  }

 private:
  int n_;
  std::string prefix_;
  CliOutput up_;
};

}  // namespace uneven::testing
