// Test-only: runs `uneven serve` (or any command) in its own process group, waits for its "listening on" line,
// stops it with SIGTERM (SIGKILL after a bound), and raw HTTP exchanges for requests a client library would
// not send.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace uneven::testing {

class ServerProcess {
 public:
  // Starts `command` (a shell command line) and waits up to `timeout_s` for "listening on http://HOST:PORT".
  explicit ServerProcess(const std::string& command, int timeout_s = 120) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);  // its own group: mpirun and every rank are stopped together
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
    ::close(fds[1]);
    fd_ = fds[0];
    reader_ = std::thread([this] { read_output(); });
    std::unique_lock lock(mutex_);
    seen_.wait_for(lock, std::chrono::seconds(timeout_s), [&] { return port_ > 0 || eof_; });
  }
  ~ServerProcess() { stop(); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Waits up to timeout_s for the process to end by itself: its exit status, or -1 if it is still running.
  int wait_exit(double timeout_s) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    int status = 0;
    while (pid_ > 0 && std::chrono::steady_clock::now() < end) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return exited_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return exited_;
  }
  std::string output() const {
    std::lock_guard lock(mutex_);
    return output_;
  }
  // SIGTERM to the server (a --ranks launcher passes it on to the ranks), SIGKILL to its group after
  // timeout_s; the exit status (-1 when it had to be killed or was not running).
  int stop(int timeout_s = 30) {
    if (pid_ <= 0) return -1;
    if (exited_ >= 0) {  // already reaped by wait_exit: only what is left of its group
      ::kill(-pid_, SIGKILL);
      pid_ = -1;
      done_ = true;
      if (reader_.joinable()) reader_.join();
      ::close(fd_);
      return exited_;
    }
    ::kill(pid_, SIGTERM);
    int status = 0, code = -1;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < end) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (code == -1) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    ::kill(-pid_, SIGKILL);  // whatever of the group is left (ranks mpirun did not stop)
    pid_ = -1;
    done_ = true;
    if (reader_.joinable()) reader_.join();
    ::close(fd_);
    return code;
  }

 private:
  void read_output() {
    char buf[4096];
    while (!done_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      std::lock_guard lock(mutex_);
      if (n <= 0) {
        eof_ = true;
        seen_.notify_all();
        return;
      }
      output_.append(buf, size_t(n));
      const size_t at = output_.find("listening on http://");
      const size_t eol = at == std::string::npos ? at : output_.find('\n', at);
      if (port_ == 0 && eol != std::string::npos) {
        port_ = std::stoi(output_.substr(output_.rfind(':', eol) + 1, eol));
        seen_.notify_all();
      }
    }
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  std::thread reader_;
  mutable std::mutex mutex_;
  std::condition_variable seen_;
  std::string output_;
  int port_ = 0;
  int exited_ = -1;
  bool eof_ = false;
  std::atomic<bool> done_{false};
};

// A loopback connection for raw requests; closed on destruction.
struct RawConnection {
  int fd = -1;
  explicit RawConnection(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) close();
  }
  ~RawConnection() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  bool send_all(const std::string& bytes) {
    for (size_t sent = 0; sent < bytes.size();) {
      const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += size_t(n);
    }
    return true;
  }
  // Reads until `until` appears, the peer closes, or timeout_ms passes; returns all read so far.
  std::string read_until(const std::string& until, int timeout_ms = 30000) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < end && (until.empty() || got.find(until) == std::string::npos)) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, size_t(n));
    }
    return got;
  }
  std::string got;
};

}  // namespace uneven::testing
