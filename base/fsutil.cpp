// POSIX file helpers: atomic file writes and directory publication. See fsutil.h.
#include "base/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "base/error.h"

namespace fs = std::filesystem;

namespace unipool {

static std::string errno_str(int err) {
  return std::strerror(err);
}

std::string parent_dir(const std::string& path) {
  std::string p = fs::path(path).parent_path().string();
  return p.empty() ? std::string(".") : p;
}

// ----------------------------------------------------------------------------------------------
// fsync

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("fsync: cannot open " + path + ": " + errno_str(errno));
  struct stat st;
  bool is_dir = ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    if (is_dir && (err == EINVAL || err == ENOTSUP)) return;  // fs cannot sync directories
    throw Error("fsync " + path + " failed: " + errno_str(err));
  }
}

// ----------------------------------------------------------------------------------------------
// AtomicFile

namespace {
const char kTempInfix[] = ".tmp.";  // "<file>.tmp.<pid>"
}  // namespace

int64_t atomic_temp_owner(const std::string& name) {
  const size_t at = name.rfind(kTempInfix);
  if (at == std::string::npos || at == 0) return -1;
  const std::string digits = name.substr(at + sizeof kTempInfix - 1);
  if (digits.empty() || digits.size() > 10) return -1;
  int64_t pid = 0;
  for (char ch : digits) {
    if (ch < '0' || ch > '9') return -1;
    pid = pid * 10 + (ch - '0');
  }
  return pid;
}

AtomicFile::AtomicFile(const std::string& path)
    : path_(path), tmp_(path + kTempInfix + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw Error("cannot create temp file " + tmp_ + " for " + path_ + ": " + errno_str(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());  // best effort; never throws
}

// Writes all n bytes to fd, retrying short and interrupted writes; `what` names the file in errors.
static void write_all(int fd, const void* data, size_t nbytes, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (nbytes > 0) {
    size_t chunk = nbytes < (size_t(1) << 30) ? nbytes : (size_t(1) << 30);
    ssize_t n = ::write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error("write to " + what + " failed: " + errno_str(errno));
    }
    if (n == 0) throw Error("write to " + what + " made no progress");
    p += n;
    nbytes -= size_t(n);
  }
}

void AtomicFile::write(const void* data, size_t nbytes) {
  check(fd_ >= 0, "write to " + tmp_ + " after commit");
  write_all(fd_, data, nbytes, tmp_ + " (for " + path_ + ")");
}

void AtomicFile::commit() {
  check(fd_ >= 0 && !committed_, "commit of " + path_ + " called twice");
  if (::fsync(fd_) != 0)
    throw Error("fsync " + tmp_ + " (for " + path_ + ") failed: " + errno_str(errno));
  int rc = ::close(fd_);
  fd_ = -1;  // closed (or unusable) either way
  if (rc != 0) throw Error("close " + tmp_ + " (for " + path_ + ") failed: " + errno_str(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw Error("rename " + tmp_ + " -> " + path_ + " failed: " + errno_str(errno));
  committed_ = true;  // the temp no longer exists under its name; the destructor must not unlink
  fsync_path(parent_dir(path_));
}

// ----------------------------------------------------------------------------------------------
// AppendFile

AppendFile::AppendFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot open " + path + " for appending: " + errno_str(errno));
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::append(const std::string& bytes) {
  write_all(fd_, bytes.data(), bytes.size(), path_);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicFile f(path);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

// ----------------------------------------------------------------------------------------------
// directories

// rename that fails with EEXIST when dst exists. renameat2(RENAME_NOREPLACE) makes the check
// atomic; where the kernel or file system lacks it we fall back to check-then-rename.
static int rename_noreplace(const char* src, const char* dst) {
#ifdef RENAME_NOREPLACE
  int rc = ::renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE);
  if (rc == 0 || (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)) return rc;
#endif
  struct stat st;
  if (::lstat(dst, &st) == 0) {
    errno = EEXIST;
    return -1;
  }
  return ::rename(src, dst);
}

void move_path(const std::string& from, const std::string& to) {
  if (rename_noreplace(from.c_str(), to.c_str()) != 0) {
    int err = errno;
    if (err == EEXIST || err == ENOTEMPTY)
      throw Error("cannot move " + from + ": " + to + " already exists (not replacing it)");
    throw Error("cannot move " + from + " to " + to + ": " + errno_str(err));
  }
  std::string dst_parent = parent_dir(to), src_parent = parent_dir(from);
  fsync_path(dst_parent);
  std::error_code ec;
  if (!fs::equivalent(dst_parent, src_parent, ec)) fsync_path(src_parent);
}

void publish_dir(const std::string& tmp_dir, const std::string& final_dir) {
  struct stat st;
  if (::lstat(tmp_dir.c_str(), &st) != 0)
    throw Error("publish_dir: " + tmp_dir + ": " + errno_str(errno));
  if (!S_ISDIR(st.st_mode)) throw Error("publish_dir: " + tmp_dir + " is not a directory");
  try {
    move_path(tmp_dir, final_dir);
  } catch (const Error& e) {
    throw Error(std::string("publish_dir: ") + e.what());
  }
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + errno_str(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw Error("cannot read " + path + ": " + errno_str(err));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) throw Error("cannot create directory " + path + ": " + ec.message());
  if (!fs::is_directory(path, ec))
    throw Error("cannot create directory " + path + ": not a directory");
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) throw Error("cannot remove " + path + ": " + ec.message());
}

void remove_tree_quietly(const std::string& path) noexcept {
  std::error_code ec;
  fs::remove_all(path, ec);
}

DirLock DirLock::acquire(const std::string& dir, const std::string& what) {
  const std::string path = dir + "/.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot open the lock file " + path + ": " + errno_str(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      char buf[32] = {0};
      const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
      ::close(fd);
      std::string pid = n > 0 ? std::string(buf, size_t(n)) : std::string("unknown");
      while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
      throw Error(dir + " is in use by another process (pid " + pid + " holds " + path +
                  "): two writers would mix their files; wait for it, or give " + what +
                  " another directory");
    }
    ::close(fd);
    std::fprintf(stderr,
                 "warning: cannot lock %s (%s): a second run on this directory would not be "
                 "detected\n",
                 path.c_str(), errno_str(err).c_str());
    return DirLock(-1);
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != ssize_t(pid.size())) {
    // The lock holds without the pid in the file; only the message of a second run is poorer.
  }
  return DirLock(fd);
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
}

std::vector<std::string> list_directory(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (!dir) return names;
  while (dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace unipool
