#pragma once
// MappedFile: a whole file mapped into memory, read-only (POSIX mmap). Pages are read from
// disk only where the bytes are touched, so a rank reading its pieces of a large checkpoint
// reads only those. A file that cannot be opened, inspected or mapped is a RuleViolation
// (io_rules::io_error) naming it. Neither copyable nor movable: views point into it.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <span>
#include <string>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/io/detail/io_rules.hpp"

namespace meshplan {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw RuleViolation(io_rules::io_error("open", path));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      throw RuleViolation(io_rules::io_error("stat", path));
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (data_ == MAP_FAILED) {
        ::close(fd);
        throw RuleViolation(io_rules::io_error("map", path));
      }
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_ && data_ != MAP_FAILED) ::munmap(data_, size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const noexcept { return {static_cast<const std::byte*>(data_), size_}; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace meshplan
