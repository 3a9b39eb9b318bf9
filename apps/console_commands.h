#pragma once
// The console's command language, shared by the job's console server (which parses and
// runs commands) and `troupe console` (which completes them): the command table with its
// help, a quote-aware word splitter, `;`-separated scripts, and the nearest valid command
// for a typo.

#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace troupe::console {

struct CommandSpec {
  const char* name;
  const char* usage;    // "kill ACTOR"
  const char* summary;  // one line
  const char* help;     // the rest of `help NAME`
  // What the words after the name complete to: "actor", "dp", "now", "trace", "set",
  // "command" (help), or "" (nothing).
  const char* completes;
};

const std::vector<CommandSpec>& commands();
const CommandSpec* find_command(std::string_view name);

// Words of one command line: blanks separate, '...' and "..." group (a backslash escapes
// the next character); an unterminated quote is an error naming its column.
Expected<std::vector<std::string>> split_words(std::string_view line);
// Commands of a script "ps; metrics stage0": split at ';' outside quotes, blanks trimmed,
// empty ones dropped.
std::vector<std::string> split_script(std::string_view script);

// Edit distance (insertions, deletions, substitutions, adjacent swaps).
size_t edit_distance(std::string_view a, std::string_view b);
// The valid command closest to a wrong one (prefix matches first); empty if none is close.
std::string nearest_command(std::string_view word);
// The one-line error for an unknown command: "unknown command 'metrcs'; did you mean 'metrics'? (help lists all)".
std::string unknown_command_error(std::string_view word);

// `help` and `help NAME`.
std::string help_text(std::string_view name = {});

}  // namespace troupe::console
