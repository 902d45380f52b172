// Liveness of the other ranks: UDP heartbeats between every pair, so a lost peer ends the job in seconds.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/collective.h"

namespace uneven {

// A collective blocked on a peer that is gone (link down, host frozen or powered off) may wait forever:
// OpenMPI's TCP path does not notice a silent peer. Every rank therefore sends a small datagram to every
// other rank every `interval_s`, from its own thread (so a rank busy computing still beats), and a peer not
// heard from for `timeout_s` is declared lost: `on_lost` runs (by default: print which rank was lost and
// end this rank, so that mpirun ends the job). Heartbeats are independent of the collectives, so a
// long prompt or a slow load on one rank does not trip it, and a datagram lost now and then (1% loss,
// jitter) costs nothing: it takes `timeout_s / interval_s` consecutive losses.
struct PeerWatchdogOptions {
  double interval_s = 0.25;
  double timeout_s = 5.0;  // > 0 (run_setup starts no watchdog for --peer-timeout 0)
};

struct LostPeer {
  int rank = -1;
  std::string host;
  double silent_s = 0;
};

class PeerWatchdog {
 public:
  using OnLost = std::function<void(const LostPeer&)>;
  // Every rank calls it together: the ranks exchange their addresses and a job token through `comm`.
  // Throws uneven::Error when no UDP socket can be opened.
  PeerWatchdog(Collective& comm, PeerWatchdogOptions options, OnLost on_lost = {});
  // Tells the peers this rank is leaving (so its silence is not a loss), then stops the threads.
  ~PeerWatchdog();
  PeerWatchdog(const PeerWatchdog&) = delete;
  PeerWatchdog& operator=(const PeerWatchdog&) = delete;

  // Seconds since each rank was last heard from (0 for this rank; negative for a rank that said goodbye).
  std::vector<double> silence_s() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::thread sender_, receiver_;
};

// The default reaction: "error: rank R lost rank P (host H): nothing heard from it for S s ..." on stderr,
// then this process ends with exit code 3 (mpirun then stops the ranks it can still reach).
void exit_on_lost_peer(int my_rank, const LostPeer& lost);

}  // namespace uneven
