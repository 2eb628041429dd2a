// bit::Error: the one exception type of the library. Every failure a user can cause (a bad bundle, a corrupt
// image, a tampered file, a missing manifest key) is reported as a bit::Error with a one-line message.
#pragma once

#include <stdexcept>
#include <string>

namespace bit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace bit
