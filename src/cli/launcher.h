// Starting N local ranks: `uneven generate --ranks N ...` re-runs itself under mpirun.
#pragma once
#include <string>
#include <vector>

namespace uneven::cli {

// The process's own command line, recorded by main().
void set_original_args(int argc, char** argv);
const std::vector<std::string>& original_args();

// Runs `mpirun -np ranks` on this same executable with the original arguments minus `--ranks N`,
// adding --oversubscribe (more ranks than cores on one host) and, as root, --allow-run-as-root.
// Returns mpirun's exit code.
int relaunch_under_mpirun(int ranks);

}  // namespace uneven::cli
