#pragma once
// Running a benchmark's peer (PyTorch, transformers, Ray) in the same run: a Python
// script under bench/ that prints one JSON line last. Peers are optional: when Python
// cannot import what the peer needs, or the script fails, the result says "skipped" with
// the reason instead of a number.

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace troupe::app {

std::string shell_quote(const std::string& s);
// Runs a shell command; (exit status, stdout).
std::pair<int, std::string> run_command(const std::string& cmd);
std::string last_line(std::string s);
// bench/NAME: under $TROUPE_SOURCE_DIR, the working directory, or beside the binary
// (build*/bin/troupe -> ../../bench); empty if none.
std::string find_bench_script(const std::string& name);
// Runs `python script args...` when `python -c "import MODULES"` works; its last stdout
// line parsed as JSON with "status": "measured", or {"status": "skipped", "reason"}.
nlohmann::json run_python_peer(const std::string& python, const std::string& modules, const std::string& script_name,
                               const std::vector<std::string>& args, const char* log_prefix);

}  // namespace troupe::app
