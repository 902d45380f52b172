// uneven_delayline: a delay line for kernels without netem. Forwards Ethernet frames between two interfaces
// (veth ends, through AF_PACKET sockets) in both directions, each frame after a fixed delay plus optional
// jitter, in order (jitter never reorders), through a bounded queue per direction (frames beyond it are
// dropped and counted). Exits cleanly on SIGTERM or SIGINT, printing its counts on stderr.
//
// Usage: uneven_delayline --a IFACE --b IFACE --delay-us D [--jitter-us J] [--queue FRAMES] [--seed S]
//
// Frames keep their offload state: the sockets use PACKET_VNET_HDR, so a TCP segment larger than the MTU
// (GSO) or one whose checksum is left to the device passes through as it came, without ethtool.
// scripts/netns_cluster.sh runs one per host between the host's veth and the bridge.
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <deque>
#include <random>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int64_t now_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "uneven_delayline: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

int open_port(const std::string& ifname) {
  const unsigned idx = ::if_nametoindex(ifname.c_str());
  if (idx == 0) die("no interface " + ifname);
  const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0) die("socket(AF_PACKET) (needs root / CAP_NET_RAW)");
  int one = 1;
  if (::setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) != 0) die("PACKET_VNET_HDR");
#ifdef PACKET_IGNORE_OUTGOING
  ::setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);  // our own sends (checked again below)
#endif
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = int(idx);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0) die("bind " + ifname);
  packet_mreq mr{};
  mr.mr_ifindex = int(idx);
  mr.mr_type = PACKET_MR_PROMISC;
  if (::setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) != 0) die("promiscuous " + ifname);
  int buf = 4 << 20;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  return fd;
}

struct Frame {
  int64_t due_ns;
  std::vector<char> bytes;  // virtio_net_hdr + Ethernet frame
};

struct Direction {
  const char* name;
  int in = -1, out = -1;
  std::deque<Frame> queue;
  int64_t last_due = 0;
  uint64_t forwarded = 0, dropped_full = 0, dropped_big = 0, send_errors = 0;
};

struct Options {
  std::string a, b;
  int64_t delay_ns = 0, jitter_ns = 0;
  size_t queue = 8192;
  uint64_t seed = 1;
};

Options parse(int argc, char** argv) {
  Options o;
  bool have_delay = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "uneven_delayline: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--a") o.a = value();
    else if (arg == "--b") o.b = value();
    else if (arg == "--delay-us") o.delay_ns = int64_t(std::stod(value()) * 1000), have_delay = true;
    else if (arg == "--jitter-us") o.jitter_ns = int64_t(std::stod(value()) * 1000);
    else if (arg == "--queue") o.queue = size_t(std::stoul(value()));
    else if (arg == "--seed") o.seed = std::stoull(value());
    else {
      std::fprintf(stderr,
                   "usage: uneven_delayline --a IFACE --b IFACE --delay-us D [--jitter-us J] [--queue FRAMES] "
                   "[--seed S]\n");
      std::exit(2);
    }
  }
  if (o.a.empty() || o.b.empty() || !have_delay || o.delay_ns < 0 || o.jitter_ns < 0 || o.queue == 0) {
    std::fprintf(stderr, "uneven_delayline: --a, --b and --delay-us (>= 0) are required\n");
    std::exit(2);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  ::prctl(PR_SET_TIMERSLACK, 1UL);  // wake when asked, not up to 50 us later

  // SIGTERM/SIGINT are blocked except while waiting in ppoll: no signal is lost between the check and the wait.
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  sigset_t block, wait_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  ::sigprocmask(SIG_BLOCK, &block, &wait_mask);
  sigdelset(&wait_mask, SIGTERM);
  sigdelset(&wait_mask, SIGINT);

  const int fa = open_port(opt.a), fb = open_port(opt.b);
  Direction dirs[2];
  dirs[0].name = "a->b", dirs[0].in = fa, dirs[0].out = fb;
  dirs[1].name = "b->a", dirs[1].in = fb, dirs[1].out = fa;
  std::mt19937_64 rng(opt.seed);
  std::uniform_int_distribution<int64_t> jitter(-opt.jitter_ns, opt.jitter_ns);
  std::vector<char> buf(size_t(256) << 10);  // a GSO frame is at most 64 KiB (more with BIG TCP)

  while (!g_stop) {
    // Receive what is there (bounded per pass so one direction cannot starve the other).
    for (Direction& d : dirs) {
      for (int n = 0; n < 256; ++n) {
        sockaddr_ll from{};
        socklen_t fl = sizeof from;
        const ssize_t k = ::recvfrom(d.in, buf.data(), buf.size(), MSG_TRUNC, reinterpret_cast<sockaddr*>(&from), &fl);
        if (k < 0) break;  // EAGAIN (or an error: try again next pass)
        if (from.sll_pkttype == PACKET_OUTGOING) continue;  // what we sent ourselves
        if (size_t(k) > buf.size()) {
          ++d.dropped_big;
          continue;
        }
        if (d.queue.size() >= opt.queue) {
          ++d.dropped_full;
          continue;
        }
        int64_t due = now_ns() + opt.delay_ns + (opt.jitter_ns > 0 ? jitter(rng) : 0);
        due = std::max(due, d.last_due);  // in order
        d.last_due = due;
        d.queue.push_back(Frame{due, std::vector<char>(buf.data(), buf.data() + k)});
      }
    }
    // Send what is due.
    const int64_t t = now_ns();
    bool out_blocked[2] = {false, false};
    for (int i = 0; i < 2; ++i) {
      Direction& d = dirs[i];
      while (!d.queue.empty() && d.queue.front().due_ns <= t) {
        const Frame& f = d.queue.front();
        const ssize_t k = ::send(d.out, f.bytes.data(), f.bytes.size(), 0);
        if (k < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
          out_blocked[i] = true;
          break;
        }
        if (k < 0) ++d.send_errors;
        else ++d.forwarded;
        d.queue.pop_front();
      }
    }
    // Wait for input, room to send, or the next frame's due time.
    int64_t next = -1;
    for (const Direction& d : dirs)
      if (!d.queue.empty() && (next < 0 || d.queue.front().due_ns < next)) next = d.queue.front().due_ns;
    pollfd pfd[2] = {{fa, short(POLLIN | (out_blocked[1] ? POLLOUT : 0)), 0},
                     {fb, short(POLLIN | (out_blocked[0] ? POLLOUT : 0)), 0}};
    timespec ts{1, 0}, *timeout = &ts;  // at most 1 s without anything
    if (next >= 0) {
      const int64_t wait = std::max<int64_t>(0, next - now_ns());
      ts.tv_sec = time_t(wait / 1000000000);
      ts.tv_nsec = long(wait % 1000000000);
    }
    if (out_blocked[0] || out_blocked[1]) ts = {0, 50000};  // a blocked send is retried soon
    ::ppoll(pfd, 2, timeout, &wait_mask);
  }
  for (const Direction& d : dirs)
    std::fprintf(stderr, "uneven_delayline %s: forwarded %llu, dropped (queue full) %llu, (too big) %llu, send errors %llu, "
                 "left queued %zu\n", d.name, (unsigned long long)d.forwarded, (unsigned long long)d.dropped_full,
                 (unsigned long long)d.dropped_big, (unsigned long long)d.send_errors, d.queue.size());
  ::close(fa);
  ::close(fb);
  return 0;
}
