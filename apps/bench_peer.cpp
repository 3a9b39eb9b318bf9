#include "apps/bench_peer.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace troupe::app {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::pair<int, std::string> run_command(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, ""};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

std::string last_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  auto nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

std::string find_bench_script(const std::string& name) {
  std::vector<std::string> tries;
  if (const char* src = std::getenv("TROUPE_SOURCE_DIR")) tries.push_back(std::string(src) + "/bench/" + name);
  tries.push_back("bench/" + name);
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    std::string dir(exe, size_t(n));
    for (int up = 0; up < 3 && dir.rfind('/') != std::string::npos; up++) dir = dir.substr(0, dir.rfind('/'));
    tries.push_back(dir + "/bench/" + name);
  }
  for (auto& t : tries)
    if (access(t.c_str(), R_OK) == 0) return t;
  return "";
}

nlohmann::json run_python_peer(const std::string& python, const std::string& modules, const std::string& script_name,
                               const std::vector<std::string>& args, const char* log_prefix) {
  using nlohmann::json;
  std::string check = shell_quote(python);
  check += " -c ";
  check += shell_quote(std::string("import ").append(modules));
  check += " 2>&1";
  auto [rc, out] = run_command(check);
  if (rc != 0) return {{"status", "skipped"}, {"reason", python + " cannot import " + modules + ": " + last_line(out)}};
  std::string script = find_bench_script(script_name);
  if (script.empty())
    return {{"status", "skipped"}, {"reason", "bench/" + script_name + " not found (set TROUPE_SOURCE_DIR)"}};
  std::string cmd = shell_quote(python) + " " + shell_quote(script);
  for (auto& a : args) {
    cmd += ' ';
    cmd += shell_quote(a);
  }
  std::fprintf(stderr, "%s: %s\n", log_prefix, cmd.c_str());
  auto [rc2, out2] = run_command(cmd);
  json j;
  try {
    j = json::parse(last_line(out2));
  } catch (...) {
    return {{"status", "skipped"},
            {"reason", strformat("%s exited with status %d and no JSON (see its stderr above)", script.c_str(), rc2)}};
  }
  if (rc2 != 0 || j.contains("error"))
    return {{"status", "skipped"},
            {"reason", strformat("%s failed (status %d): %s", script.c_str(), rc2,
                                 j.value("error", std::string("no error message")).c_str())}};
  j["status"] = "measured";
  return j;
}

}  // namespace troupe::app
