// UDP heartbeats between ranks: one sender and one receiver thread per rank, addresses exchanged at start.
#include "comm/peer_watchdog.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <csignal>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>

#include "util/error.h"

namespace uneven {
namespace {

constexpr char kMagic[8] = {'U', 'N', 'E', 'V', 'E', 'N', 'H', 'B'};
constexpr uint32_t kBeat = 0, kBye = 1;
constexpr int kMaxAddresses = 16;

// What a datagram holds: the job's token (so a stray datagram of another job is ignored), the sender's
// rank and whether it is a heartbeat or a goodbye.
struct Datagram {
  char magic[8];
  uint64_t token;
  uint32_t rank;
  uint32_t kind;
};

// One rank's reachable addresses, as exchanged at start (fixed size: one broadcast per rank).
struct Contact {
  uint16_t port = 0;
  uint16_t count = 0;
  uint32_t ipv4[kMaxAddresses] = {};  // network byte order
  char host[64] = {};
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Every IPv4 address of an interface that is up, loopback included: a peer in the same host (or network
// namespace) is reached through it, one elsewhere through the others. Sending to an address that is not the
// peer's is harmless: a datagram only ever proves its sender alive.
void local_addresses(Contact& c) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (ifaddrs* a = list; a && c.count < kMaxAddresses; a = a->ifa_next) {
      if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || !(a->ifa_flags & IFF_UP)) continue;
      c.ipv4[c.count++] = reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr;
    }
    ::freeifaddrs(list);
  }
  if (c.count == 0) c.ipv4[c.count++] = htonl(INADDR_LOOPBACK);
  ::gethostname(c.host, sizeof c.host - 1);
}

}  // namespace

struct PeerWatchdog::State {
  int rank = 0, size = 0;
  int fd = -1;
  uint64_t token = 0;
  PeerWatchdogOptions options;
  OnLost on_lost;
  std::vector<Contact> contacts;
  mutable std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  bool fired = false;
  std::vector<double> last_heard;  // steady seconds
  std::vector<bool> left;          // said goodbye: its silence is not a loss

  void send_all(uint32_t kind) const {
    const Datagram d = [&] {
      Datagram x{};
      std::memcpy(x.magic, kMagic, sizeof kMagic);
      x.token = token;
      x.rank = uint32_t(rank);
      x.kind = kind;
      return x;
    }();
    for (int p = 0; p < size; ++p) {
      if (p == rank) continue;
      for (int i = 0; i < contacts[size_t(p)].count; ++i) {
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(contacts[size_t(p)].port);
        to.sin_addr.s_addr = contacts[size_t(p)].ipv4[i];
        (void)::sendto(fd, &d, sizeof d, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&to), sizeof to);
      }
    }
  }

  void send_loop() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      lock.unlock();
      send_all(kBeat);
      lock.lock();
      wake.wait_for(lock, std::chrono::duration<double>(options.interval_s), [&] { return stopping; });
    }
  }

  void receive_loop() {
    double last_turn = now_s();
    while (true) {
      pollfd p{fd, POLLIN, 0};
      const int ready = ::poll(&p, 1, 100);
      Datagram d{};
      if (ready > 0 && ::recv(fd, &d, sizeof d, MSG_DONTWAIT) == ssize_t(sizeof d) &&
          std::memcmp(d.magic, kMagic, sizeof kMagic) == 0 && d.token == token && d.rank < uint32_t(size) &&
          int(d.rank) != rank) {
        std::lock_guard lock(mutex);
        last_heard[d.rank] = now_s();
        if (d.kind == kBye) left[d.rank] = true;
      }
      LostPeer lost;
      {
        std::lock_guard lock(mutex);
        if (stopping) return;
        const double now = now_s();
        // This loop turns every 100 ms; a far longer gap means this process itself was stopped (SIGSTOP,
        // a suspended VM) or starved: its peers were not silent, it was not listening. Start afresh.
        if (now - last_turn > std::min(1.0, options.timeout_s / 2))
          for (double& t : last_heard) t = std::max(t, now);
        last_turn = now;
        for (int r = 0; r < size && !fired; ++r) {
          if (r == rank || left[size_t(r)] || now - last_heard[size_t(r)] <= options.timeout_s) continue;
          fired = true;
          lost = {r, contacts[size_t(r)].host, now - last_heard[size_t(r)]};
        }
      }
      if (lost.rank >= 0) {
        if (on_lost) on_lost(lost);
        else exit_on_lost_peer(rank, lost);
      }
    }
  }
};

