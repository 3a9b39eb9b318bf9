#include "apps/console_commands.h"

#include <algorithm>

namespace troupe::console {

const std::vector<CommandSpec>& commands() {
  static const std::vector<CommandSpec> table = {
      {"ps", "ps", "the actor tree: role, device, state, restarts, mailbox depth",
       "Each actor with its supervisor above it. STATE is running (in a step), idle, busy (did not answer within\n"
       "a second), or down (its supervisor is restarting it). RESTARTS counts the restarts of this child.",
       ""},
      {"graph", "graph [--dot]", "the dataflow graph of actors and channels",
       "Nodes are actors with the layers they own; edges are bounded channels (activations forward,\n"
       "gradients back) with their slots. --dot prints Graphviz.",
       "graph"},
      {"metrics", "metrics [ACTOR]", "step time, tokens/s, bubble fraction, memory",
       "Without ACTOR: the job's last step (loss, lr, step time, tokens/s, bubble fraction, checkpoint stall,\n"
       "resident memory) and each stage actor's compute time and memory. With ACTOR: that actor only.",
       "actor"},
      {"logs", "logs [ACTOR] [-n N] [-f]", "the job's log, or one actor's; -f follows it",
       "The last N lines (default 20) about ACTOR (stage1 also matches stage1.replica0). -f keeps printing\n"
       "new lines until Ctrl-C or Enter.",
       "actor"},
      {"trace", "trace start | trace stop FILE", "record a Chrome trace of the steps",
       "start begins a new trace; stop ends it and writes it to FILE on the job's machine (open it in Perfetto\n"
       "or chrome://tracing): forward, backward, idle and all-reduce spans per stage actor.",
       "trace"},
      {"kill", "kill ACTOR", "kill an actor at once; its supervisor restarts it",
       "The actor is sent exit_reason::kill, as if it had crashed. Its supervisor restarts it (for the\n"
       "training gang, one_for_all: every stage), the coordinator restores the latest snapshot and replays\n"
       "the steps since, so the losses are those of a run without the kill.",
       "actor"},
      {"restart", "restart ACTOR", "restart an actor between two steps",
       "Like kill, but at the next step boundary, so no step fails: the supervisor restarts the actor and\n"
       "the coordinator restores the latest snapshot.",
       "actor"},
      {"scale", "scale dp N", "change the number of data-parallel replicas",
       "Between two steps: snapshot, rebuild the graph with N replicas, restore. The global batch and the\n"
       "microbatch size stay the same, so the losses do too (up to the order of the gradient sum).",
       "dp"},
      {"pause", "pause", "stop after the running step", "The job waits between steps until resume.", ""},
      {"resume", "resume", "go on after pause", "", ""},
      {"checkpoint", "checkpoint now", "write a checkpoint to disk now",
       "At the next step boundary: snapshot the stages and write them to checkpoint.dir; waits until the\n"
       "checkpoint is published.",
       "now"},
      {"set", "set KEY VALUE", "change a knob of the running job",
       "Live keys: lr (optimizer.lr: a constant rate from the next step; 'set lr schedule' restores the\n"
       "job's schedule), grad_clip (optimizer.grad_clip), checkpoint.snapshot_every, checkpoint.disk_every.",
       "set"},
      {"generate", "generate PROMPT [--max-tokens N] [--temperature T] [--seed S]",
       "continue PROMPT with the model as it is now",
       "Takes a snapshot of the weights at the next step boundary and samples from it (greedy unless\n"
       "--temperature > 0); training goes on meanwhile. Quote a prompt with spaces: generate \"It is a truth\".",
       ""},
      {"status", "status", "one line: the job's state, step and last loss", "", ""},
      {"help", "help [COMMAND]", "this list, or one command in detail", "", "command"},
      {"quit", "quit", "leave the console (a job started with --console stops)", "Ctrl-D does the same.", ""},
  };
  return table;
}

const CommandSpec* find_command(std::string_view name) {
  for (auto& c : commands())
    if (name == c.name) return &c;
  if (name == "exit") return find_command("quit");
  return nullptr;
}

Expected<std::vector<std::string>> split_words(std::string_view line) {
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  char quote = 0;
  size_t quote_at = 0;
  for (size_t i = 0; i < line.size(); i++) {
    char c = line[i];
    if (c == '\\' && i + 1 < line.size()) {
      word += line[++i];
      in_word = true;
    } else if (quote) {
      if (c == quote) quote = 0;
      else word += c;
    } else if (c == '\'' || c == '"') {
      quote = c, quote_at = i, in_word = true;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      if (in_word) out.push_back(std::move(word)), word.clear(), in_word = false;
    } else {
      word += c, in_word = true;
    }
  }
  if (quote) return make_error(strformat("unterminated %c quote at column %zu", quote, quote_at + 1));
  if (in_word) out.push_back(std::move(word));
  return out;
}

std::vector<std::string> split_script(std::string_view script) {
  std::vector<std::string> out;
  std::string cur;
  char quote = 0;
  auto push = [&] {
    size_t a = cur.find_first_not_of(" \t\r\n"), b = cur.find_last_not_of(" \t\r\n");
    if (a != std::string::npos) out.push_back(cur.substr(a, b - a + 1));
    cur.clear();
  };
  for (size_t i = 0; i < script.size(); i++) {
    char c = script[i];
    if (c == '\\' && i + 1 < script.size()) {
      cur += c, cur += script[++i];
      continue;
    }
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == ';' || c == '\n') {
      push();
      continue;
    }
    cur += c;
  }
  push();
  return out;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment distance, rows of (|b| + 1).
  std::vector<size_t> prev2(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); j++) prev[j] = j;
  for (size_t i = 1; i <= a.size(); i++) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) cur[j] = std::min(cur[j], prev2[j - 2] + 1);
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string nearest_command(std::string_view word) {
  if (word.empty()) return {};
  std::string best;
  size_t best_d = SIZE_MAX;
  for (auto& c : commands()) {
    std::string_view name = c.name;
    if (name.substr(0, word.size()) == word) return c.name;  // a prefix: the first in table order
    size_t d = edit_distance(word, name);
    if (d < best_d) best_d = d, best = c.name;
  }
  // Close enough to be a typo: at most a third of the letters wrong (and at least one).
  size_t limit = std::max<size_t>(1, std::max(word.size(), best.size()) / 3);
  return best_d <= limit ? best : std::string();
}

std::string unknown_command_error(std::string_view word) {
  std::string near = nearest_command(word);
  std::string s = "unknown command '" + std::string(word) + "'";
  if (!near.empty()) s += "; did you mean '" + near + "'?";
  return s + " (help lists all)";
}

std::string help_text(std::string_view name) {
  if (!name.empty()) {
    const CommandSpec* c = find_command(name);
    if (!c) return unknown_command_error(name);
    std::string s = std::string("usage: ") + c->usage + "\n  " + c->summary + "\n";
    if (*c->help) {
      std::string body = c->help;
      size_t at = 0;
      while (at <= body.size()) {
        size_t nl = body.find('\n', at);
        s += "  " + body.substr(at, nl == std::string::npos ? std::string::npos : nl - at) + "\n";
        if (nl == std::string::npos) break;
        at = nl + 1;
      }
    }
    return s;
  }
  std::string s = "commands (help COMMAND for more; Tab completes commands and actor names):\n";
  for (auto& c : commands()) s += strformat("  %-44s %s\n", c.usage, c.summary);
  return s;
}

}  // namespace troupe::console
