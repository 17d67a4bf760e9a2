// A C face on the system's OpenJPH (Debian's libopenjph-dev) for core_rs: one call
// encodes a native frame to lossless HTJ2K. No decoding: OpenJPH 0.9 aborts the
// process on some damaged codestreams (decision 0035). Nothing C++ crosses the
// boundary: OpenJPH reports errors by throwing (after printing them to the FILE set
// below), and every exception is caught here and becomes a status and a message.
// Built by core_rs/build.rs with cc when pkg-config finds the library.

#include <stdio.h>  // fopencookie (glibc)

#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>

#include <openjph/ojph_arch.h>
#include <openjph/ojph_codestream.h>
#include <openjph/ojph_file.h>
#include <openjph/ojph_mem.h>
#include <openjph/ojph_message.h>
#include <openjph/ojph_params.h>
#include <openjph/ojph_version.h>

namespace {

// OpenJPH prints its messages and then throws std::runtime_error("ojph error").
// Its configure_error() cannot replace that: in 0.9.0 it is an empty function (the
// library's own bug; get_error() always returns the default). What can be set is the
// FILE it prints to: here one that is unbuffered and appends each write to a buffer
// of the writing thread, so a daemon's codec prints nothing and an error's text
// reaches the caller of the call that failed, whatever other threads encode.
thread_local std::string messages;

ssize_t keep(void*, const char* data, size_t size) {
  if (messages.size() < 400) {
    messages.append(data, size < 400 ? size : 400);
  }
  return ssize_t(size);
}

std::once_flag configured;

void configure() {
  std::call_once(configured, [] {
    cookie_io_functions_t io = {nullptr, keep, nullptr, nullptr};
    FILE* sink = fopencookie(nullptr, "w", io);
    if (sink != nullptr && setvbuf(sink, nullptr, _IONBF, 0) == 0) {
      ojph::set_info_stream(sink);
      ojph::set_warning_stream(sink);
      ojph::set_error_stream(sink);
    }
  });
  messages.clear();
}

// The messages OpenJPH wrote during this call (warnings, then the error), on one
// line; else what was thrown.
void report(const char* what, char* error, size_t error_len) {
  std::string text = messages.empty() ? std::string(what) : messages;
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  if (error_len > 0) {
    std::snprintf(error, error_len, "%s", text.c_str());
  }
}

}  // namespace

extern "C" {

typedef void (*pe_ojph_sink)(void* user, const uint8_t* data, size_t len);

}  // extern "C"

namespace {

// OpenJPH's output file that hands each piece of the codestream straight to the
// caller's sink: the codestream is buffered once, on the Rust side, not first in an
// ojph::mem_outfile and then copied.
class SinkFile : public ojph::outfile_base {
 public:
  SinkFile(pe_ojph_sink sink, void* user) : sink_(sink), user_(user) {}
  size_t write(const void* ptr, size_t size) override {
    sink_(user_, static_cast<const uint8_t*>(ptr), size);
    written_ += size;
    return size;
  }
  ojph::si64 tell() override { return ojph::si64(written_); }

 private:
  pe_ojph_sink sink_;
  void* user_;
  size_t written_ = 0;
};

}  // namespace

extern "C" {

// "0.9.0": the library's own version, for the bench and the logs.
const char* pe_ojph_version(void) {
  // Built once (C++11 makes a local static's initialisation thread-safe), then only read.
  static const std::string version = std::to_string(OPENJPH_VERSION_MAJOR) + "." +
                                     std::to_string(OPENJPH_VERSION_MINOR) + "." +
                                     std::to_string(OPENJPH_VERSION_PATCH);
  return version.c_str();
}

// Lossless HTJ2K of `samples` (interleaved, little-endian, `bytes_per_sample` each,
// the bits above `bits_stored` zero) with `levels` wavelet levels; the codestream goes
// to `sink` in pieces, in order. Returns 0, or 1 with a message in `error` (the
// sink may then have had part of a codestream: the caller drops it).
int pe_ojph_encode(const uint8_t* samples, uint32_t width, uint32_t height,
                   uint32_t components, uint32_t bytes_per_sample,
                   uint32_t bits_stored, int is_signed, uint32_t levels,
                   pe_ojph_sink sink, void* user, char* error,
                   size_t error_len) {
  configure();
  try {
    ojph::codestream cs;
    ojph::param_siz siz = cs.access_siz();
    siz.set_image_extent(ojph::point(width, height));
    siz.set_tile_size(ojph::size(width, height));
    siz.set_num_components(components);
    for (uint32_t c = 0; c < components; ++c) {
      siz.set_component(c, ojph::point(1, 1), bits_stored, is_signed != 0);
    }
    ojph::param_cod cod = cs.access_cod();
    cod.set_num_decomposition(levels);
    cod.set_reversible(true);
    cod.set_color_transform(false);
    cs.set_planar(false);
    SinkFile out(sink, user);
    cs.write_headers(&out);
    const int shift = 32 - int(bits_stored);
    const size_t per_row = size_t(width) * components;
    ojph::ui32 next = 0;
    ojph::line_buf* line = cs.exchange(nullptr, next);
    for (uint32_t row = 0; row < height; ++row) {
      for (uint32_t c = 0; c < components; ++c) {
        // Not planar: OpenJPH asks for the components of a row in order.
        if (line == nullptr || next >= components) {
          throw std::runtime_error("OpenJPH asked for a line that is not there");
        }
        const size_t first = size_t(row) * per_row + next;
        ojph::si32* to = line->i32;
        for (uint32_t x = 0; x < width; ++x) {
          const size_t n = first + size_t(x) * components;
          uint32_t low = bytes_per_sample == 1
                             ? samples[n]
                             : uint32_t(samples[2 * n]) |
                                   (uint32_t(samples[2 * n + 1]) << 8);
          // Two's complement from bits_stored when signed.
          to[x] = is_signed ? int32_t(low << shift) >> shift : int32_t(low);
        }
        line = cs.exchange(line, next);
      }
    }
    cs.flush();
    cs.close();
    return 0;
  } catch (const std::exception& e) {
    report(e.what(), error, error_len);
  } catch (...) {
    report("OpenJPH encode failed", error, error_len);
  }
  return 1;
}

}  // extern "C"
