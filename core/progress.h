#pragma once
// Progress lines for long-running commands (step, loss, tokens/s, ETA).

#include <string>

#include "core/error.h"

namespace troupe {

// "4m07s", or "1h02m" past an hour.
inline std::string format_eta(double seconds) {
  int t = seconds > 0 ? int(seconds + 0.5) : 0;
  return t >= 3600 ? strformat("%dh%02dm", t / 3600, t / 60 % 60) : strformat("%dm%02ds", t / 60, t % 60);
}

}  // namespace troupe
