// Small POSIX file helpers for checkpoints: crash-safe file writes and directory publication.
//
// The rule everywhere: a reader (or a restarted run) sees either the old state or the complete
// new state, never a half-written file. Files are written to "<path>.tmp.<pid>" in the same
// directory, fsync'ed, renamed over <path>, and then the directory is fsync'ed so the rename itself
// survives a power loss. A checkpoint directory is filled under a temporary name and renamed into
// place with publish_dir() once every file in it is durable.
//
// All failures throw unipool::Error naming the path, the step that failed, and strerror(errno).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace unipool {

// Writes bytes to path atomically: temp file path + ".tmp.<pid>" in the same directory, write,
// fsync, close, rename over path, fsync the directory. On any failure the temp is removed, the old
// file (if any) is untouched, and Error says which step failed.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Streaming form of write_file_atomic, for files too big to build in memory (a 3 GB checkpoint):
//   AtomicFile f(path); f.write(p, n); ...; f.commit();
// Nothing is visible at path until commit() returns. If commit() is never reached (an exception,
// an early return) the destructor closes and deletes the temp file; the old file is untouched.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);  // creates path + ".tmp.<pid>" (Error on failure)
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t nbytes);  // all of it, retrying short writes
  void commit();                                // fsync, close, rename over path, fsync the dir
  const std::string& temp_path() const { return tmp_; }

 private:
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// A file written by appending (metrics.jsonl), each append() one write(2) call (more only after a
// short write): a line appended whole is in the file at once, not split where a stdio buffer happens
// to fill and left half-written until the next flush. A reader of the live file may still catch the
// end of a line in flight for a moment, so it must skip an unterminated last line. Opened O_APPEND,
// created when missing; Error naming the path on failure.
class AppendFile {
 public:
  explicit AppendFile(const std::string& path);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  void append(const std::string& bytes);

 private:
  std::string path_;
  int fd_ = -1;
};

// The pid in the name of a temp file of write_file_atomic / AtomicFile ("<file>.tmp.<pid>"), or -1
// for any other name (the clean-up after a writer that died, engine/checkpoint.cpp).
int64_t atomic_temp_owner(const std::string& name);

// fsync a file or a directory (Error on failure). For a directory, EINVAL/ENOTSUP from fsync
// (file systems that cannot sync directories) is not an error, as in PostgreSQL's fsync_fname.
void fsync_path(const std::string& path);

// Makes a complete directory visible atomically: rename(tmp_dir, final_dir), then fsync the parent
// directory (both parents when they differ). final_dir must not exist (Error otherwise); where the
// kernel supports it the check is atomic (renameat2 RENAME_NOREPLACE).
void publish_dir(const std::string& tmp_dir, const std::string& final_dir);

// rename(from, to) for any file or directory, never replacing an existing `to` (Error naming both),
// then fsync of both parent directories.
void move_path(const std::string& from, const std::string& to);

// The whole file as bytes. Error "cannot open <path>: <strerror>" / "cannot read <path>: ...".
std::string read_file(const std::string& path);

void make_dirs(const std::string& path);  // mkdir -p; Error on failure (e.g. a file is in the way)
void remove_tree(const std::string& path);  // rm -rf; a missing path is not an error
void remove_tree_quietly(const std::string& path) noexcept;  // the same, errors ignored (cleanup)
bool path_exists(const std::string& path);  // file, directory or anything else (no symlink follow)
// The names in a directory (without . and ..), sorted; empty when it cannot be read.
std::vector<std::string> list_directory(const std::string& path);

// An exclusive lock on a directory, held by this process until the object is destroyed (or the
// process dies: the kernel drops it). It is a flock(2) on DIR/.lock, a file that also records the
// holder's pid. acquire() does not wait: when another process holds the lock it throws Error naming
// the directory, `what` uses it, and the holder's pid. On a file system without flock (some NFS
// mounts) it warns on stderr and returns an inactive lock: the run continues unprotected.
class DirLock {
 public:
  static DirLock acquire(const std::string& dir, const std::string& what);
  DirLock(DirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DirLock& operator=(DirLock&&) = delete;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  ~DirLock();
  bool active() const { return fd_ >= 0; }

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// The directory part of path ("." when path has none). "a/b/c.bin" -> "a/b".
std::string parent_dir(const std::string& path);

}  // namespace unipool