PeerWatchdog::PeerWatchdog(Collective& comm, PeerWatchdogOptions options, OnLost on_lost)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.rank = comm.rank();
  s.size = comm.size();
  s.options = options;
  s.on_lost = std::move(on_lost);
  // Each rank opens its socket first; one that cannot still takes part in the exchange (port 0), so that
  // every rank throws together instead of some waiting in a broadcast.
  s.fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  Contact mine;
  if (s.fd >= 0) {
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof any;
    if (::bind(s.fd, reinterpret_cast<sockaddr*>(&any), sizeof any) == 0 &&
        ::getsockname(s.fd, reinterpret_cast<sockaddr*>(&any), &len) == 0)
      mine.port = ntohs(any.sin_port);
  }
  local_addresses(mine);
  s.contacts.resize(size_t(s.size));
  for (int r = 0; r < s.size; ++r) {
    Contact c = r == s.rank ? mine : Contact{};
    comm.broadcast(&c, sizeof c, r);
    c.host[sizeof c.host - 1] = '\0';
    s.contacts[size_t(r)] = c;
  }
  uint64_t token = std::random_device{}() * 0x9e3779b97f4a7c15ull ^ uint64_t(::getpid());
  comm.broadcast(&token, sizeof token, 0);
  s.token = token;
  for (int r = 0; r < s.size; ++r)
    if (s.contacts[size_t(r)].port == 0) {
      if (s.fd >= 0) ::close(s.fd);
      fail("rank {} ({}) could not open a UDP socket for the heartbeats between ranks", r, s.contacts[size_t(r)].host);
    }
  s.last_heard.assign(size_t(s.size), now_s());
  s.left.assign(size_t(s.size), false);
  sender_ = std::thread([st = state_] { st->send_loop(); });
  receiver_ = std::thread([st = state_] { st->receive_loop(); });
}

PeerWatchdog::~PeerWatchdog() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
  }
  state_->wake.notify_all();
  sender_.join();
  receiver_.join();
  // Goodbye three times: a lost datagram must not make a peer that is still finishing report this rank.
  for (int i = 0; i < 3; ++i) state_->send_all(kBye);
  ::close(state_->fd);
}

std::vector<double> PeerWatchdog::silence_s() const {
  std::lock_guard lock(state_->mutex);
  const double now = now_s();
  std::vector<double> out(size_t(state_->size), 0.0);
  for (int r = 0; r < state_->size; ++r)
    if (r != state_->rank) out[size_t(r)] = state_->left[size_t(r)] ? -1.0 : now - state_->last_heard[size_t(r)];
  return out;
}

namespace {
// 1: this process's parent is Open MPI's launcher, 2: its per-host daemon, 0: neither.
int parent_mpi_role() {
  std::ifstream comm("/proc/" + std::to_string(::getppid()) + "/comm");
  std::string name;
  std::getline(comm, name);
  if (name == "mpirun" || name == "mpiexec" || name == "orterun" || name == "prterun") return 1;
  return name == "orted" || name == "prted" ? 2 : 0;
}
}  // namespace

void exit_on_lost_peer(int my_rank, const LostPeer& lost) {
  std::fprintf(stderr,
               "error: rank %d lost rank %d (host %s): nothing heard from it for %.1f s (link down, or the host "
               "frozen or gone); stopping\n",
               my_rank, lost.rank, lost.host.c_str(), lost.silent_s);
  std::fflush(stderr);
  // mpirun, told only that this rank exited, would try to end the job through the lost host's daemon and
  // wait on it for as long as TCP keeps retrying (minutes). mpirun (beside rank 0) ends the job on a first
  // SIGTERM and stops waiting for unreachable daemons on a second; a host's daemon cut off from mpirun
  // would linger, so it gets SIGKILL second. This rank ignores the SIGTERM forwarded to it meanwhile, so
  // that it lives to send the second signal.
  // The message above reaches the user through the launcher's forwarding of this rank's stderr: it gets
  // 300 ms to pass it on before it is told to stop (signalled at once, mpirun sometimes exited without it).
  if (const int role = parent_mpi_role(); role != 0) {
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
    const pid_t launcher = ::getppid();
    ::usleep(300 * 1000);
    ::kill(launcher, SIGTERM);
    ::usleep(500 * 1000);
    if (::getppid() == launcher) ::kill(launcher, role == 1 ? SIGTERM : SIGKILL);
  }
  std::_Exit(3);
}

}  // namespace uneven
