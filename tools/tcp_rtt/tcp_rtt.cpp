// Raw TCP round trips: `serve PORT` echoes fixed-size messages; `ping HOST PORT BYTES COUNT` sends BYTES,
// waits for them back, COUNT times (TCP_NODELAY, blocking), and prints the median and percentiles as JSON.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// Whole transfers with a bound: every wait ends after 10 s (a cut link must not hang a bench).
bool wait_fd(int fd, short events) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, 10000) == 1 && (p.revents & events);
}
bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    if (!wait_fd(fd, POLLOUT)) return false;
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k, n -= size_t(k);
  }
  return true;
}
bool recv_all(int fd, char* p, size_t n) {
  while (n > 0) {
    if (!wait_fd(fd, POLLIN)) return false;
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k, n -= size_t(k);
  }
  return true;
}
void no_delay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int usage() {
  std::fprintf(stderr, "usage: uneven_tcp_rtt serve PORT | ping HOST PORT BYTES COUNT\n");
  return 2;
}

// Echoes one client's messages (size from its 4-byte header), then exits.
int serve(int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 1) != 0) {
    std::perror("uneven_tcp_rtt: bind/listen");
    return 1;
  }
  std::printf("listening %d\n", port);
  std::fflush(stdout);
  pollfd p{s, POLLIN, 0};
  if (::poll(&p, 1, 60000) != 1) return 1;
  const int c = ::accept(s, nullptr, nullptr);
  no_delay(c);
  uint32_t bytes = 0;
  if (!recv_all(c, reinterpret_cast<char*>(&bytes), sizeof bytes) || bytes > (64u << 20)) return 1;
  std::vector<char> buf(bytes);
  while (recv_all(c, buf.data(), buf.size()) && send_all(c, buf.data(), buf.size())) {
  }
  ::close(c);
  ::close(s);
  return 0;
}

int ping(const char* host, int port, uint32_t bytes, int count) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(host, std::to_string(port).c_str(), &hints, &res) != 0 || !res) {
    std::fprintf(stderr, "uneven_tcp_rtt: cannot resolve %s\n", host);
    return 1;
  }
  int c = -1;
  for (int attempt = 0; attempt < 50 && c < 0; ++attempt) {  // the server may still be starting
    c = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(c, res->ai_addr, res->ai_addrlen) != 0) {
      ::close(c);
      c = -1;
      ::usleep(100 * 1000);
    }
  }
  ::freeaddrinfo(res);
  if (c < 0) {
    std::fprintf(stderr, "uneven_tcp_rtt: cannot connect to %s:%d\n", host, port);
    return 1;
  }
  no_delay(c);
  if (!send_all(c, reinterpret_cast<const char*>(&bytes), sizeof bytes)) return 1;
  std::vector<char> buf(bytes, 'x');
  std::vector<double> us;
  using clock = std::chrono::steady_clock;
  for (int i = 0; i < count + count / 10; ++i) {  // the first tenth warms up and is not counted
    const auto t0 = clock::now();
    if (!send_all(c, buf.data(), buf.size()) || !recv_all(c, buf.data(), buf.size())) {
      std::fprintf(stderr, "uneven_tcp_rtt: exchange %d failed\n", i);
      return 1;
    }
    if (i >= count / 10) us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
  }
  ::close(c);
  std::sort(us.begin(), us.end());
  auto at = [&](double q) { return us[std::min(us.size() - 1, size_t(q * double(us.size())))]; };
  std::printf("{\"bytes\": %u, \"round_trips\": %zu, \"median_us\": %.1f, \"p10_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f}\n",
              bytes, us.size(), at(0.5), at(0.1), at(0.9), at(0.99));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "serve") == 0) return serve(std::atoi(argv[2]));
  if (argc == 6 && std::strcmp(argv[1], "ping") == 0) {
    const int count = std::atoi(argv[5]);
    const long bytes = std::atol(argv[4]);
    if (count <= 0 || bytes <= 0 || bytes > (64l << 20)) return usage();
    return ping(argv[2], std::atoi(argv[3]), uint32_t(bytes), count);
  }
  return usage();
}
